//! `token_userns_demo -- CMD` as a sandbox for CI jobs, on the real kernel, as root: identity,
//! isolation, policy enforcement, exit codes, signals, timeout, and nothing left behind.

mod support;

use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{DEMO, ScratchDir, TRACE, run_clean, run_command_clean, shared};

#[test]
fn the_command_is_root_inside_and_its_files_belong_to_the_mapped_user() {
    let _host = shared();
    let dir = ScratchDir::new("sandbox", "owner");
    let run = run_command_clean(
        Command::new(DEMO)
            .args(["-v", "--uid", "23456", "--gid", "23457", "--"])
            .args(["sh", "-c", "id -u && id -g && pwd && echo made > created"])
            .current_dir(&dir.0),
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[..2], ["0", "0"], "{run:#?}");
    assert_eq!(
        lines[2],
        dir.0.to_str().unwrap(),
        "working directory passes through"
    );
    let meta = std::fs::metadata(dir.0.join("created")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (23456, 23457));
}

#[test]
fn environment_stdin_and_exit_status_pass_through() {
    let _host = shared();
    let mut child = Command::new(DEMO)
        .args([
            "--",
            "sh",
            "-c",
            "read line; echo \"$line $TOKEN_TEST_VAR $LIBBPF_BPF_TOKEN_PATH\"; exit 7",
        ])
        .env("TOKEN_TEST_VAR", "from-the-host")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from-the-host /sys/fs/bpf\n"
    );
}

#[test]
fn a_command_killing_itself_gives_128_plus_the_signal() {
    let _host = shared();
    let run = run_clean(DEMO, &["-v", "--", "sh", "-c", "kill -TERM $$; sleep 5"]);
    assert_eq!(run.code, Some(143), "{run:#?}");
}

/// The setup keeps the supervisor and the sandbox on one CPU each; the command must get the
/// caller's CPUs back, whatever they are.
#[test]
fn the_command_runs_on_the_callers_cpus() {
    let _host = shared();
    let allowed_list = |status: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|v| v.trim().to_owned())
            .expect("Cpus_allowed_list in /proc/<pid>/status")
    };
    let own = allowed_list(&std::fs::read_to_string("/proc/self/status").unwrap());
    let run = run_command_clean(Command::new(DEMO).args([
        "-v",
        "--",
        "grep",
        "Cpus_allowed_list",
        "/proc/self/status",
    ]));
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(allowed_list(&run.stdout), own, "{run:#?}");
    let cpus = nix::sched::sched_getaffinity(Pid::from_raw(0)).unwrap();
    let allowed: Vec<usize> = (0..nix::sched::CpuSet::count())
        .filter(|&cpu| cpus.is_set(cpu).unwrap())
        .collect();
    if allowed.len() > 1 {
        assert!(
            run.stderr.contains("setup runs with the supervisor on CPU"),
            "{run:#?}"
        );
    }

    // A caller restricted to one CPU: no separate CPU for the sandbox, and the command keeps
    // the restriction.
    let only = *allowed.last().unwrap();
    let mut command = Command::new(DEMO);
    command.args(["-v", "--", "grep", "Cpus_allowed_list", "/proc/self/status"]);
    // SAFETY: sched_setaffinity is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt as _;
        command.pre_exec(move || {
            let mut set = nix::sched::CpuSet::new();
            set.set(only).map_err(std::io::Error::from)?;
            nix::sched::sched_setaffinity(Pid::from_raw(0), &set).map_err(std::io::Error::from)
        });
    }
    let run = run_command_clean(&mut command);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(allowed_list(&run.stdout), only.to_string(), "{run:#?}");
    assert!(
        !run.stderr.contains("setup runs with the supervisor on CPU"),
        "{run:#?}"
    );
}

#[test]
fn token_trace_finds_the_token_at_the_default_path_and_the_policy_is_enforced() {
    let _host = shared();
    let copy = support::world_readable_copy(TRACE);
    let trace = copy.path.to_str().unwrap();
    let inside = run_clean(DEMO, &["-v", "--", trace]);
    assert_eq!(inside.code, Some(0), "{inside:#?}");
    assert_eq!(inside.field("delta").as_deref(), Some("1"), "{inside:#?}");
    // A program type and a map type outside the policy: the kernel refuses with EPERM.
    for (flag, value, missing) in [
        (
            "--delegate-progs",
            "socket_filter",
            "delegate_progs lacks `xdp`",
        ),
        ("--delegate-maps", "hash", "delegate_maps lacks `array`"),
    ] {
        let run = run_clean(DEMO, &["-v", flag, value, "--", trace]);
        assert_eq!(run.code, Some(1), "{run:#?}");
        assert!(run.stderr.contains("EPERM"), "{run:#?}");
        assert!(run.stderr.contains(missing), "{run:#?}");
    }
}

#[test]
fn the_command_cannot_touch_host_interfaces_mounts_or_hostname() {
    let _host = shared();
    let script = "set -u; \
        ip link add tokentest0 type veth peer name tokentest1 && echo link-added; \
        ip -o link show | cut -d: -f2 | tr -d ' ' | sort | tr '\\n' ' '; echo; \
        mount -t tmpfs tokentest /mnt 2>/dev/null && echo mounted || echo mount-refused; \
        hostname token-sandbox-test 2>&1 || echo hostname-refused; \
        grep -E '^(Uid|CapEff)' /proc/self/status";
    let hostname_before = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let run = run_clean(DEMO, &["-v", "--", "sh", "-c", script]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    // Inside, the command has every capability of its own namespaces...
    assert!(run.stdout.contains("link-added\n"), "{run:#?}");
    assert!(
        run.stdout
            .contains("lo tokentest0@tokentest1 tokentest1@tokentest0 \n"),
        "only its own interfaces: {run:#?}"
    );
    // ...except CAP_SYS_ADMIN (bit 21) and CAP_PERFMON (bit 38), which through the token would
    // give it kernel memory reads: so no mounts unless --cap-add sys_admin gives it back.
    assert!(run.stdout.contains("mount-refused\n"), "{run:#?}");
    assert!(run.stdout.contains("CapEff:\t000001bfffdfffff"), "{run:#?}");
    let run = run_clean(DEMO, &["--cap-add", "sys_admin", "--", "sh", "-c", script]);
    assert!(run.stdout.contains("mounted\n"), "{run:#?}");
    assert!(run.stdout.contains("CapEff:\t000001bfffffffff"), "{run:#?}");
    assert!(
        run.stderr.contains("warning: --cap-add sys_admin") && run.stderr.contains("kernel memory"),
        "{run:#?}"
    );
    // ...and none over the host: the hostname (initial UTS namespace) cannot be changed.
    assert!(run.stdout.contains("hostname-refused"), "{run:#?}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        hostname_before
    );
    // run_clean checked the host's mounts; check its interfaces.
    let host_links = std::fs::read_dir("/sys/class/net").unwrap();
    assert!(
        host_links
            .flatten()
            .all(|l| !l.file_name().to_string_lossy().starts_with("tokentest")),
        "the sandbox's interface leaked to the host"
    );
}

#[test]
fn seen_from_the_host_the_command_is_the_mapped_user_in_other_namespaces() {
    let _host = shared();
    let mut running = support::RunningSandbox::start(&["sleep", "30"]);
    let command = *support::descendants(running.sandbox_pid)
        .last()
        .expect("the command process");
    let status = std::fs::read_to_string(format!("/proc/{command}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let transient = (bpf_token_launcher::sandbox::userns::TRANSIENT_ID_BASE
        + running.supervisor.id())
    .to_string();
    assert_eq!(
        uid_line.split_whitespace().collect::<Vec<_>>(),
        ["Uid:", &transient, &transient, &transient, &transient],
        "{status}"
    );
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(
        nspid.ends_with("\t2"),
        "the command is PID 2 of its namespace: {nspid}"
    );
    for ns in ["user", "mnt", "net", "pid"] {
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let sandbox = std::fs::read_link(format!("/proc/{command}/ns/{ns}")).unwrap();
        assert_ne!(host, sandbox, "{ns} namespace shared with the host");
    }
    let _ = kill(
        Pid::from_raw(running.supervisor.id() as i32),
        Signal::SIGTERM,
    );
    let status = running.supervisor.wait().unwrap();
    assert_eq!(status.code(), Some(143), "SIGTERM forwarded to sleep");
}

#[test]
fn sigint_to_the_supervisor_reaches_the_command() {
    let _host = shared();
    let mut running = support::RunningSandbox::start(&[
        "sh",
        "-c",
        "trap 'echo got-sigint >&2; exit 5' INT; while :; do sleep 0.05; done",
    ]);
    kill(
        Pid::from_raw(running.supervisor.id() as i32),
        Signal::SIGINT,
    )
    .unwrap();
    let rest = running.rest_of_trace();
    let status = running.supervisor.wait().unwrap();
    assert_eq!(status.code(), Some(5), "{rest}");
    assert!(rest.contains("got-sigint"), "{rest}");
    assert!(rest.contains("forwarding SIGINT"), "{rest}");
}

#[test]
fn timeout_kills_every_process_of_the_sandbox_and_exits_124() {
    let _host = shared();
    let mounts_before = support::host_mounts();
    let mut running = support::RunningSandbox::start_with(
        &["--timeout", "1"],
        // A daemon that escapes its parent (setsid, double fork) must die too.
        &["sh", "-c", "setsid sh -c 'sleep 60 & sleep 60' & sleep 60"],
    );
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    let sandbox_processes = support::descendants(running.sandbox_pid);
    assert!(sandbox_processes.len() >= 4, "{sandbox_processes:?}");
    let rest = running.rest_of_trace();
    let status = running.supervisor.wait().unwrap();
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Some(124), "{rest}");
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    assert!(
        rest.contains("killed after the timeout of 1.000 s"),
        "{rest}"
    );
    for pid in sandbox_processes.into_iter().chain([running.sandbox_pid]) {
        assert!(
            support::wait_gone(pid, Duration::from_secs(1)),
            "process {pid} of the sandbox survived the timeout"
        );
    }
    assert_eq!(support::host_mounts(), mounts_before);
}

#[test]
fn sigkill_of_the_supervisor_leaves_no_process_and_no_mount() {
    let _host = shared();
    let mounts_before = support::host_mounts();
    let mut running = support::RunningSandbox::start(&["sh", "-c", "sleep 60 & sleep 60"]);
    let sandbox_processes = support::descendants(running.sandbox_pid);
    assert!(sandbox_processes.len() >= 3, "{sandbox_processes:?}");
    kill(
        Pid::from_raw(running.supervisor.id() as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    let status = running.supervisor.wait().unwrap();
    assert_eq!(status.signal(), Some(9));
    for pid in sandbox_processes.into_iter().chain([running.sandbox_pid]) {
        assert!(
            support::wait_gone(pid, Duration::from_secs(2)),
            "process {pid} survived its supervisor"
        );
    }
    assert_eq!(support::host_mounts(), mounts_before);
}

#[test]
fn json_status_reports_pids_namespaces_policy_and_exit() {
    let _host = shared();
    let (run, text) =
        support::run_with_status_fd(&["-v", "--json-status", "3", "--", "sh", "-c", "exit 7"]);
    assert_eq!(run.code, Some(7), "{run:#?}");
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    assert_eq!(events.len(), 2, "{text}");
    let ready = &events[0];
    assert_eq!(ready["event"], "sandbox-ready");
    assert_eq!(ready["sandbox_pid"], run.child_pid().unwrap());
    assert_eq!(ready["bpffs_path"], "/sys/fs/bpf");
    assert_eq!(ready["delegation"]["delegate_progs"], "xdp");
    for ns in ["user", "mnt", "net", "pid"] {
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let id = ready["namespaces"][ns].as_u64().expect(ns);
        assert_ne!(host.to_string_lossy(), format!("{ns}:[{id}]"), "{ns}");
    }
    assert_eq!(
        events[1],
        serde_json::json!({"event": "exited", "exit_code": 7, "signal": null, "timed_out": false})
    );
}

#[test]
fn a_closed_json_status_descriptor_is_refused_before_forking() {
    let _host = shared();
    let run = run_clean(DEMO, &["-v", "--json-status", "9", "--", "true"]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(
        run.stderr
            .contains("--json-status 9: the descriptor is not open"),
        "{run:#?}"
    );
    assert_eq!(run.child_pid(), None);
}

#[test]
fn xdp_on_the_sandbox_end_of_a_veth_counts_datagrams_from_the_host_end() {
    use std::io::{BufRead as _, Write as _};
    let _host = shared();
    let mounts_before = support::host_mounts();
    let copy = support::world_readable_copy(TRACE);
    let mut supervisor = Command::new(DEMO)
        .args(["-v", "--veth", "veth0", "--"])
        .args([copy.path.to_str().unwrap(), "-i", "veth0", "-n", "--hold"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let host_end = format!("tkn{}", supervisor.id());
    let mut trace = String::new();
    let mut lines = std::io::BufReader::new(supervisor.stderr.take().unwrap()).lines();
    let mut host_address = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        trace.push_str(&line);
        trace.push('\n');
        if let Some(rest) = line.split(&format!("veth {host_end} (")).nth(1) {
            host_address = rest.split('/').next().map(str::to_owned);
        }
        if line.contains("counting until stdin closes") {
            break;
        }
    }
    let host: std::net::Ipv4Addr = host_address
        .unwrap_or_else(|| panic!("no host end address in:\n{trace}"))
        .parse()
        .unwrap();
    let sandbox = std::net::Ipv4Addr::from(u32::from(host) + 1);
    assert!(
        std::path::Path::new("/sys/class/net")
            .join(&host_end)
            .exists(),
        "{trace}"
    );
    let socket = std::net::UdpSocket::bind((host, 0)).unwrap();
    for _ in 0..10 {
        socket.send_to(b"to the sandbox", (sandbox, 9)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    supervisor.stdin.take().unwrap().flush().unwrap();
    let out = supervisor.wait_with_output().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{trace}{}",
        rest.join("\n")
    );
    let field = |label: &str| {
        stdout.lines().find_map(|l| {
            l.strip_prefix(label)?
                .split(':')
                .nth(1)
                .map(|v| v.trim().to_owned())
        })
    };
    let delta: u64 = field("delta").unwrap().parse().unwrap();
    // Ten datagrams, plus the neighbour discovery that precedes them.
    assert!(delta >= 10, "delta {delta}: {stdout}");
    assert_eq!(
        field("interface").as_deref(),
        Some("veth0 (ifindex=2)"),
        "{stdout}"
    );
    assert_eq!(field("last ifindex").as_deref(), Some("2"), "{stdout}");
    assert!(
        support::wait_gone_path(&std::path::Path::new("/sys/class/net").join(&host_end)),
        "the host end {host_end} outlived the sandbox"
    );
    assert_eq!(support::host_mounts(), mounts_before);
}

#[test]
fn a_bad_veth_name_is_refused_before_forking() {
    let _host = shared();
    let run = run_clean(DEMO, &["-v", "--veth", "much-too-long-name0", "--", "true"]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(
        run.stderr.contains("interface names have 1 to 15 bytes"),
        "{run:#?}"
    );
    assert_eq!(run.child_pid(), None);
}

#[test]
fn the_command_can_open_no_host_cgroup2_to_attach_cgroup_programs_to() {
    // cgroup_bpf_link_attach takes any cgroup v2 directory fd and checks no capability: with a
    // cgroup program type delegated, an open host cgroup2 mount reaches every host process.
    // Every cgroup2 mount point of the sandbox's table must be covered (statfs: not cgroup2).
    let _host = shared();
    let host_cgroup2: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|t| t.starts_with("cgroup2 "))
        })
        .map(|l| l.split(' ').nth(4).unwrap().to_owned())
        .collect();
    assert!(
        !host_cgroup2.is_empty(),
        "this host has no cgroup2 mount: the test would prove nothing"
    );
    // statfs magic CGROUP2_SUPER_MAGIC is 0x63677270.
    let script = host_cgroup2
        .iter()
        .map(|p| format!("stat -f -c '%t {p}' {p}; "))
        .collect::<String>();
    let run = run_clean(DEMO, &["--", "sh", "-c", &script]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        !run.stdout.contains("63677270"),
        "a host cgroup2 is open to the command: {run:#?}"
    );
    assert_eq!(run.stdout.lines().count(), host_cgroup2.len(), "{run:#?}");
    // With CAP_SYS_ADMIN kept (and the warning that says what that grants) the command could
    // uncover them: that is what --cap-add sys_admin is documented to allow.
    let run = run_clean(
        DEMO,
        &[
            "--cap-add",
            "sys_admin",
            "--",
            "sh",
            "-c",
            &format!("umount {0} && stat -f -c %t {0}", host_cgroup2[0]),
        ],
    );
    assert!(run.stdout.contains("63677270"), "{run:#?}");
}
