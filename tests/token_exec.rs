//! `token_exec` on the real kernel: nested in `token_userns_demo --no-gateway -- ...`, whose
//! sandbox is a delegated bpffs someone else made, stock aya (no token code) counts through it
//! and gets EPERM without it; a wrong bpffs is diagnosed before the command runs; the command's
//! exit status, signals and uncovered calls are handled as the sandbox handles them; and it runs
//! unprivileged (the sandbox's root is an unprivileged host user outside the initial user
//! namespace).
//!
//! The programs run under `token_exec` are this test binary itself, run again with
//! `--role NAME` (a copy every user can read, since the sandbox's host uid may not reach
//! `target/`); the stock-aya role calls the `stock-aya` crate (aya 0.14 from crates.io only), as
//! tests/gateway.rs does.

mod support;

use std::process::{Command, ExitCode};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bpf_token_launcher::diagnosis::Cause;
use support::{DEMO, Run, ScratchDir, assert_diagnosed, exclusive, run_command_clean, shared};

const ROLE: &str = "--role";
const TOKEN_EXEC: &str = env!("CARGO_BIN_EXE_token_exec");

/// What the sandboxed runs need, readable by any user: this binary, token_exec, the counter's
/// object and a policy file.
struct Programs {
    files: support::ProgramDir,
    this: String,
    token_exec: String,
    counter: String,
    aya_policy: String,
}

static PROGRAMS: OnceLock<Programs> = OnceLock::new();

/// The counter's delegation plus what aya 0.14's own feature probes need without CAP_PERFMON
/// (as in tests/gateway.rs): a socket filter loaded without an expected attach type (checked as
/// cgroup_inet_ingress) and cpumap and devmap maps.
const AYA_POLICY: &str = r#"
cmds = "map_create:prog_load:btf_load"
maps = "array:cpumap:devmap"
progs = "xdp:socket_filter"
attachs = "xdp:cgroup_inet_ingress"
"#;

impl Programs {
    fn get() -> &'static Self {
        PROGRAMS.get_or_init(|| {
            let files = support::ProgramDir::new("token-exec-test");
            let put = |name: &str, bytes: &[u8], mode: u32| files.put(name, bytes, mode);
            Self {
                this: files.put_this("token-exec-roles"),
                token_exec: put("token_exec", &std::fs::read(TOKEN_EXEC).unwrap(), 0o755),
                counter: put(
                    "counter.o",
                    bpf_token_launcher::counter::COUNTER_OBJECT,
                    0o644,
                ),
                aya_policy: put("aya.toml", AYA_POLICY.as_bytes(), 0o644),
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
            "nested_in_the_sandbox_stock_aya_counts_through_token_exec_and_gets_eperm_without_it",
            nested_in_the_sandbox_stock_aya_counts_through_token_exec_and_gets_eperm_without_it,
        ),
        (
            "under_the_sandboxs_own_gateway_token_exec_warns_and_the_command_still_counts",
            under_the_sandboxs_own_gateway_token_exec_warns_and_the_command_still_counts,
        ),
        (
            "token_exec_runs_unprivileged_as_the_sandboxs_user",
            token_exec_runs_unprivileged_as_the_sandboxs_user,
        ),
        (
            "a_path_that_is_no_bpffs_is_diagnosed_before_the_command_runs",
            a_path_that_is_no_bpffs_is_diagnosed_before_the_command_runs,
        ),
        (
            "a_host_bpffs_is_diagnosed_before_the_command_runs",
            a_host_bpffs_is_diagnosed_before_the_command_runs,
        ),
        (
            "the_commands_exit_status_passes_through_as_a_shells",
            the_commands_exit_status_passes_through_as_a_shells,
        ),
        (
            "signals_sent_to_token_exec_reach_the_command",
            signals_sent_to_token_exec_reach_the_command,
        ),
        (
            "an_uncovered_call_is_explained_when_the_command_fails",
            an_uncovered_call_is_explained_when_the_command_fails,
        ),
        (
            "orphans_are_not_waited_for_and_lose_the_gateway_with_token_exec",
            orphans_are_not_waited_for_and_lose_the_gateway_with_token_exec,
        ),
    ];
    support::run_trials(tests, || {
        if let Some(programs) = PROGRAMS.get() {
            programs.files.remove();
        }
    })
}

/// `token_userns_demo OPTIONS -- COMMAND...`, checked to leave nothing behind.
fn sandboxed(options: &[&str], command: &[&str]) -> Run {
    let mut run = Command::new(DEMO);
    run.args(options).arg("--").args(command);
    run_command_clean(&mut run)
}

/// `sh -c SCRIPT` in the sandbox without its own gateway (so token_exec's can start), with
/// `$TE` token_exec, `$ROLES` this binary and `$1`... the extra arguments.
fn sandboxed_script(options: &[&str], script: &str, args: &[&str]) -> Run {
    let programs = Programs::get();
    let script = format!(
        "TE={}; ROLES={}; {script}",
        programs.token_exec, programs.this
    );
    let command = [&["sh", "-c", &script, "sh"], args].concat();
    sandboxed(&[&["--no-gateway"], options].concat(), &command)
}

fn aya_policy() -> [&'static str; 2] {
    ["--policy", &Programs::get().aya_policy]
}

fn nested_in_the_sandbox_stock_aya_counts_through_token_exec_and_gets_eperm_without_it() {
    let _host = shared();
    let programs = Programs::get();
    let options = [&aya_policy()[..], &["--no-gateway"]].concat();
    let run = sandboxed(
        &options,
        &[
            &programs.token_exec,
            "-v",
            "-t",
            "/sys/fs/bpf",
            "--",
            &programs.this,
            ROLE,
            "stock-aya-xdp",
            &programs.counter,
        ],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout.contains("packets counted: 1"),
        "stock aya must count exactly the one datagram\n{run:#?}"
    );
    // The command is one process: one copy of the token, found again by kcmp for every later
    // call; no call failed in the gateway.
    assert_eq!(
        run.stderr.matches("token added as its fd").count(),
        1,
        "{run:#?}"
    );
    assert!(run.stderr.contains("token already its fd"), "{run:#?}");
    assert!(!run.stderr.contains("passed on untouched"), "{run:#?}");
    assert!(
        run.stderr.contains("the token allows delegate_cmds=map_create:prog_load:btf_load,delegate_maps=array:devmap:cpumap,delegate_progs=socket_filter:xdp,delegate_attachs=cgroup_inet_ingress:xdp"),
        "{run:#?}"
    );
    // The command succeeded: nothing is explained at the end.
    assert!(!run.stderr.contains("token_exec: bpf("), "{run:#?}");

    let without = sandboxed(
        &options,
        &[&programs.this, ROLE, "stock-aya-xdp", &programs.counter],
    );
    assert_eq!(without.code, Some(1), "{without:#?}");
    assert!(
        without.stderr.contains("Operation not permitted"),
        "stock aya without token_exec must fail with EPERM\n{without:#?}"
    );
}

fn under_the_sandboxs_own_gateway_token_exec_warns_and_the_command_still_counts() {
    let _host = shared();
    let programs = Programs::get();
    let run = sandboxed(
        &aya_policy(),
        &[
            &programs.token_exec,
            "--",
            &programs.this,
            ROLE,
            "stock-aya-xdp",
            &programs.counter,
        ],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("packets counted: 1"), "{run:#?}");
    assert!(
        run.stderr
            .contains("token_exec: warning: the bpf() gateway cannot start")
            && run.stderr.contains("token_userns_demo's own gateway"),
        "{run:#?}"
    );
}

fn token_exec_runs_unprivileged_as_the_sandboxs_user() {
    let _host = shared();
    // The command's identity, with and without token_exec around it: token_exec made no
    // namespace, so both run in the sandbox's user namespace, whose root is an unprivileged
    // host uid (no capability in the initial user namespace): token_exec, which made the token
    // and serves the gateway there, is unprivileged on the host. It added one filter (and
    // no_new_privs, which the sandbox had set already).
    let run = sandboxed_script(
        &[],
        r#"$ROLES --role identity && $TE -- $ROLES --role identity"#,
        &[],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    let field = |name: &str| -> Vec<String> {
        run.stdout
            .lines()
            .filter_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .collect()
    };
    let maps = field("uid_map:");
    assert_eq!(maps.len(), 2, "{run:#?}");
    assert_eq!(
        maps[0], maps[1],
        "token_exec made a user namespace\n{run:#?}"
    );
    let fields: Vec<u64> = maps[0]
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(fields[..], [0, fields[1], 1], "{run:#?}");
    assert_ne!(fields[1], 0, "the sandbox's root is host root\n{run:#?}");
    let filters: Vec<u32> = field("Seccomp_filters:")
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(filters.len(), 2, "{run:#?}");
    assert_eq!(filters[1], filters[0] + 1, "{run:#?}");
    assert_eq!(field("NoNewPrivs:"), ["1", "1"], "{run:#?}");
    // Neither the token, the listener nor anything else of token_exec's reaches the command.
    assert_eq!(field("fds:"), ["[0, 1, 2]", "[0, 1, 2]"], "{run:#?}");
}

/// A command that leaves a mark if it runs.
fn marking_command(dir: &ScratchDir) -> (Vec<String>, std::path::PathBuf) {
    let mark = dir.0.join("ran");
    (
        vec!["touch".to_owned(), mark.to_str().expect("utf-8").to_owned()],
        mark,
    )
}

fn token_exec_host(args: &[&str], command: &[String]) -> Run {
    let mut run = Command::new(TOKEN_EXEC);
    run.args(args).arg("--").args(command);
    run_command_clean(&mut run)
}

fn a_path_that_is_no_bpffs_is_diagnosed_before_the_command_runs() {
    let _host = shared();
    let scratch = ScratchDir::new("token-exec", "plain");
    let (command, mark) = marking_command(&scratch);
    let plain = scratch.0.join("plain");
    std::fs::create_dir(&plain).unwrap();
    let plain = plain.to_str().unwrap();

    let run = token_exec_host(&["-t", plain], &command);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.starts_with(&format!(
            "token_exec: error: creating a BPF token from {plain}: bpf(BPF_TOKEN_CREATE)"
        )),
        "{run:#?}"
    );
    assert_diagnosed(&run.stderr, Cause::TokenNotBpffs);
    assert!(run.stderr.contains("token_trace --list"), "{run:#?}");
    assert!(!mark.exists(), "the command ran\n{run:#?}");

    // libbpf's default path comes from LIBBPF_BPF_TOKEN_PATH.
    let mut from_env = Command::new(TOKEN_EXEC);
    from_env
        .env("LIBBPF_BPF_TOKEN_PATH", plain)
        .arg("--")
        .args(&command);
    let run = run_command_clean(&mut from_env);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert_diagnosed(&run.stderr, Cause::TokenNotBpffs);
    assert!(!mark.exists(), "the command ran\n{run:#?}");

    // A path that does not exist.
    let missing = scratch.0.join("missing");
    let run = token_exec_host(&["-t", missing.to_str().unwrap()], &command);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains("opening bpffs") && run.stderr.contains("No such file or directory"),
        "{run:#?}"
    );
    assert!(!mark.exists(), "the command ran\n{run:#?}");

    // An empty LIBBPF_BPF_TOKEN_PATH is libbpf's "no token": bad input here.
    let mut empty = Command::new(TOKEN_EXEC);
    empty
        .env("LIBBPF_BPF_TOKEN_PATH", "")
        .arg("--")
        .args(&command);
    let run = run_command_clean(&mut empty);
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(
        run.stderr
            .contains("LIBBPF_BPF_TOKEN_PATH is set but empty"),
        "{run:#?}"
    );
    assert!(!mark.exists(), "the command ran\n{run:#?}");

    // A directory inside the sandbox's own (delegated) bpffs: a token comes from its root only.
    let run = sandboxed_script(
        &[],
        r#"mkdir /sys/fs/bpf/sub && exec $TE -t /sys/fs/bpf/sub -- "$@""#,
        &command.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert_diagnosed(&run.stderr, Cause::TokenNotBpffsRoot);
    assert!(!mark.exists(), "the command ran\n{run:#?}");
}

fn a_host_bpffs_is_diagnosed_before_the_command_runs() {
    // Mounts a bpffs on the host.
    let _host = exclusive();
    let scratch = ScratchDir::new("token-exec", "host");
    let (command, mark) = marking_command(&scratch);
    let bpffs = support::HostBpffs::mount();
    let path = bpffs.dir.to_str().unwrap();

    // Host root: the initial user namespace never gets a token.
    let run = token_exec_host(&["-t", path], &command);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert_diagnosed(&run.stderr, Cause::TokenInitialNamespace);
    assert!(!mark.exists(), "the command ran\n{run:#?}");

    // Root of another user namespace: the bpffs is not its own.
    let mut other = Command::new("unshare");
    other
        .args(["--user", "--map-root-user", TOKEN_EXEC, "-t", path, "--"])
        .args(&command);
    let run = run_command_clean(&mut other);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert_diagnosed(&run.stderr, Cause::TokenOtherNamespace);
    assert!(!mark.exists(), "the command ran\n{run:#?}");
}

fn the_commands_exit_status_passes_through_as_a_shells() {
    let _host = shared();
    // No -t: the sandbox's LIBBPF_BPF_TOKEN_PATH names its bpffs, as libbpf reads it.
    let run = sandboxed_script(
        &[],
        r#"
        $TE -- sh -c 'exit 3'; echo "exit: $?"
        $TE -- sh -c 'kill -USR1 $$'; echo "signal: $?"
        $TE -- no-such-command-here; echo "not found: $?"
        $TE -- "$1"; echo "not executable: $?"
        $TE -- true; echo "success: $?"
        "#,
        &[&Programs::get().counter],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    for expected in [
        "exit: 3",
        // SIGUSR1 is 10.
        "signal: 138",
        "not found: 127",
        "not executable: 126",
        "success: 0",
    ] {
        assert!(
            run.stdout.lines().any(|l| l == expected),
            "{expected:?} missing\n{run:#?}"
        );
    }
    assert!(
        run.stderr
            .contains("token_exec: error: \"no-such-command-here\": command not found"),
        "{run:#?}"
    );
}

fn signals_sent_to_token_exec_reach_the_command() {
    let _host = shared();
    let scratch = ScratchDir::new("token-exec", "signals");
    let ready = scratch.0.join("ready");
    let started = scratch.0.join("started");
    // A command that handles SIGTERM (exits 42 once it got it), then one that dies of it; each
    // says it is ready by creating a file, so the signal cannot reach token_exec before the
    // command runs.
    let run = sandboxed_script(
        &[],
        r#"
        $TE -- $ROLES --role wait-term "$1" & pid=$!
        while [ ! -e "$1" ]; do sleep 0.01; done
        kill -TERM $pid; wait $pid; echo "handled: $?"
        $TE -- sh -c 'touch "$0"; exec sleep 30' "$2" & pid=$!
        while [ ! -e "$2" ]; do sleep 0.01; done
        kill -TERM $pid; wait $pid; echo "default: $?"
        "#,
        &[ready.to_str().unwrap(), started.to_str().unwrap()],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("got SIGTERM"), "{run:#?}");
    assert!(run.stdout.lines().any(|l| l == "handled: 42"), "{run:#?}");
    // SIGTERM is 15: the command died of it and token_exec says so as a shell would.
    assert!(run.stdout.lines().any(|l| l == "default: 143"), "{run:#?}");
}

fn an_uncovered_call_is_explained_when_the_command_fails() {
    let _host = shared();
    // libbpf's first probe, a trivial socket filter without an expected attach type, under the
    // default (counter's) delegation, which has neither.
    let run = sandboxed_script(&[], r#"$TE -- $ROLES --role socket-filter-probe"#, &[]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("was not covered by the delegation"))
        .unwrap_or_else(|| panic!("no explanation\n{run:#?}"));
    assert!(
        line.starts_with("token_exec: bpf(BPF_PROG_LOAD) for program type socket_filter, expected attach type cgroup_inet_ingress, by pid ")
            && line.contains("(token-exec-role)")
            && line.ends_with("add socket_filter to --delegate-progs and cgroup_inet_ingress to --delegate-attachs"),
        "{line}"
    );
    assert!(
        run.stderr.contains(
            "token_exec: the delegation is the one the bpffs at /sys/fs/bpf was mounted with (delegate_cmds=map_create:prog_load:btf_load,delegate_maps=array,delegate_progs=xdp,delegate_attachs=xdp), which token_exec cannot change: whoever mounts it must give delegate_cmds=map_create:prog_load:btf_load,delegate_maps=array,delegate_progs=socket_filter:xdp,delegate_attachs=cgroup_inet_ingress:xdp"
        ),
        "{run:#?}"
    );
    // The explanation comes after the command's own error.
    let failed = run.stderr.find("probe failed: EPERM").unwrap();
    assert!(failed < run.stderr.find(line).unwrap(), "{run:#?}");

    // --no-explain: the command's error only.
    let quiet = sandboxed_script(
        &[],
        r#"$TE --no-explain -- $ROLES --role socket-filter-probe"#,
        &[],
    );
    assert_eq!(quiet.code, Some(1), "{quiet:#?}");
    assert!(quiet.stderr.contains("probe failed: EPERM"), "{quiet:#?}");
    assert!(
        !quiet.stderr.contains("not covered") && !quiet.stderr.contains("cannot change"),
        "{quiet:#?}"
    );

    // Covered, the probe passes and nothing is explained.
    let covered = sandboxed_script(
        &[
            "--delegate-progs",
            "socket_filter:xdp",
            "--delegate-attachs",
            "cgroup_inet_ingress:xdp",
        ],
        r#"$TE -- $ROLES --role socket-filter-probe"#,
        &[],
    );
    assert_eq!(covered.code, Some(0), "{covered:#?}");
    assert!(covered.stdout.contains("probe loaded"), "{covered:#?}");
    assert!(!covered.stderr.contains("not covered"), "{covered:#?}");
}

fn orphans_are_not_waited_for_and_lose_the_gateway_with_token_exec() {
    let _host = shared();
    let scratch = ScratchDir::new("token-exec", "orphans");
    let out = scratch.0.join("out");
    // The command leaves a child behind and exits: token_exec returns at once. The orphan's
    // next notified call, once token_exec is gone, has nobody to answer it.
    let started = Instant::now();
    let run = sandboxed_script(
        &[],
        r#"
        $TE -- sh -c '(sleep 0.5; exec "$0" --role map-create > "$1" 2>&1) & exit 0' $ROLES "$1"
        echo "token_exec: $?"
        sleep 1.5; cat "$1"
        "#,
        &[out.to_str().unwrap()],
    );
    let elapsed = started.elapsed();
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("token_exec: 0"), "{run:#?}");
    assert!(
        run.stdout.contains("map_create: ENOSYS"),
        "the orphan's call after token_exec exited\n{run:#?}"
    );
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

/// The programs the tests run under token_exec.
mod roles {
    use super::*;
    use std::io::Write as _;
    use std::os::fd::{FromRawFd as _, OwnedFd};

    use nix::errno::Errno;

    pub fn run(args: &[String]) -> ExitCode {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // A short, fixed comm for the explanations (the copy's file name is 16 characters).
        let _ = nix::sys::prctl::set_name(c"token-exec-role");
        let result = match args[..] {
            ["stock-aya-xdp", object] => std::fs::read(object)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| stock_aya::count_one_datagram(&bytes, "lo"))
                .map(|n| println!("packets counted: {n}")),
            ["identity"] => identity(),
            ["wait-term", ready] => wait_term(ready),
            ["socket-filter-probe"] => socket_filter_probe(),
            ["map-create"] => {
                println!(
                    "map_create: {}",
                    map_create().map_or_else(|e| format!("{e:?}"), |_| "created".to_owned())
                );
                Ok(())
            }
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

    fn bpf(cmd: u32, attr: &mut [u8]) -> Result<OwnedFd, Errno> {
        // SAFETY: the kernel reads at most `attr.len()` bytes at `attr`.
        let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
        if ret < 0 {
            Err(Errno::last())
        } else {
            // SAFETY: a new descriptor from the kernel, owned by nobody else.
            Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
        }
    }

    /// An array map of one u64 with aya's attr size, as a token-unaware loader asks for it.
    fn map_create() -> Result<OwnedFd, Errno> {
        let mut attr = [0u8; 152];
        for (offset, value) in [(0usize, 2u32), (4, 4), (8, 8), (12, 1)] {
            attr[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
        }
        bpf(0, &mut attr)
    }

    fn identity() -> anyhow::Result<()> {
        let uid_map = std::fs::read_to_string("/proc/self/uid_map")?;
        println!("uid_map: {}", uid_map.trim());
        let status = std::fs::read_to_string("/proc/self/status")?;
        for line in status
            .lines()
            .filter(|l| l.starts_with("Seccomp_filters:") || l.starts_with("NoNewPrivs:"))
        {
            println!("{line}");
        }
        // The descriptors it was started with; the highest is the listing's own.
        let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        fds.sort_unstable();
        fds.pop();
        println!("fds: {fds:?}");
        Ok(())
    }

    /// Waits for SIGTERM (after saying it is ready by creating `ready`), exits 42 with it.
    fn wait_term(ready: &str) -> anyhow::Result<()> {
        use nix::sys::signal::{SigSet, Signal};
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        set.thread_block()?;
        std::fs::File::create(ready)?;
        let signal = set.wait()?;
        println!("got {signal}");
        let _ = std::io::stdout().flush();
        std::process::exit(42);
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
}
