//! The sandbox's bpf() gateway on the real kernel: stock aya (no token code) loads, attaches and
//! counts inside `token_userns_demo -- ...` and fails with EPERM under `--no-gateway`; the
//! token reaches threads, survives nothing it should not (exec, a closed or reused descriptor
//! number), callers killed mid-call and handler failures break nothing; uncovered calls are
//! explained, and so are the perf_event_open calls of tracing programs, which no token grants.
//!
//! The programs run in the sandbox are this test binary itself, run again with `--role NAME`
//! (a copy every user can read, since the sandbox's host uid may not reach `target/`): the
//! stock-aya roles call the `stock-aya` crate, which uses aya 0.14 from crates.io only; the
//! other roles make raw `bpf()` calls, as a token-unaware loader does.

mod support;

use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd};
use std::process::{Command, ExitCode};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::{DEMO, Run, TRACE, run_command_clean, shared};

const ROLE: &str = "--role";

/// What the sandboxed runs need, readable by any user: this binary, the objects, token_trace.
struct Programs {
    files: support::ProgramDir,
    this: String,
    counter: String,
    tracing: String,
    trace: String,
}

static PROGRAMS: OnceLock<Programs> = OnceLock::new();

/// The raw tracepoint object demo-ebpf also builds (never embedded in the tools).
static TRACING_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/demo-tracing"));

impl Programs {
    fn get() -> &'static Self {
        PROGRAMS.get_or_init(|| {
            let files = support::ProgramDir::new("gateway-test");
            let put = |name: &str, bytes: &[u8], mode: u32| files.put(name, bytes, mode);
            Self {
                this: files.put_this("gateway-roles"),
                counter: put(
                    "counter.o",
                    bpf_token_launcher::counter::COUNTER_OBJECT,
                    0o644,
                ),
                tracing: put("tracing.o", TRACING_OBJECT, 0o644),
                trace: put("token_trace", &std::fs::read(TRACE).unwrap(), 0o755),
                files,
            }
        })
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(ROLE) {
        return roles::run(&args[2..]);
    }
    let tests: &[(&str, fn())] = &[
        (
            "stock_aya_counts_a_datagram_through_the_gateway_and_gets_eperm_without_it",
            stock_aya_counts_a_datagram_through_the_gateway_and_gets_eperm_without_it,
        ),
        (
            "stock_aya_loads_and_attaches_a_raw_tracepoint_with_cap_add_perfmon",
            stock_aya_loads_and_attaches_a_raw_tracepoint_with_cap_add_perfmon,
        ),
        (
            "threads_of_one_process_share_one_injected_token",
            threads_of_one_process_share_one_injected_token,
        ),
        (
            "exec_drops_the_token_and_the_next_call_gets_it_again",
            exec_drops_the_token_and_the_next_call_gets_it_again,
        ),
        (
            "a_closed_or_reused_descriptor_number_gets_the_token_again",
            a_closed_or_reused_descriptor_number_gets_the_token_again,
        ),
        (
            "a_caller_killed_while_the_gateway_is_stopped_breaks_nothing",
            a_caller_killed_while_the_gateway_is_stopped_breaks_nothing,
        ),
        (
            "a_caller_killed_after_the_gateway_received_its_call_is_skipped",
            a_caller_killed_after_the_gateway_received_its_call_is_skipped,
        ),
        (
            "handler_failures_let_the_call_run_untouched",
            handler_failures_let_the_call_run_untouched,
        ),
        (
            "an_uncovered_call_is_explained_when_the_command_fails",
            an_uncovered_call_is_explained_when_the_command_fails,
        ),
        (
            "an_attr_too_short_for_a_token_is_explained",
            an_attr_too_short_for_a_token_is_explained,
        ),
        (
            "without_a_listener_the_command_runs_with_a_warning",
            without_a_listener_the_command_runs_with_a_warning,
        ),
        (
            "calls_carrying_their_own_token_pass_untouched_and_no_call_costs_nothing",
            calls_carrying_their_own_token_pass_untouched_and_no_call_costs_nothing,
        ),
        (
            "a_tracepoint_or_uprobe_perf_event_is_explained_and_left_to_the_kernel",
            a_tracepoint_or_uprobe_perf_event_is_explained_and_left_to_the_kernel,
        ),
    ];
    support::run_trials(tests, || {
        if let Some(programs) = PROGRAMS.get() {
            programs.files.remove();
        }
    })
}

/// `token_userns_demo OPTIONS -- <this binary> --role ROLE ARGS`, checked to leave nothing
/// behind.
fn sandboxed(options: &[&str], role: &[&str]) -> Run {
    let programs = Programs::get();
    let mut command = Command::new(DEMO);
    command
        .args(options)
        .arg("--")
        .arg(&programs.this)
        .arg(ROLE)
        .args(role);
    run_command_clean(&mut command)
}

/// The default policy plus what aya 0.14's own feature probes need without CAP_PERFMON: a
/// socket filter loaded without an expected attach type (checked as cgroup_inet_ingress; aya's
/// global-data probe), and cpumap and devmap maps (its probes for program ids in them).
const AYA_POLICY: &[&str] = &[
    "--delegate-cmds",
    "map_create:prog_load:btf_load",
    "--delegate-maps",
    "array:cpumap:devmap",
    "--delegate-progs",
    "xdp:socket_filter",
    "--delegate-attachs",
    "xdp:cgroup_inet_ingress",
];

fn uncovered_lines(trace: &str) -> Vec<&str> {
    trace
        .lines()
        .filter(|line| line.contains("was not covered by the delegation"))
        .collect()
}

fn stock_aya_counts_a_datagram_through_the_gateway_and_gets_eperm_without_it() {
    let _host = shared();
    let counter = &Programs::get().counter;
    let options = [AYA_POLICY, &["-v"]].concat();
    let run = sandboxed(&options, &["stock-aya-xdp", counter]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout.contains("packets counted: 1"),
        "stock aya must count exactly the one datagram\n{run:#?}"
    );
    // One process, one copy of the token; every later call finds it with kcmp.
    assert_eq!(
        run.stderr.matches("token added as its fd").count(),
        1,
        "{run:#?}"
    );
    assert!(run.stderr.contains("token already its fd"), "{run:#?}");
    assert!(!run.stderr.contains("passed on untouched"), "{run:#?}");
    // aya's probes ask for more than AYA_POLICY only for the program types that need
    // CAP_PERFMON (tracepoint for program names and perf links, kprobe for
    // bpf_probe_read_kernel and cookies); it then switches those features off.
    for line in uncovered_lines(&run.stderr) {
        assert!(
            line.contains("program type tracepoint") || line.contains("program type kprobe"),
            "an uncovered call beyond aya's CAP_PERFMON probes: {line}\n{run:#?}"
        );
    }
    // The command succeeded: no explanation is printed at the end.
    assert!(!run.stderr.contains("token_userns_demo: bpf("), "{run:#?}");

    let without = sandboxed(
        &[AYA_POLICY, &["--no-gateway"]].concat(),
        &["stock-aya-xdp", counter],
    );
    assert_eq!(without.code, Some(1), "{without:#?}");
    assert!(
        without.stderr.contains("Operation not permitted"),
        "stock aya without the gateway must fail with EPERM\n{without:#?}"
    );
}

fn stock_aya_loads_and_attaches_a_raw_tracepoint_with_cap_add_perfmon() {
    let _host = shared();
    let programs = Programs::get();
    let policy = [
        "--delegate-cmds",
        "map_create:prog_load:btf_load",
        "--delegate-maps",
        "array",
        "--delegate-progs",
        "raw_tracepoint",
        // aya loads raw tracepoints without an expected attach type.
        "--delegate-attachs",
        "cgroup_inet_ingress",
        "--cap-add",
        "perfmon",
    ];
    let run = sandboxed(
        &policy,
        &["stock-aya-raw-tp", &programs.tracing, "/bin/true"],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    let counted: u64 = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("execs counted: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count\n{run:#?}"));
    assert!(counted >= 1, "the exec of /bin/true was not seen\n{run:#?}");

    let without = sandboxed(
        &[&policy[..], &["--no-gateway"]].concat(),
        &["stock-aya-raw-tp", &programs.tracing, "/bin/true"],
    );
    assert_eq!(without.code, Some(1), "{without:#?}");
    assert!(
        without.stderr.contains("Operation not permitted"),
        "{without:#?}"
    );
}

fn threads_of_one_process_share_one_injected_token() {
    let _host = shared();
    let run = sandboxed(&["-v"], &["threads", "8"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout
            .contains("8 threads created maps; token descriptors: 1"),
        "{run:#?}"
    );
    assert_eq!(
        run.stderr.matches("token added as its fd").count(),
        1,
        "one injection per descriptor table\n{run:#?}"
    );
    assert_eq!(
        run.stderr.matches("token already its fd").count(),
        7,
        "{run:#?}"
    );
}

fn exec_drops_the_token_and_the_next_call_gets_it_again() {
    let _host = shared();
    let run = sandboxed(&["-v"], &["exec-1"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout.contains("before exec: 1 token")
            && run.stdout.contains("after exec, before the call: 0 tokens")
            && run.stdout.contains("after exec and the call: 1 token"),
        "{run:#?}"
    );
    assert_eq!(
        run.stderr.matches("token added as its fd").count(),
        2,
        "exec closes the token (close-on-exec): it is given again\n{run:#?}"
    );
}

fn a_closed_or_reused_descriptor_number_gets_the_token_again() {
    let _host = shared();
    let run = sandboxed(&["-v"], &["reuse"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout.contains("reused number kept /dev/null"),
        "{run:#?}"
    );
    assert!(run.stdout.contains("closed token replaced"), "{run:#?}");
    assert_eq!(
        run.stderr.matches("token added as its fd").count(),
        3,
        "first call, after the number was reused, after the token was closed\n{run:#?}"
    );
}

fn a_caller_killed_while_the_gateway_is_stopped_breaks_nothing() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use std::process::Stdio;
    let _host = shared();
    let programs = Programs::get();
    let mut supervisor = Command::new(DEMO)
        .args(["--", &programs.this, ROLE, "killable"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the supervisor");
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        let mut pipe = pipe.expect("piped");
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(supervisor.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(supervisor.stderr.take().map(|p| Box::new(p) as _));
    let supervisor_pid = supervisor.id() as i32;
    // supervisor → sandbox init → role (pid 2) → the role's looping child.
    let found = wait_for(Duration::from_secs(5), || {
        let all = support::descendants(supervisor_pid);
        let init = *all
            .iter()
            .find(|p| parent_of(**p) == Some(supervisor_pid))?;
        let role = *all.iter().find(|p| parent_of(**p) == Some(init))?;
        let looping = *all.iter().find(|p| parent_of(**p) == Some(role))?;
        Some((init, looping))
    });
    let (init, looping) = found.expect("the sandbox's init and the role's looping child");
    // Let the child loop on notified calls, then stop the gateway so that one of them waits
    // (received or not), and kill that caller.
    std::thread::sleep(Duration::from_millis(100));
    kill(Pid::from_raw(init), Signal::SIGSTOP).expect("stop the sandbox's init");
    std::thread::sleep(Duration::from_millis(100));
    kill(Pid::from_raw(looping), Signal::SIGKILL).expect("kill the waiting caller");
    assert!(support::wait_gone(looping, Duration::from_secs(2)));
    kill(Pid::from_raw(init), Signal::SIGCONT).expect("continue the sandbox's init");
    let status = wait_with_timeout(&mut supervisor, Duration::from_secs(10));
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();
    assert_eq!(status, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("after the kill: map created"),
        "{stdout}\n{stderr}"
    );
}

fn a_caller_killed_after_the_gateway_received_its_call_is_skipped() {
    let _host = shared();
    // The role is its own gateway (the library's), for a child it kills after receiving the
    // child's call: the sandbox's own gateway would be a second listener, so it is off.
    let run = sandboxed(&["--no-gateway"], &["own-gateway"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("killed caller: CallerGone"), "{run:#?}");
    assert!(
        run.stdout.contains("live caller: Patched { fd: RemoteFd(")
            && run.stdout.contains("injected: true }, map created"),
        "{run:#?}"
    );
}

fn handler_failures_let_the_call_run_untouched() {
    let _host = shared();
    let run = sandboxed(&["-v"], &["bad-attrs"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    // Unreadable attr: the kernel's own copy fails; read-only attr: the call runs without the
    // token and fails the host's check. Never ENOSYS (a gateway that gave up), never a hang.
    assert!(run.stdout.contains("unreadable attr: EFAULT"), "{run:#?}");
    assert!(run.stdout.contains("read-only attr: EPERM"), "{run:#?}");
    assert!(
        run.stderr.contains(
            "writing the token into the caller's bpf_attr: process_vm_writev failed: EFAULT"
        ),
        "{run:#?}"
    );
}

fn an_uncovered_call_is_explained_when_the_command_fails() {
    let _host = shared();
    // libbpf's first probe: a trivial socket filter, without an expected attach type; the
    // default policy (the counter's) has neither.
    let programs = Programs::get();
    let (run, events) = support::run_with_status_fd(&[
        "--json-status",
        "3",
        "--",
        &programs.this,
        ROLE,
        "socket-filter-probe",
    ]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("was not covered by the delegation"))
        .unwrap_or_else(|| panic!("no explanation\n{run:#?}"));
    assert!(
        line.starts_with("token_userns_demo: bpf(BPF_PROG_LOAD) for program type socket_filter, expected attach type cgroup_inet_ingress, by pid 2 (gateway-roles)")
            && line.ends_with("add socket_filter to --delegate-progs and cgroup_inet_ingress to --delegate-attachs"),
        "{line}"
    );
    assert!(
        run.stderr.contains(
            "a delegation covering every call above: --delegate-progs socket_filter:xdp --delegate-attachs cgroup_inet_ingress:xdp"
        ),
        "{run:#?}"
    );
    let gateway: serde_json::Value = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .find(|e| e["event"] == "gateway")
        .unwrap_or_else(|| panic!("no gateway event in {events}"));
    let uncovered = &gateway["uncovered_calls"][0];
    assert_eq!(uncovered["prog_type"], "socket_filter", "{gateway}");
    assert_eq!(uncovered["missing"]["delegate_progs"][0], "socket_filter");
    assert_eq!(
        uncovered["missing"]["delegate_attachs"][0],
        "cgroup_inet_ingress"
    );
    assert_eq!(uncovered["pid"], 2);
    let order: Vec<_> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|e| e["event"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(order, ["sandbox-ready", "gateway", "exited"], "{events}");

    // -v says it as it happens, before the command's own error.
    let traced = sandboxed(&["-v"], &["socket-filter-probe"]);
    let said = traced
        .stderr
        .find("gateway: bpf(BPF_PROG_LOAD) for program type socket_filter")
        .unwrap_or_else(|| panic!("{traced:#?}"));
    let failed = traced.stderr.find("probe failed: EPERM").unwrap();
    assert!(said < failed, "{traced:#?}");

    // The same calls, covered: the role passes and nothing is explained.
    let covered = sandboxed(
        &[
            "--delegate-progs",
            "socket_filter:xdp",
            "--delegate-attachs",
            "cgroup_inet_ingress:xdp",
        ],
        &["socket-filter-probe"],
    );
    assert_eq!(covered.code, Some(0), "{covered:#?}");
    assert!(!covered.stderr.contains("not covered"), "{covered:#?}");
}

fn an_attr_too_short_for_a_token_is_explained() {
    let _host = shared();
    // libbpf 1.1 (Debian's bpftool 7.1) passes 72 bytes for MAP_CREATE.
    let run = sandboxed(&[], &["short-attr"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stdout.contains("short map_create: EPERM"), "{run:#?}");
    assert!(
        run.stderr.contains(
            "token_userns_demo: bpf(BPF_MAP_CREATE) for map type array, by pid 2 (gateway-roles), passed a bpf_attr of 72 bytes, too short to carry a token (80 needed)"
        ) && run.stderr.contains("libbpf >= 1.4, bpftool >= 7.4"),
        "{run:#?}"
    );
}

fn calls_carrying_their_own_token_pass_untouched_and_no_call_costs_nothing() {
    let _host = shared();
    let trace = &Programs::get().trace;
    let run = sandboxed_program(&["-v"], &[trace]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(run.field("delta").as_deref(), Some("1"), "{run:#?}");
    assert_eq!(
        run.stderr
            .matches("carries its own token: untouched")
            .count(),
        3,
        "token_trace's BTF, map and program loads\n{run:#?}"
    );
    assert!(!run.stderr.contains("token added"), "{run:#?}");
    let idle = sandboxed_program(&["-v"], &["/bin/true"]);
    assert_eq!(idle.code, Some(0), "{idle:#?}");
    assert!(
        idle.stderr.contains("gateway: no bpf() call to handle"),
        "{idle:#?}"
    );
}

fn without_a_listener_the_command_runs_with_a_warning() {
    let _host = shared();
    // seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER | WAIT_KILLABLE_RECV, ...) refused as a
    // kernel before 5.19 (EINVAL) or a process already under a runtime's listener (EBUSY) does.
    let flags: u64 =
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    for (errno, says) in [
        (
            libc::EINVAL,
            "does not know SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19)",
        ),
        (
            libc::EBUSY,
            "a seccomp filter with a listener already confines the supervisor",
        ),
    ] {
        let mut command = Command::new(DEMO);
        command.args(["--", "sh", "-c", "exit 3"]);
        support::inject_syscall_result(&mut command, libc::SYS_seccomp, Some((1, flags)), errno);
        let run = run_command_clean(&mut command);
        assert_eq!(run.code, Some(3), "{run:#?}");
        assert!(
            run.stderr
                .contains("token_userns_demo: warning: the bpf() gateway cannot start")
                && run.stderr.contains(says)
                && run.stderr.contains("the command runs without it"),
            "{run:#?}"
        );
        // Asked for no gateway, nothing is tried or said.
        let mut quiet = Command::new(DEMO);
        quiet.args(["--no-gateway", "--", "sh", "-c", "exit 3"]);
        support::inject_syscall_result(&mut quiet, libc::SYS_seccomp, Some((1, flags)), errno);
        let run = run_command_clean(&mut quiet);
        assert_eq!(run.code, Some(3), "{run:#?}");
        assert!(!run.stderr.contains("gateway"), "{run:#?}");
    }
}

/// The id of a tracepoint, read on the host: tracefs is not mounted here and root-only where it
/// is, so it is mounted in a mount namespace of its own that ends with the read.
fn tracepoint_id(event: &str) -> String {
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tracefs nodev /sys/kernel/tracing && cat /sys/kernel/tracing/events/{event}/id"
        ))
        .output()
        .expect("run unshare");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success() && id.parse::<u64>().is_ok(),
        "tracepoint id of {event}: {out:?}"
    );
    id
}

fn a_tracepoint_or_uprobe_perf_event_is_explained_and_left_to_the_kernel() {
    let _host = shared();
    let id = tracepoint_id("syscalls/sys_enter_getpid");
    let uprobe = std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/type")
        .expect("this kernel's uprobe PMU");
    let role = ["perf-events", &id, uprobe.trim()];
    let programs = Programs::get();
    let mut args = vec!["--json-status", "3", "--", &programs.this, ROLE];
    args.extend(role);
    let (run, events) = support::run_with_status_fd(&args);
    // The kernel refuses both probe events (CAP_PERFMON in the host's user namespace) and
    // allows counting the caller's own user-space time (perf_event_paranoid 2).
    let results = "software: ok\ntracepoint: EACCES\nuprobe: EACCES\n";
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert_eq!(run.stdout, results, "{run:#?}");
    let explained: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("perf_event_open of a"))
        .collect();
    assert_eq!(
        explained.len(),
        2,
        "one line per kind, none for software\n{run:#?}"
    );
    assert!(
        explained[0].starts_with(
            "token_userns_demo: perf_event_open of a tracepoint event, by pid 2 (gateway-roles): a BPF token never grants this: the kernel checks CAP_PERFMON in the host's user namespace"
        ) && explained[0].contains("perf_event_paranoid=")
            && explained[0].contains("raw_tracepoint or tp_btf"),
        "{}",
        explained[0]
    );
    assert!(
        explained[1].starts_with("token_userns_demo: perf_event_open of a uprobe event, by pid 2 (gateway-roles): a BPF token never grants this")
            && explained[1].contains("uprobe.multi"),
        "{}",
        explained[1]
    );
    assert!(!run.stderr.contains("not covered"), "{run:#?}");
    let gateway: serde_json::Value = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .find(|e| e["event"] == "gateway")
        .unwrap_or_else(|| panic!("no gateway event in {events}"));
    assert_eq!(gateway["perf_event_open"], 3, "{gateway}");
    assert_eq!(gateway["notified"], 0, "{gateway}");
    assert_eq!(gateway["never_granted"][0]["perf_event"], "tracepoint");
    assert_eq!(gateway["never_granted"][1]["perf_event"], "uprobe");
    assert_eq!(gateway["never_granted"][0]["pid"], 2);

    // The gateway changes no result: the same without it, and nothing is explained.
    let without = sandboxed(&["--no-gateway"], &role);
    assert_eq!(without.code, Some(1), "{without:#?}");
    assert_eq!(without.stdout, results, "{without:#?}");
    assert!(
        !without.stderr.contains("perf_event_open of a"),
        "{without:#?}"
    );

    // -v says it as it happens, before the command reports its result.
    let traced = sandboxed(&["-v"], &role);
    assert_eq!(traced.stdout, results, "{traced:#?}");
    let said = traced
        .stderr
        .find("gateway: perf_event_open of a tracepoint event, by pid 2 (gateway-roles)")
        .unwrap_or_else(|| panic!("{traced:#?}"));
    let failed = traced.stderr.find("role [").unwrap();
    assert!(said < failed, "{traced:#?}");
    assert!(
        traced.stderr.contains(
            "perf_event_open: no tracepoint, kprobe or uprobe event: passed on untouched"
        ),
        "{traced:#?}"
    );
}

fn sandboxed_program(options: &[&str], command: &[&str]) -> Run {
    let mut run = Command::new(DEMO);
    run.args(options).arg("--").args(command);
    run_command_clean(&mut run)
}

fn parent_of(pid: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

fn wait_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_with_timeout(child: &mut std::process::Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the supervisor") {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the supervisor did not exit within {timeout:?}: a caller or the gateway hangs");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The programs the tests run in the sandbox. Each prints what the test checks and exits 0
/// when every step went as a token-unaware loader expects.
mod roles {
    use super::*;
    use std::io::Write as _;

    use nix::errno::Errno;

    pub fn run(args: &[String]) -> ExitCode {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = match args[..] {
            ["stock-aya-xdp", object] => std::fs::read(object)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| stock_aya::count_one_datagram(&bytes, "lo"))
                .map(|n| println!("packets counted: {n}")),
            ["stock-aya-raw-tp", object, program] => std::fs::read(object)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| stock_aya::count_execs(&bytes, program))
                .map(|n| println!("execs counted: {n}")),
            ["threads", n] => threads(n.parse().expect("a thread count")),
            ["exec-1"] => exec_first(),
            ["exec-2", number] => exec_second(number.parse().expect("a descriptor number")),
            ["reuse"] => reuse(),
            ["killable"] => killable(),
            ["own-gateway"] => own_gateway(),
            ["bad-attrs"] => bad_attrs(),
            ["socket-filter-probe"] => socket_filter_probe(),
            ["short-attr"] => short_attr(),
            ["perf-events", tracepoint, uprobe] => perf_events(
                tracepoint.parse().expect("a tracepoint id"),
                uprobe.parse().expect("a PMU type"),
            ),
            _ => Err(anyhow::anyhow!("unknown role {args:?}")),
        };
        let _ = std::io::stdout().flush();
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("role {args:?}: {error:#}");
                ExitCode::FAILURE
            }
        }
    }

    /// aya 0.14's attr size, which reaches every token field.
    const AYA_ATTR_SIZE: usize = 152;

    fn bpf(cmd: u32, attr: &mut [u8]) -> Result<OwnedFd, Errno> {
        bpf_at(cmd, attr.as_mut_ptr(), attr.len())
    }

    fn bpf_at(cmd: u32, attr: *mut u8, size: usize) -> Result<OwnedFd, Errno> {
        // SAFETY: the kernel reads at most `size` bytes at `attr` (or fails with EFAULT).
        let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size) };
        if ret < 0 {
            Err(Errno::last())
        } else {
            // SAFETY: a new descriptor from the kernel, owned by nobody else.
            Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
        }
    }

    /// An array map of one u64, as a token-unaware loader asks for it.
    fn array_attr() -> [u8; AYA_ATTR_SIZE] {
        let mut attr = [0u8; AYA_ATTR_SIZE];
        for (offset, value) in [(0usize, 2u32), (4, 4), (8, 8), (12, 1)] {
            attr[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
        }
        attr
    }

    fn map_create() -> Result<OwnedFd, Errno> {
        bpf(0, &mut array_attr())
    }

    /// Makes `number` another descriptor of `file` (closing what it was), as any open that
    /// reuses a free number would.
    fn dup2(file: &std::fs::File, number: i32) -> Result<(), Errno> {
        // SAFETY: plain descriptor numbers; the old one is ours to close.
        Errno::result(unsafe { libc::dup2(file.as_fd().as_raw_fd(), number) }).map(drop)
    }

    /// The caller's descriptors that are BPF tokens (their fdinfo lists what they allow).
    fn token_fds() -> Vec<i32> {
        std::fs::read_dir("/proc/self/fdinfo")
            .expect("list /proc/self/fdinfo")
            .flatten()
            .filter(|entry| {
                std::fs::read_to_string(entry.path())
                    .is_ok_and(|info| info.contains("allowed_cmds:"))
            })
            .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
            .collect()
    }

    fn threads(count: usize) -> anyhow::Result<()> {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(count));
        let handles: Vec<_> = (0..count)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    map_create()
                })
            })
            .collect();
        let mut maps = Vec::new();
        for handle in handles {
            maps.push(handle.join().expect("thread")?);
        }
        println!(
            "{} threads created maps; token descriptors: {}",
            maps.len(),
            token_fds().len()
        );
        Ok(())
    }

    fn exec_first() -> anyhow::Result<()> {
        let _map = map_create()?;
        let tokens = token_fds();
        println!("before exec: {} token", tokens.len());
        anyhow::ensure!(tokens.len() == 1, "tokens: {tokens:?}");
        std::io::stdout().flush()?;
        let error = std::os::unix::process::CommandExt::exec(
            Command::new(std::env::current_exe()?).args([ROLE, "exec-2", &tokens[0].to_string()]),
        );
        Err(error.into())
    }

    fn exec_second(number: i32) -> anyhow::Result<()> {
        println!("after exec, before the call: {} tokens", token_fds().len());
        // The old number now names another file, as it would after any open.
        let null = std::fs::File::open("/dev/null")?;
        dup2(&null, number)?;
        let _map = map_create()?;
        let tokens = token_fds();
        println!("after exec and the call: {} token", tokens.len());
        anyhow::ensure!(
            tokens.len() == 1 && tokens[0] != number,
            "tokens: {tokens:?}"
        );
        Ok(())
    }

    fn reuse() -> anyhow::Result<()> {
        let _first = map_create()?;
        let tokens = token_fds();
        anyhow::ensure!(tokens.len() == 1, "tokens: {tokens:?}");
        let number = tokens[0];
        // Close the token and give its number to another file.
        let null = std::fs::File::open("/dev/null")?;
        dup2(&null, number)?;
        let _second = map_create()?;
        let link = std::fs::read_link(format!("/proc/self/fd/{number}"))?;
        anyhow::ensure!(
            link.to_string_lossy() == "/dev/null",
            "fd {number} is {link:?}"
        );
        println!("reused number kept /dev/null");
        let tokens = token_fds();
        anyhow::ensure!(
            tokens.len() == 1 && tokens[0] != number,
            "tokens: {tokens:?}"
        );
        // Close the token, leave its number free.
        // SAFETY: the token descriptor the gateway gave us, used by nothing else.
        anyhow::ensure!(unsafe { libc::close(tokens[0]) } == 0, "close");
        let _third = map_create()?;
        anyhow::ensure!(token_fds().len() == 1, "tokens: {:?}", token_fds());
        println!("closed token replaced");
        Ok(())
    }

    fn killable() -> anyhow::Result<()> {
        // SAFETY: single-threaded; the child only loops on raw system calls.
        match unsafe { nix::unistd::fork() }? {
            nix::unistd::ForkResult::Child => loop {
                drop(map_create());
            },
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None)?;
                anyhow::ensure!(
                    matches!(
                        status,
                        nix::sys::wait::WaitStatus::Signaled(
                            _,
                            nix::sys::signal::Signal::SIGKILL,
                            _
                        )
                    ),
                    "{status:?}"
                );
                let _map = map_create()?;
                println!("after the kill: map created");
                Ok(())
            }
        }
    }

    /// The library's gateway, served by this process for a child of its own: one child is
    /// killed after its call was received, the next one is served.
    fn own_gateway() -> anyhow::Result<()> {
        use bpf_token_launcher::policy::risk::CapsKept;
        use bpf_token_launcher::sandbox::gateway::Gateway;
        use bpf_token_launcher::sys::seccomp;
        use nix::sys::wait::{WaitStatus, waitpid};

        for kill_it in [true, false] {
            let token = bpf_token_launcher::bpf::token::Token::from_bpffs_path(
                std::path::Path::new("/sys/fs/bpf"),
            )?;
            let (child, listener) = child_under_its_own_filter()?;
            let mut gateway = Gateway::new(token, listener, CapsKept::DROPPED)?;
            let mut fds = [nix::poll::PollFd::new(
                gateway.listener(),
                nix::poll::PollFlags::POLLIN,
            )];
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16))?;
            let notification = seccomp::receive(gateway.listener())?;
            if kill_it {
                nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL)?;
                waitpid(child, None)?;
                let outcome = gateway.handle(&notification, Instant::now());
                println!("killed caller: {outcome:?}");
            } else {
                let outcome = gateway.handle(&notification, Instant::now());
                let status = waitpid(child, None)?;
                anyhow::ensure!(
                    status == WaitStatus::Exited(child, 0),
                    "the live caller's map: {status:?} after {outcome:?}"
                );
                println!("live caller: {outcome:?}, map created");
            }
        }
        Ok(())
    }

    /// A child that installs the command filter with a listener, sends the listener here and
    /// then makes one notified call (exit status 0 when its map was created).
    fn child_under_its_own_filter() -> anyhow::Result<(nix::unistd::Pid, OwnedFd)> {
        use bpf_token_launcher::sys::seccomp;
        use nix::sys::socket::{
            AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
            recvmsg, sendmsg, socketpair,
        };
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let filter = bpf_token_launcher::sandbox::confine::command_filter(true);
        // SAFETY: single-threaded; the child makes system calls on memory prepared before.
        match unsafe { nix::unistd::fork() }? {
            nix::unistd::ForkResult::Child => {
                let code = (|| -> Result<i32, Errno> {
                    seccomp::set_no_new_privs().map_err(|e| e.errno)?;
                    let listener =
                        seccomp::install_filter_with_listener(&filter).map_err(|e| e.errno)?;
                    let fds = [listener.as_raw_fd()];
                    sendmsg::<()>(
                        theirs.as_raw_fd(),
                        &[std::io::IoSlice::new(b"L")],
                        &[ControlMessage::ScmRights(&fds)],
                        MsgFlags::empty(),
                        None,
                    )?;
                    drop(listener);
                    Ok(i32::from(map_create().is_err()))
                })()
                .unwrap_or(2);
                // SAFETY: leaves the forked child without running the parent's code.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(theirs);
                let mut byte = [0u8; 1];
                let mut iov = [std::io::IoSliceMut::new(&mut byte)];
                let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
                let message = recvmsg::<()>(
                    ours.as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                )?;
                let listener = message
                    .cmsgs()?
                    .find_map(|c| match c {
                        ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                        _ => None,
                    })
                    .ok_or_else(|| anyhow::anyhow!("no listener from the child"))?;
                // SAFETY: received just now, owned by nobody else.
                Ok((child, unsafe { OwnedFd::from_raw_fd(listener) }))
            }
        }
    }

    fn bad_attrs() -> anyhow::Result<()> {
        // An address the caller cannot read: the gateway's read fails, the kernel's copy too.
        let unreadable = bpf_at(0, 0x10 as *mut u8, AYA_ATTR_SIZE);
        println!(
            "unreadable attr: {}",
            unreadable
                .err()
                .map_or("created".to_owned(), |e| format!("{e:?}"))
        );
        // A valid attr on a read-only page: the gateway cannot write the token into it.
        // SAFETY: a fresh anonymous mapping, written before it is made read-only.
        let page = unsafe {
            let page = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            anyhow::ensure!(page != libc::MAP_FAILED, "mmap");
            std::ptr::copy_nonoverlapping(array_attr().as_ptr(), page.cast(), AYA_ATTR_SIZE);
            anyhow::ensure!(libc::mprotect(page, 4096, libc::PROT_READ) == 0, "mprotect");
            page
        };
        let read_only = bpf_at(0, page.cast(), AYA_ATTR_SIZE);
        println!(
            "read-only attr: {}",
            read_only
                .err()
                .map_or("created".to_owned(), |e| format!("{e:?}"))
        );
        Ok(())
    }

    /// libbpf's probe: `r0 = 0; exit` as a socket filter, expected attach type 0, 148 bytes.
    fn socket_filter_probe() -> anyhow::Result<()> {
        let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
        let license = c"GPL";
        let mut attr = [0u8; 148];
        attr[0..4].copy_from_slice(&1u32.to_le_bytes()); // socket_filter
        attr[4..8].copy_from_slice(&2u32.to_le_bytes());
        attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_le_bytes());
        attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_le_bytes());
        match bpf(5, &mut attr) {
            Ok(_) => {
                println!("probe loaded");
                Ok(())
            }
            Err(errno) => {
                eprintln!("probe failed: {errno:?}");
                anyhow::bail!("probe failed: {errno:?}")
            }
        }
    }

    fn short_attr() -> anyhow::Result<()> {
        let mut attr = array_attr();
        let result = bpf(0, &mut attr[..72]);
        println!(
            "short map_create: {}",
            result
                .err()
                .map_or("created".to_owned(), |e| format!("{e:?}"))
        );
        anyhow::bail!("the short call could not use the token")
    }

    /// `perf_event_open(attr, 0, -1, -1, PERF_FLAG_FD_CLOEXEC)` on the caller itself, with a
    /// version-1 attr (72 bytes): `perf_type`, `config`, the flag bits (at 40), `config1` and
    /// `config2` (at 56 and 64).
    fn perf_event_open(perf_type: u32, config: u64, flags: u64, extra: [u64; 2]) -> String {
        let mut attr = [0u64; 9];
        attr[0] = u64::from(perf_type) | 72 << 32;
        attr[1] = config;
        attr[5] = flags;
        attr[7] = extra[0];
        attr[8] = extra[1];
        // SAFETY: the kernel reads the 72-byte attr (or fails with EFAULT).
        let ret = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                attr.as_ptr(),
                0,
                -1,
                -1,
                8, // PERF_FLAG_FD_CLOEXEC
            )
        };
        if ret < 0 {
            format!("{:?}", Errno::last())
        } else {
            // SAFETY: a new descriptor from the kernel, owned by nobody else.
            drop(unsafe { OwnedFd::from_raw_fd(ret as i32) });
            "ok".to_owned()
        }
    }

    /// A software event counting the caller's own user-space time (what perf_event_paranoid 2
    /// allows anyone), then what attaching a tracepoint and a uprobe program opens: fails
    /// (exit 1) when either probe event is refused.
    fn perf_events(tracepoint: u64, uprobe: u32) -> anyhow::Result<()> {
        const EXCLUDE_KERNEL_AND_HV: u64 = 1 << 5 | 1 << 6;
        let path = c"/bin/true";
        let software = perf_event_open(1, 0, EXCLUDE_KERNEL_AND_HV, [0, 0]);
        let tracepoint = perf_event_open(2, tracepoint, 0, [0, 0]);
        // A uprobe at offset 0 of /bin/true (config1 = path, config2 = offset; without
        // CAP_PERFMON the kernel refuses before it reads either).
        let uprobe = perf_event_open(uprobe, 0, 0, [path.as_ptr() as u64, 0]);
        println!("software: {software}\ntracepoint: {tracepoint}\nuprobe: {uprobe}");
        if tracepoint != "ok" || uprobe != "ok" {
            anyhow::bail!("a probe event was refused");
        }
        Ok(())
    }
}
