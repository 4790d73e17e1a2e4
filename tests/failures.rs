//! Failure injection: the real binaries under a seccomp filter that makes one system call fail
//! with one errno, to reproduce on this modern kernel what older or locked-down machines do
//! ("old kernel", "user namespaces disabled", "bpffs refuses creation", ...). Each test asserts
//! the exact call and errno, the diagnosis from the library's table, the exit status, and that
//! nothing is left behind (no host mounts, no XDP on the host's lo, the sandbox child gone).

mod support;

use std::process::Command;

use bpf_token_launcher::diagnosis::{self, Cause};
use bpf_token_launcher::sys::{Errno, ErrnoName};
use support::{DEMO, Run, shared};

/// `bpf()` commands (`enum bpf_cmd`).
const BPF_MAP_CREATE: u64 = 0;
const BPF_PROG_LOAD: u64 = 5;
const BPF_LINK_CREATE: u64 = 28;
const BPF_TOKEN_CREATE: u64 = 36;
/// `fsconfig()` commands.
const FSCONFIG_SET_STRING: u64 = 1;
const FSCONFIG_CMD_CREATE: u64 = 6;
const CLONE_NEWNET: u64 = 0x4000_0000;

/// `token_userns_demo -v ARGS` with `nr` (when argument `arg.0` is `arg.1`) failing with `errno`.
fn demo_with_failing(nr: i64, arg: Option<(u8, u64)>, errno: i32, args: &[&str]) -> Run {
    let mut command = Command::new(DEMO);
    command.arg("-v").args(args);
    support::inject_syscall_result(&mut command, nr, arg, errno);
    support::run_command_clean(&mut command)
}

/// The run failed with exit status 1, one error line naming `call` and `errno`, and the
/// diagnosis of `cause`.
fn assert_diagnosed_failure(run: &Run, call: &str, errno: i32, cause: Cause) {
    assert_eq!(run.code, Some(1), "{run:#?}");
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("token_userns_demo: error: "))
        .collect();
    assert_eq!(errors.len(), 1, "exactly one error line: {run:#?}");
    let expected = format!("{call} failed: {}", ErrnoName(Errno::from_raw(errno)));
    assert!(
        errors[0].contains(&expected),
        "expected {expected:?} in {run:#?}"
    );
    support::assert_diagnosed(errors[0], cause);
}

#[test]
fn user_namespace_limit_reached_names_max_user_namespaces() {
    let _host = shared();
    let run = demo_with_failing(libc::SYS_clone3, None, libc::ENOSPC, &[]);
    assert_diagnosed_failure(
        &run,
        "clone3(CLONE_NEWUSER | CLONE_NEWNS)",
        libc::ENOSPC,
        Cause::UserNamespaceLimit,
    );
    assert!(run.stderr.contains("user.max_user_namespaces"), "{run:#?}");
}

#[test]
fn user_namespaces_nested_too_deeply() {
    let _host = shared();
    let run = demo_with_failing(libc::SYS_clone3, None, libc::EUSERS, &[]);
    assert_diagnosed_failure(
        &run,
        "clone3(CLONE_NEWUSER | CLONE_NEWNS)",
        libc::EUSERS,
        Cause::UserNamespaceNesting,
    );
}

#[test]
fn kernel_without_namespaces() {
    let _host = shared();
    let run = demo_with_failing(libc::SYS_clone3, None, libc::EINVAL, &["--", "true"]);
    assert_diagnosed_failure(
        &run,
        "clone3(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC)",
        libc::EINVAL,
        Cause::NamespacesNotBuilt,
    );
}

#[test]
fn process_limit_reached_names_the_limit_not_an_unexpected_error() {
    let _host = shared();
    let run = demo_with_failing(libc::SYS_clone3, None, libc::EAGAIN, &["--", "true"]);
    assert_diagnosed_failure(
        &run,
        "clone3(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC)",
        libc::EAGAIN,
        Cause::ProcessLimit,
    );
    assert!(run.stderr.contains("pids.max"), "{run:#?}");
}

#[test]
fn network_namespace_limit_reached_names_max_net_namespaces() {
    let _host = shared();
    let run = demo_with_failing(
        libc::SYS_unshare,
        Some((0, CLONE_NEWNET)),
        libc::ENOSPC,
        &[],
    );
    assert_diagnosed_failure(
        &run,
        "unshare(CLONE_NEWNET)",
        libc::ENOSPC,
        Cause::NetworkNamespaceLimit,
    );
}

#[test]
fn fsopen_refused_without_an_own_mount_namespace() {
    let _host = shared();
    let run = demo_with_failing(libc::SYS_fsopen, None, libc::EPERM, &[]);
    assert_diagnosed_failure(
        &run,
        "fsopen(\"bpf\")",
        libc::EPERM,
        Cause::FsopenNeedsMountNamespace,
    );
}

#[test]
fn kernel_without_bpffs() {
    let _host = shared();
    let run = demo_with_failing(libc::SYS_fsopen, None, libc::ENODEV, &[]);
    assert_diagnosed_failure(&run, "fsopen(\"bpf\")", libc::ENODEV, Cause::NoBpffs);
}

#[test]
fn kernel_without_the_new_mount_api() {
    let _host = shared();
    let run = demo_with_failing(libc::SYS_fsopen, None, libc::ENOSYS, &[]);
    assert_diagnosed_failure(&run, "fsopen(\"bpf\")", libc::ENOSYS, Cause::NoMountApi);
}

#[test]
fn old_kernel_rejects_the_delegate_options() {
    let _host = shared();
    let run = demo_with_failing(
        libc::SYS_fsconfig,
        Some((1, FSCONFIG_SET_STRING)),
        libc::EINVAL,
        &[],
    );
    assert_diagnosed_failure(
        &run,
        "fsconfig(FSCONFIG_SET_STRING)",
        libc::EINVAL,
        Cause::DelegationUnsupported,
    );
    let release = bpf_token_launcher::bpf::bpffs::kernel_release();
    assert!(
        run.stderr
            .contains(&format!("the running kernel is {release}")),
        "{run:#?}"
    );
}

#[test]
fn delegate_options_refused_without_host_privilege() {
    let _host = shared();
    let run = demo_with_failing(
        libc::SYS_fsconfig,
        Some((1, FSCONFIG_SET_STRING)),
        libc::EPERM,
        &[],
    );
    assert_diagnosed_failure(
        &run,
        "fsconfig(FSCONFIG_SET_STRING)",
        libc::EPERM,
        Cause::DelegationNeedsHostRoot,
    );
}

#[test]
fn bpffs_refuses_creation_as_on_distribution_6_8_kernels() {
    let _host = shared();
    let run = demo_with_failing(
        libc::SYS_fsconfig,
        Some((1, FSCONFIG_CMD_CREATE)),
        libc::EPERM,
        &[],
    );
    assert_diagnosed_failure(
        &run,
        "fsconfig(FSCONFIG_CMD_CREATE)",
        libc::EPERM,
        Cause::BpffsCreationRefused,
    );
}

#[test]
fn fsmount_refused() {
    let _host = shared();
    let run = demo_with_failing(libc::SYS_fsmount, None, libc::EPERM, &[]);
    assert_diagnosed_failure(&run, "fsmount", libc::EPERM, Cause::FsmountRefused);
}

#[test]
fn token_from_a_bpffs_without_delegation() {
    let _host = shared();
    let run = demo_with_failing(
        libc::SYS_bpf,
        Some((0, BPF_TOKEN_CREATE)),
        libc::ENOENT,
        &[],
    );
    assert_diagnosed_failure(
        &run,
        "bpf(BPF_TOKEN_CREATE)",
        libc::ENOENT,
        Cause::TokenNoDelegation,
    );
}

#[test]
fn token_refused_in_another_user_namespace() {
    let _host = shared();
    let run = demo_with_failing(libc::SYS_bpf, Some((0, BPF_TOKEN_CREATE)), libc::EPERM, &[]);
    assert_diagnosed_failure(
        &run,
        "bpf(BPF_TOKEN_CREATE)",
        libc::EPERM,
        Cause::TokenOtherNamespace,
    );
}

#[test]
fn verifier_rejection_is_named() {
    let _host = shared();
    let run = demo_with_failing(libc::SYS_bpf, Some((0, BPF_PROG_LOAD)), libc::EACCES, &[]);
    assert_diagnosed_failure(
        &run,
        "bpf(BPF_PROG_LOAD)",
        libc::EACCES,
        Cause::VerifierRejected,
    );
}

#[test]
fn map_memory_exhausted() {
    let _host = shared();
    let run = demo_with_failing(libc::SYS_bpf, Some((0, BPF_MAP_CREATE)), libc::ENOMEM, &[]);
    assert_diagnosed_failure(
        &run,
        "bpf(BPF_MAP_CREATE)",
        libc::ENOMEM,
        Cause::LoadOutOfMemory,
    );
}

#[test]
fn xdp_slot_taken() {
    let _host = shared();
    for errno in [libc::EBUSY, libc::EEXIST] {
        let run = demo_with_failing(libc::SYS_bpf, Some((0, BPF_LINK_CREATE)), errno, &[]);
        assert_diagnosed_failure(
            &run,
            "bpf(BPF_LINK_CREATE)",
            errno,
            Cause::XdpAlreadyAttached,
        );
    }
}

#[test]
fn xdp_attach_without_net_admin() {
    let _host = shared();
    let run = demo_with_failing(libc::SYS_bpf, Some((0, BPF_LINK_CREATE)), libc::EPERM, &[]);
    assert_diagnosed_failure(
        &run,
        "bpf(BPF_LINK_CREATE)",
        libc::EPERM,
        Cause::XdpAttachNeedsNetAdmin,
    );
}

/// The request that creates the veth pair is the supervisor's only netlink message longer than
/// 64 bytes (`send` argument 2; the address and route dumps, `RTM_NEWADDR`, `RTM_GETLINK` and
/// `RTM_DELLINK` are 24 to 52 bytes); the kernel's answer to it arrives the same way an error of
/// `send` does.
fn veth_failure(errno: i32, cause: Cause) {
    let mut command = Command::new(DEMO);
    command.args(["-v", "--veth", "tkt0"]);
    support::inject_syscall_result_when(
        &mut command,
        libc::SYS_sendto,
        Some((2, seccompiler::SeccompCmpOp::Gt, 64)),
        errno,
    );
    let run = support::run_command_clean(&mut command);
    assert_diagnosed_failure(&run, "netlink RTM_NEWLINK (veth)", errno, cause);
    let host_ends: Vec<_> = std::fs::read_dir("/sys/class/net")
        .expect("list interfaces")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("tkn"))
        .collect();
    assert!(host_ends.is_empty(), "{host_ends:?}\n{run:#?}");
}

#[test]
fn veth_name_taken() {
    let _host = shared();
    veth_failure(libc::EEXIST, Cause::VethNameTaken);
}

#[test]
fn kernel_without_veth() {
    let _host = shared();
    veth_failure(libc::EOPNOTSUPP, Cause::NoVethDriver);
}

#[test]
fn veth_without_net_admin() {
    let _host = shared();
    veth_failure(libc::EPERM, Cause::VethNeedsNetAdmin);
}

/// `token_userns_demo --check --json` with `nr` failing; returns the exit status and the
/// findings by name.
fn check_with_failing(
    nr: i64,
    arg: Option<(u8, u64)>,
    errno: i32,
) -> (Option<i32>, serde_json::Value) {
    check_with_failures(&[(nr, arg, errno)])
}

/// A system call to fail: its number, the argument it must match (index, value), the errno.
type Injection = (i64, Option<(u8, u64)>, i32);

/// As [`check_with_failing`], with every call of `failures` failing.
fn check_with_failures(failures: &[Injection]) -> (Option<i32>, serde_json::Value) {
    let mut command = Command::new(DEMO);
    command.args(["--check", "--json"]);
    for &(nr, arg, errno) in failures {
        support::inject_syscall_result(&mut command, nr, arg, errno);
    }
    let run = support::run_command_clean(&mut command);
    let report: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:#?}"));
    (run.code, report)
}

fn finding<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {report:#}"))
}

/// `--check` exits 1, reports `name` missing with the diagnosis of `cause` and its fix.
fn assert_check_names(code: Option<i32>, report: &serde_json::Value, name: &str, cause: Cause) {
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["ok"], false, "{report:#}");
    let found = finding(report, name);
    let row = diagnosis::row(cause);
    assert_eq!(found["status"], "missing", "{report:#}");
    assert_eq!(found["diagnosis"], row.key().as_str(), "{report:#}");
    assert_eq!(found["fix"], row.fix, "{report:#}");
}

#[test]
fn check_passes_on_this_machine() {
    let _host = shared();
    let run = support::run_clean(DEMO, &["--check"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout.ends_with("the demo can run on this machine\n"),
        "{run:#?}"
    );
    assert!(
        run.stdout.lines().all(|l| !l.starts_with("MISSING")),
        "{run:#?}"
    );
    let json = support::run_clean(DEMO, &["--check", "--json"]);
    assert_eq!(json.code, Some(0), "{json:#?}");
    let report: serde_json::Value = serde_json::from_str(&json.stdout).expect(&json.stdout);
    assert_eq!(report["ok"], true);
    for check in report["checks"].as_array().expect("checks") {
        assert_eq!(check["status"], "ok", "{report:#}");
    }
    assert_eq!(
        finding(&report, "XDP load, attach, count")["status"],
        "ok",
        "the probe must have run the demo: {report:#}"
    );
}

#[test]
fn check_names_a_kernel_without_tokens() {
    let _host = shared();
    let (code, report) =
        check_with_failing(libc::SYS_bpf, Some((0, BPF_TOKEN_CREATE)), libc::EINVAL);
    assert_check_names(
        code,
        &report,
        "bpf() and BPF_TOKEN_CREATE",
        Cause::KernelWithoutTokens,
    );
    // Nothing is probed on a machine already known to be missing something.
    assert_eq!(finding(&report, "sandbox namespaces")["status"], "skipped");
}

#[test]
fn check_names_a_kernel_without_bpf() {
    let _host = shared();
    let (code, report) = check_with_failing(libc::SYS_bpf, None, libc::ENOSYS);
    assert_check_names(
        code,
        &report,
        "bpf() and BPF_TOKEN_CREATE",
        Cause::NoBpfSyscall,
    );
}

#[test]
fn check_names_a_kernel_without_btf() {
    let _host = shared();
    // The check looks the BTF file up by path; nothing before it does. Rust's std does that with
    // statx relative to the working directory on glibc (its statx probe uses descriptor 0 and
    // still gets EFAULT, so std trusts the ENOENT instead of falling back to newfstatat) and
    // with stat on musl, the project's build: both fail here.
    const AT_FDCWD: u64 = libc::AT_FDCWD as u32 as u64;
    let (code, report) = check_with_failures(&[
        (libc::SYS_statx, Some((0, AT_FDCWD)), libc::ENOENT),
        (libc::SYS_stat, None, libc::ENOENT),
    ]);
    assert_check_names(code, &report, "kernel BTF", Cause::NoKernelBtf);
}

#[test]
fn check_names_restricted_user_namespaces() {
    let _host = shared();
    let (code, report) = check_with_failing(libc::SYS_clone3, None, libc::EPERM);
    assert_check_names(
        code,
        &report,
        "sandbox namespaces",
        Cause::UserNamespacesRestricted,
    );
    assert_eq!(
        finding(&report, "bpffs delegation and token")["status"],
        "skipped"
    );
}

#[test]
fn check_names_a_bpffs_that_refuses_creation() {
    let _host = shared();
    let (code, report) = check_with_failing(
        libc::SYS_fsconfig,
        Some((1, FSCONFIG_CMD_CREATE)),
        libc::EPERM,
    );
    assert_check_names(
        code,
        &report,
        "bpffs delegation and token",
        Cause::BpffsCreationRefused,
    );
    assert_eq!(finding(&report, "sandbox namespaces")["status"], "ok");
}

#[test]
fn check_names_an_old_kernel_rejecting_delegation() {
    let _host = shared();
    let (code, report) = check_with_failing(
        libc::SYS_fsconfig,
        Some((1, FSCONFIG_SET_STRING)),
        libc::EINVAL,
    );
    assert_check_names(
        code,
        &report,
        "bpffs delegation and token",
        Cause::DelegationUnsupported,
    );
}

#[test]
fn check_names_a_program_the_verifier_rejects() {
    let _host = shared();
    // A failure inside the sandbox, after the token: reported from the sandbox's own message.
    let (code, report) = check_with_failing(libc::SYS_bpf, Some((0, BPF_PROG_LOAD)), libc::EACCES);
    assert_check_names(
        code,
        &report,
        "XDP load, attach, count",
        Cause::VerifierRejected,
    );
    assert_eq!(
        finding(&report, "bpffs delegation and token")["status"],
        "ok"
    );
}

#[test]
fn check_as_an_unprivileged_user_names_the_missing_privilege() {
    use std::os::unix::process::CommandExt as _;
    let _host = shared();
    let copy = support::world_readable_copy(DEMO);
    let mut command = Command::new(&copy.path);
    command.args(["--check", "--json"]).uid(65534).gid(65534);
    let run = support::run_command_clean(&mut command);
    assert_eq!(run.code, Some(1), "{run:#?}");
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect(&run.stdout);
    let privilege = finding(&report, "supervisor privilege");
    assert_eq!(privilege["status"], "missing", "{report:#}");
    assert!(
        privilege["fix"]
            .as_str()
            .is_some_and(|f| f.contains("sudo token_userns_demo --check")),
        "{report:#}"
    );
    // The probe is never attempted without the privilege it needs.
    for name in [
        "sandbox namespaces",
        "bpffs delegation and token",
        "XDP load, attach, count",
    ] {
        assert_eq!(finding(&report, name)["status"], "skipped", "{report:#}");
    }
}
