//! End-to-end tests of `token_userns_demo` and `token_trace` on the real kernel, as root.
//!
//! Black-box: they run the built binaries and read what they print, as a user would.

mod support;

use std::process::Command;
use std::time::Duration;

use bpf_token_launcher::diagnosis::Cause;
use support::{DEMO, TRACE, exclusive, run_clean, shared};

#[test]
fn demo_prints_the_reference_report_with_delta_one() {
    let _host = shared();
    let run = run_clean(DEMO, &["-v"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{run:#?}");
    assert_eq!(run.field("token path").as_deref(), Some("/sys/fs/bpf"));
    assert_eq!(run.field("interface").as_deref(), Some("lo (ifindex=1)"));
    assert_eq!(run.field("packets before").as_deref(), Some("0"));
    assert_eq!(run.field("packets after").as_deref(), Some("1"));
    assert_eq!(run.field("delta").as_deref(), Some("1"));
    assert_eq!(run.field("last ifindex").as_deref(), Some("1"));
}

#[test]
fn twenty_runs_in_a_row_all_count_exactly_one_packet() {
    let _host = shared();
    for i in 0..20 {
        let run = run_clean(DEMO, &["-v"]);
        assert_eq!(run.code, Some(0), "run {i}: {run:#?}");
        assert_eq!(
            run.field("delta").as_deref(),
            Some("1"),
            "run {i}: {run:#?}"
        );
    }
}

#[test]
fn no_traffic_gives_delta_zero() {
    let _host = shared();
    let run = run_clean(DEMO, &["-n", "-v"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(run.field("delta").as_deref(), Some("0"));
    assert_eq!(run.field("packets after").as_deref(), Some("0"));
}

#[test]
fn verbose_trace_shows_every_step_and_the_tokens_allowed_set() {
    let _host = shared();
    let run = run_clean(DEMO, &["-v"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    for expected in [
        "clone3(CLONE_NEWUSER | CLONE_NEWNS) = sandbox child pid",
        "wrote /proc/",
        "setgroups: deny",
        "unshare(CLONE_NEWNET)",
        "fsopen(\"bpf\")",
        "sent bpffs context fd",
        "received bpffs context as fd",
        "FSCONFIG_SET_STRING, delegate_cmds, 0x40021): map_create:prog_load:btf_load",
        "FSCONFIG_SET_STRING, delegate_attachs, 0x2000000000): xdp",
        "FSCONFIG_CMD_CREATE",
        "fsmount = mount fd",
        "move_mount(fd",
        "mountinfo: /sys/fs/bpf bpf rw",
        "delegate_cmds=map_create:prog_load:btf_load,delegate_maps=array,delegate_progs=xdp,delegate_attachs=xdp",
        "mounted delegation matches the policy",
        "kernel enum names: running kernel's BTF (/sys/kernel/btf/vmlinux)",
        "BPF_TOKEN_CREATE",
        "token allows allowed_cmds=map_create:prog_load:btf_load",
        "token allows allowed_maps=array",
        "token allows allowed_progs=xdp",
        "token allows allowed_attachs=xdp",
        "bpf(BPF_BTF_LOAD, token_fd=",
        "bpf(BPF_MAP_CREATE, token_fd=",
        "bpf(BPF_PROG_LOAD, token_fd=",
        "bpf(BPF_LINK_CREATE",
        "counter before",
        "counter after",
    ] {
        assert!(
            run.stderr.contains(expected),
            "missing {expected:?} in the -v trace:\n{}",
            run.stderr
        );
    }
}

#[test]
fn sandbox_root_maps_to_a_transient_id_by_default_and_to_sudo_uid_when_set() {
    let _host = shared();
    // (maps, the supervisor's pid)
    let uid_of = |envs: &[(&str, &str)]| {
        let child = Command::new(DEMO)
            .args([
                "--",
                "sh",
                "-c",
                "cat /proc/self/uid_map /proc/self/gid_map",
            ])
            .env_remove("SUDO_UID")
            .env_remove("SUDO_GID")
            .envs(envs.iter().copied())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let maps = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        (maps, pid)
    };
    // Never 65534 (shared with daemons), never host root: an id of this run's own.
    let transient = |pid: u32| bpf_token_launcher::sandbox::userns::TRANSIENT_ID_BASE + pid;
    let (maps, pid) = uid_of(&[]);
    assert_eq!(maps, format!("0 {0} 1 0 {0} 1", transient(pid)));
    // `sudo` from a root shell sets SUDO_UID=0: still not host root.
    let (maps, pid) = uid_of(&[("SUDO_UID", "0"), ("SUDO_GID", "0")]);
    assert_eq!(maps, format!("0 {0} 1 0 {0} 1", transient(pid)));
    assert_eq!(
        uid_of(&[("SUDO_UID", "1234"), ("SUDO_GID", "4321")]).0,
        "0 1234 1 0 4321 1"
    );
    let out = Command::new(DEMO)
        .args([
            "--uid",
            "2000",
            "--gid",
            "3000",
            "--",
            "cat",
            "/proc/self/uid_map",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["0", "2000", "1"]
    );
}

#[test]
fn token_trace_counts_through_a_delegated_bpffs_prepared_for_it() {
    let _host = shared();
    // The supervisor mounts the delegated bpffs at /sys/fs/bpf inside the sandbox; token_trace
    // runs there with an explicit -t and with the libbpf default (LIBBPF_BPF_TOKEN_PATH).
    // The sandbox runs as host uid 65534, which may not be able to reach the build directory
    // (a clone under /root, say): run a copy from a world-readable place.
    let copy = support::world_readable_copy(TRACE);
    let trace = copy.path.to_str().unwrap();
    for args in [&[trace, "-t", "/sys/fs/bpf"][..], &[trace][..]] {
        let mut full = vec!["-v", "--"];
        full.extend_from_slice(args);
        let run = run_clean(DEMO, &full);
        assert_eq!(run.code, Some(0), "{run:#?}");
        assert_eq!(run.field("token path").as_deref(), Some("/sys/fs/bpf"));
        assert_eq!(run.field("delta").as_deref(), Some("1"), "{run:#?}");
    }
}

#[test]
fn token_trace_on_a_host_bpffs_explains_eopnotsupp() {
    let _host = exclusive();
    let bpffs = support::HostBpffs::mount();
    let run = support::run_trace_clean(&bpffs.dir, &[]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr
            .contains("bpf(BPF_TOKEN_CREATE) failed: EOPNOTSUPP"),
        "{run:#?}"
    );
    support::assert_diagnosed(&run.stderr, Cause::TokenInitialNamespace);
}

#[test]
fn token_trace_on_a_bpffs_subdirectory_explains_einval() {
    let _host = exclusive();
    let bpffs = support::HostBpffs::mount();
    let sub = bpffs.dir.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let run = support::run_trace_clean(&sub, &[]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("EINVAL"), "{run:#?}");
    support::assert_diagnosed(&run.stderr, Cause::TokenNotBpffsRoot);
}

#[test]
fn token_trace_on_a_non_bpffs_path_explains_einval() {
    let _host = shared();
    let run = run_clean(TRACE, &["-t", "/tmp"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.starts_with("token_trace: error: token: creating a BPF token from /tmp: bpf(BPF_TOKEN_CREATE) failed: EINVAL"), "{run:#?}");
    support::assert_diagnosed(&run.stderr, Cause::TokenNotBpffs);
    assert_eq!(run.stderr.lines().count(), 1, "one line: {run:#?}");
}

#[test]
fn token_trace_on_a_missing_path_says_so() {
    let _host = shared();
    let run = run_clean(TRACE, &["-t", "/nonexistent/bpffs"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr
            .contains("opening bpffs /nonexistent/bpffs: No such file or directory"),
        "{run:#?}"
    );
}

#[test]
fn a_policy_that_delegates_nothing_is_refused_before_forking() {
    let _host = shared();
    let run = run_clean(
        DEMO,
        &[
            "-v",
            "--delegate-cmds",
            "none",
            "--delegate-maps",
            "0",
            "--delegate-progs",
            "none",
            "--delegate-attachs",
            "0",
        ],
    );
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(
        run.stderr.contains("the policy delegates nothing"),
        "{run:#?}"
    );
    assert_eq!(run.child_pid(), None, "nothing may be forked: {run:#?}");
}

#[test]
fn each_missing_delegation_item_is_named_in_the_load_error() {
    let _host = shared();
    let cases: [(&str, &str, &str); 6] = [
        (
            "--delegate-progs",
            "socket_filter",
            "delegate_progs lacks `xdp`",
        ),
        (
            "--delegate-attachs",
            "cgroup_inet_ingress",
            "delegate_attachs lacks `xdp`",
        ),
        ("--delegate-maps", "hash", "delegate_maps lacks `array`"),
        (
            "--delegate-cmds",
            "map_create:prog_load",
            "delegate_cmds lacks `btf_load`",
        ),
        (
            "--delegate-cmds",
            "prog_load:btf_load",
            "delegate_cmds lacks `map_create`",
        ),
        (
            "--delegate-cmds",
            "map_create:btf_load",
            "delegate_cmds lacks `prog_load`",
        ),
    ];
    for (flag, value, expected) in cases {
        let run = run_clean(DEMO, &["-v", flag, value]);
        assert_eq!(run.code, Some(1), "{flag} {value}: {run:#?}");
        assert!(run.stderr.contains("EPERM"), "{flag} {value}: {run:#?}");
        assert!(
            run.stderr.contains(expected),
            "{flag} {value}: expected {expected:?} in {run:#?}"
        );
        support::assert_diagnosed(&run.stderr, Cause::TokenMissingDelegation);
    }
}

#[test]
fn unknown_interface_is_reported() {
    let _host = shared();
    let run = run_clean(DEMO, &["-v", "-i", "eth9"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains("interface \"eth9\" not found"),
        "{run:#?}"
    );
}

#[test]
fn a_misspelt_policy_fails_before_forking_with_a_suggestion() {
    let _host = shared();
    let run = run_clean(DEMO, &["-v", "--delegate-progs", "xdpp"]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(run.stderr.contains("did you mean `xdp`?"), "{run:#?}");
    assert!(
        !run.stderr.contains("sandbox child pid"),
        "must fail before forking: {run:#?}"
    );
}

#[test]
fn without_root_the_supervisor_refuses_in_one_line() {
    let _host = shared();
    let run = run_clean(
        "setpriv",
        &[
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--inh-caps=-all",
            DEMO,
        ],
    );
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
    assert!(run.stderr.contains("missing CAP_SYS_ADMIN"), "{run:#?}");
}

#[test]
fn refused_user_namespaces_name_the_sysctl() {
    // Root here lacks CAP_SYS_RESOURCE, so user.max_user_namespaces cannot be lowered to get the
    // ENOSPC case (covered by a unit test of the message). A seccomp filter makes
    // clone3 fail with EPERM, as an AppArmor restriction or a container's seccomp profile does.
    let _host = shared();
    let mut command = Command::new(DEMO);
    command.arg("-v");
    support::inject_syscall_result(&mut command, libc::SYS_clone3, None, libc::EPERM);
    let run = support::run_command_clean(&mut command);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains(
            "creating the sandbox's user namespace: clone3(CLONE_NEWUSER | CLONE_NEWNS) failed: EPERM"
        ),
        "{run:#?}"
    );
    support::assert_diagnosed(&run.stderr, Cause::UserNamespacesRestricted);
    let errors: Vec<&str> = run.stderr.lines().filter(|l| !l.starts_with('[')).collect();
    assert_eq!(
        errors.len(),
        1,
        "one error line besides the -v trace: {run:#?}"
    );
}

#[test]
fn clone3_filtered_with_enosys_falls_back_to_clone() {
    // Docker's default seccomp profile answers clone3 with ENOSYS so that callers use clone,
    // whose flags a filter can inspect: the sandbox must still start there.
    let _host = shared();
    let mut command = Command::new(DEMO);
    command.args(["--", "/bin/sh", "-c", "echo $$"]);
    support::inject_syscall_result(&mut command, libc::SYS_clone3, None, libc::ENOSYS);
    let run = support::run_command_clean(&mut command);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(
        run.stdout.trim(),
        "2",
        "the command is PID 2 under the sandbox's init: {run:#?}"
    );
}

#[test]
fn killing_the_supervisor_kills_the_sandbox_and_leaves_nothing() {
    let _host = shared();
    let mounts_before = support::host_mounts();
    let mut running = support::RunningSandbox::start(&["sleep", "60"]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(running.supervisor.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = running.supervisor.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{status:?}: {}",
        running.rest_of_trace()
    );
    let pid = running.sandbox_pid;
    assert!(
        support::wait_gone(pid, Duration::from_secs(2)),
        "sandbox {pid} survived its supervisor"
    );
    assert_eq!(support::host_mounts(), mounts_before, "host mounts changed");
    assert!(!support::host_lo_has_xdp());
}

#[test]
fn a_killed_sandbox_is_reported_and_the_supervisor_exits_like_a_shell() {
    let _host = shared();
    let mounts_before = support::host_mounts();
    let mut running = support::RunningSandbox::start(&["sleep", "60"]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(running.sandbox_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let rest = running.rest_of_trace();
    let status = running.supervisor.wait().unwrap();
    assert_eq!(status.code(), Some(137), "128 + SIGKILL; stderr: {rest}");
    assert!(
        rest.contains("sandbox child was killed by SIGKILL"),
        "{rest}"
    );
    assert_eq!(support::host_mounts(), mounts_before);
}

#[test]
fn a_missing_bpffs_path_is_refused_before_anything_is_forked() {
    let _host = shared();
    let run = run_clean(
        DEMO,
        &["-v", "--bpffs-path", "/nonexistent/bpffs", "--", "true"],
    );
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(
        run.stderr
            .contains("--bpffs-path \"/nonexistent/bpffs\" is not an existing directory"),
        "{run:#?}"
    );
    assert_eq!(run.child_pid(), None, "nothing may be forked: {run:#?}");
}

#[test]
fn the_supervisor_creates_a_superblock_only_from_a_bpf_context() {
    // Issue 13 item 15: the descriptor comes from the sandbox; a context of another filesystem
    // type must never be configured and created with the supervisor's host privileges.
    use bpf_token_launcher::bpf::bpffs::{self, BpffsError};
    use bpf_token_launcher::sys::mount::fsopen;
    use std::os::fd::AsFd as _;
    let _host = shared();
    let bpf = fsopen(c"bpf", "fsopen(\"bpf\")").unwrap();
    bpffs::check_is_bpf_context(bpf.as_fd()).unwrap();
    // Twice: the probe changes nothing and leaves no message behind.
    bpffs::check_is_bpf_context(bpf.as_fd()).unwrap();
    // ramfs accepts unknown options silently, tmpfs logs under its own name.
    for fs in [c"tmpfs", c"ramfs", c"proc"] {
        let other = fsopen(fs, "fsopen").unwrap();
        let err = bpffs::check_is_bpf_context(other.as_fd()).unwrap_err();
        assert!(
            matches!(err, BpffsError::NotBpfContext { .. }),
            "{fs:?}: {err}"
        );
        assert!(
            err.to_string().contains("refusing to create a superblock"),
            "{err}"
        );
    }
    let file = std::fs::File::open("/dev/null").unwrap();
    let err = bpffs::check_is_bpf_context(file.as_fd()).unwrap_err();
    assert!(
        err.to_string().contains("not a filesystem context"),
        "{err}"
    );
}

#[test]
fn print_policy_formats_carry_the_delegation_to_a_policy_file_and_other_tools() {
    let _host = shared();
    let policy = [
        "--delegate-maps",
        "array:ringbuf",
        "--delegate-progs",
        "xdp:socket_filter",
        "--delegate-attachs",
        "xdp:cgroup_inet_ingress",
    ];
    fn print<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = extra.to_vec();
        args.extend(["--print-policy", "--format"]);
        args
    }
    let flags = run_clean(DEMO, &[&print(&policy)[..], &["flags"]].concat());
    assert_eq!(flags.code, Some(0), "{flags:#?}");
    let toml = run_clean(DEMO, &[&print(&policy)[..], &["toml"]].concat());
    let file = std::env::temp_dir().join(format!("token-format-{}.toml", std::process::id()));
    std::fs::write(&file, &toml.stdout).unwrap();
    let back = run_clean(
        DEMO,
        &[
            &print(&["--policy", file.to_str().unwrap()])[..],
            &["flags"],
        ]
        .concat(),
    );
    std::fs::remove_file(&file).unwrap();
    assert_eq!(
        back.stdout, flags.stdout,
        "the toml format reads back: {toml:#?} {back:#?}"
    );
    let systemd = run_clean(DEMO, &[&print(&policy)[..], &["systemd"]].concat());
    assert!(
        systemd
            .stdout
            .contains("BPFDelegateMaps=BPFMapTypeArray,BPFMapTypeRingbuf\n"),
        "{systemd:#?}"
    );
    let bad = run_clean(DEMO, &["--print-policy", "--format", "yaml"]);
    assert_eq!(bad.code, Some(2), "{bad:#?}");
}
