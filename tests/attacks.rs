//! Attacks on the sandbox (issue 13), each exploit reduced to a root test on the real kernel
//! that fails while the hole is open: kernel memory reads through the token, terminal
//! injection, leaked descriptors, a setup stall, the inherited working directory, the default
//! identity, hostile policy files and `--json-status` descriptors, panics and misleading errors.
//!
//! This binary is also the attack program. Run with `ATTACK_ROLE` naming a role (`kernel-read`,
//! `tty`, `fds`), it plays that role and prints what it achieved; that is how the tests run it
//! inside the sandbox, from a world-readable copy, as the sandbox's unprivileged host uid.
//! Without the variable it runs the tests (libtest-mimic: `--list`, filters, `--test-threads`).
//!
//! The veth attacks live in tests/veth.rs and the memory/pids limits in tests/limits.rs.

mod support;

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Trial};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{DEMO, Run, WorldReadableCopy, shared};

/// Names the role this binary plays inside the sandbox.
const ROLE_VAR: &str = "ATTACK_ROLE";
/// `kernel-read`: create a nested user namespace after taking the token.
const NESTED_VAR: &str = "ATTACK_NESTED_USERNS";
/// `tty`: where to write the report (stdout is the terminal under attack).
const REPORT_VAR: &str = "ATTACK_REPORT";

/// Capability numbers (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The default sandbox identity after the fix: 0x70000000 + the supervisor's pid.
const TRANSIENT_ID_BASE: u32 = 1_879_048_192;

type Test = fn();

const TESTS: &[(&str, Test)] = &[
    // 1. Kernel memory read through the token.
    (
        "kernel_read_helpers_are_refused_by_the_verifier_by_default",
        kernel_read_helpers_are_refused_by_the_verifier_by_default,
    ),
    (
        "kernel_read_helpers_load_with_cap_add_and_a_warning",
        kernel_read_helpers_load_with_cap_add_and_a_warning,
    ),
    (
        "the_demo_counter_still_counts_with_the_default_confinement",
        the_demo_counter_still_counts_with_the_default_confinement,
    ),
    (
        "the_command_lacks_perfmon_and_sys_admin_in_every_set",
        the_command_lacks_perfmon_and_sys_admin_in_every_set,
    ),
    (
        "cap_drop_removes_more_capabilities",
        cap_drop_removes_more_capabilities,
    ),
    (
        "file_capability_or_setuid_binaries_do_not_regain_them",
        file_capability_or_setuid_binaries_do_not_regain_them,
    ),
    (
        "a_nested_user_namespace_gets_no_rights_through_the_token",
        a_nested_user_namespace_gets_no_rights_through_the_token,
    ),
    (
        "perfmon_program_types_without_the_opt_in_are_refused_before_forking",
        perfmon_program_types_without_the_opt_in_are_refused_before_forking,
    ),
    (
        "delegate_progs_any_is_allowed_with_a_warning",
        delegate_progs_any_is_allowed_with_a_warning,
    ),
    // 2. Terminal injection.
    (
        "tiocsti_and_tioclinux_are_refused_under_a_real_pty",
        tiocsti_and_tioclinux_are_refused_under_a_real_pty,
    ),
    (
        "new_session_detaches_the_command_from_the_terminal",
        new_session_detaches_the_command_from_the_terminal,
    ),
    (
        "an_interactive_shell_keeps_job_control_under_tmux",
        an_interactive_shell_keeps_job_control_under_tmux,
    ),
    // 3. Leaked descriptors.
    (
        "the_callers_descriptors_are_closed_before_the_command_runs",
        the_callers_descriptors_are_closed_before_the_command_runs,
    ),
    (
        "preserve_fd_passes_exactly_that_descriptor",
        preserve_fd_passes_exactly_that_descriptor,
    ),
    (
        "the_json_status_descriptor_is_not_passed_to_the_command",
        the_json_status_descriptor_is_not_passed_to_the_command,
    ),
    // 4. Setup stall.
    (
        "a_sandbox_stopped_during_setup_still_times_out_with_124",
        a_sandbox_stopped_during_setup_still_times_out_with_124,
    ),
    // 5. Working directory.
    (
        "an_unreachable_working_directory_falls_back_to_root",
        an_unreachable_working_directory_falls_back_to_root,
    ),
    // 6. Identity.
    (
        "sudo_uid_0_does_not_map_the_sandbox_to_host_root",
        sudo_uid_0_does_not_map_the_sandbox_to_host_root,
    ),
    (
        "the_default_identity_is_a_transient_uid_and_gid",
        the_default_identity_is_a_transient_uid_and_gid,
    ),
    (
        "explicit_uid_0_and_gid_0_work_with_a_warning",
        explicit_uid_0_and_gid_0_work_with_a_warning,
    ),
    ("a_system_group_warns_by_name", a_system_group_warns_by_name),
    // 7. Policy files.
    (
        "a_fifo_policy_file_is_refused_quickly",
        a_fifo_policy_file_is_refused_quickly,
    ),
    (
        "dev_zero_as_a_policy_file_is_refused_quickly",
        dev_zero_as_a_policy_file_is_refused_quickly,
    ),
    (
        "a_directory_as_a_policy_file_is_refused",
        a_directory_as_a_policy_file_is_refused,
    ),
    (
        "a_symlinked_policy_file_is_refused",
        a_symlinked_policy_file_is_refused,
    ),
    (
        "a_policy_file_over_the_size_limit_is_refused",
        a_policy_file_over_the_size_limit_is_refused,
    ),
    // 8. --json-status.
    (
        "an_unusable_json_status_descriptor_is_refused_before_forking",
        an_unusable_json_status_descriptor_is_refused_before_forking,
    ),
    (
        "a_full_json_status_pipe_does_not_block_the_run",
        a_full_json_status_pipe_does_not_block_the_run,
    ),
    (
        "the_exited_event_names_the_signal",
        the_exited_event_names_the_signal,
    ),
    // 9. Panics.
    (
        "stdout_on_dev_full_does_not_panic",
        stdout_on_dev_full_does_not_panic,
    ),
    (
        "stdout_on_a_closed_pipe_does_not_panic",
        stdout_on_a_closed_pipe_does_not_panic,
    ),
    (
        "an_out_of_range_timeout_is_refused",
        an_out_of_range_timeout_is_refused,
    ),
    // 10. Misleading errors.
    (
        "a_missing_command_behind_an_unreadable_path_directory_is_127",
        a_missing_command_behind_an_unreadable_path_directory_is_127,
    ),
    (
        "too_few_descriptors_is_reported_as_emfile",
        too_few_descriptors_is_reported_as_emfile,
    ),
    (
        "dangerous_bpffs_paths_are_refused_before_forking",
        dangerous_bpffs_paths_are_refused_before_forking,
    ),
    (
        "an_empty_command_after_double_dash_is_refused",
        an_empty_command_after_double_dash_is_refused,
    ),
    // Found by a second review (red team) after the fixes above.
    (
        "the_callers_keyrings_are_out_of_reach",
        the_callers_keyrings_are_out_of_reach,
    ),
    (
        "no_cgroup_namespace_of_its_own_so_no_cgroup2_mount_around_the_covers",
        no_cgroup_namespace_of_its_own_so_no_cgroup2_mount_around_the_covers,
    ),
    (
        "system_v_ipc_objects_stay_in_the_sandbox",
        system_v_ipc_objects_stay_in_the_sandbox,
    ),
    (
        "the_kfunc_kernel_read_of_this_kernel_is_said_before_the_run",
        the_kfunc_kernel_read_of_this_kernel_is_said_before_the_run,
    ),
];

fn main() -> ExitCode {
    if let Some(role) = std::env::var_os(ROLE_VAR) {
        return roles::play(&role.to_string_lossy());
    }
    let args = Arguments::from_args();
    let trials = TESTS
        .iter()
        .map(|&(name, test)| {
            Trial::test(name, move || {
                test();
                Ok(())
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    drop(
        ATTACKER
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take(),
    );
    conclusion.exit()
}

// ---------------------------------------------------------------------------------------------
// Running the binaries.

/// One world-readable copy of this binary, shared by the tests (it is large), removed at exit.
static ATTACKER: Mutex<Option<WorldReadableCopy>> = Mutex::new(None);

fn attacker() -> String {
    let mut copy = ATTACKER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let copy = copy.get_or_insert_with(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        support::world_readable_copy(exe.to_str().expect("utf-8 path"))
    });
    copy.path.to_str().expect("utf-8 path").to_owned()
}

/// `token_userns_demo ARGS`, started from `/` (reachable by any mapped uid), stdin closed.
fn demo(args: &[&str]) -> Command {
    let mut command = Command::new(DEMO);
    command.args(args).current_dir("/").stdin(Stdio::null());
    command
}

/// `token_userns_demo [OPTIONS] -- <attacker>` playing `role`.
fn demo_attack(options: &[&str], role: &str) -> Command {
    let attacker = attacker();
    let mut args = options.to_vec();
    args.extend(["--", attacker.as_str()]);
    let mut command = demo(&args);
    command.env(ROLE_VAR, role);
    command
}

/// A run with a deadline: how it ended, how long it took, and whether it had to be killed.
#[derive(Debug)]
struct Outcome {
    run: Run,
    signal: Option<i32>,
    pid: u32,
    elapsed: Duration,
    timed_out: bool,
    max_rss_kib: i64,
}

impl Outcome {
    fn assert_code(&self, code: i32) {
        assert_eq!(self.run.code, Some(code), "{self:#?}");
    }

    /// Refused by the binary itself: exit 2, quickly, nothing forked (checked in the `-v`
    /// trace, so pass `-v`).
    fn assert_refused_before_forking(&self) {
        assert!(!self.timed_out, "the run hung: {self:#?}");
        self.assert_code(2);
        assert_eq!(
            self.run.child_pid(),
            None,
            "a sandbox was forked: {self:#?}"
        );
        assert!(
            self.elapsed < Duration::from_secs(3),
            "took {:?}: {self:#?}",
            self.elapsed
        );
    }

    fn assert_no_panic(&self) {
        assert!(!self.timed_out, "the run hung: {self:#?}");
        assert!(
            !self.run.stderr.contains("panicked"),
            "the binary panicked: {self:#?}"
        );
        assert_ne!(self.run.code, Some(101), "exit 101 is a panic: {self:#?}");
        assert_eq!(self.signal, None, "killed by a signal: {self:#?}");
    }
}

/// Runs `command` with stdout and stderr captured, killing it (and everything below it) after
/// `limit`; then checks the host is clean.
fn run_bounded(command: &mut Command, limit: Duration) -> Outcome {
    command.stdout(Stdio::piped());
    run_bounded_with(command, limit)
}

/// [`run_bounded`] leaving stdout as the caller set it (captured only if piped).
fn run_bounded_with(command: &mut Command, limit: Duration) -> Outcome {
    use std::os::unix::process::ExitStatusExt as _;
    let mounts_before = support::host_mounts();
    command.stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().expect("spawn");
    let pid = child.id();
    let stdout = child.stdout.take().map(read_in_background);
    let stderr = read_in_background(child.stderr.take().expect("stderr pipe"));
    let waited = wait_bounded(child, limit);
    let elapsed = started.elapsed();
    let collect = |rx: mpsc::Receiver<Vec<u8>>| {
        rx.recv_timeout(Duration::from_secs(3)).map_or_else(
            |_| "<still open: a process of the run kept the pipe>".to_owned(),
            |b| String::from_utf8_lossy(&b).into_owned(),
        )
    };
    let run = Run {
        code: waited.status.code(),
        stdout: stdout.map(collect).unwrap_or_default(),
        stderr: collect(stderr),
    };
    support::assert_host_clean(&mounts_before, &run);
    Outcome {
        signal: waited.status.signal(),
        run,
        pid,
        elapsed,
        timed_out: waited.timed_out,
        max_rss_kib: waited.max_rss_kib,
    }
}

fn read_in_background(mut pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// How a bounded wait ended.
struct Waited {
    status: std::process::ExitStatus,
    timed_out: bool,
    /// Peak resident memory of the child (and of what it reaped), in KiB.
    max_rss_kib: i64,
}

/// Waits up to `limit`; past it, SIGKILLs the child and its descendants (stopped ones too).
/// Reaps with `wait4` for the child's peak memory: do not wait for `child` again.
fn wait_bounded(child: std::process::Child, limit: Duration) -> Waited {
    use std::os::unix::process::ExitStatusExt as _;
    let pid = i32::try_from(child.id()).expect("pid");
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain data.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on our own child, writing into the two locals.
        let ret = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if ret == pid {
            return Waited {
                status: std::process::ExitStatus::from_raw(status),
                timed_out,
                max_rss_kib: usage.ru_maxrss,
            };
        }
        assert!(
            ret == 0,
            "wait4({pid}): {}",
            std::io::Error::last_os_error()
        );
        if !timed_out && Instant::now() > deadline {
            kill_tree(pid);
            timed_out = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn kill_tree(pid: i32) {
    for p in support::descendants(pid) {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

const LIMIT: Duration = Duration::from_secs(30);

/// Makes `fd` (open in this process) descriptor `target` of the spawned program, inheritable.
///
/// The descriptor is first copied above 100, so that several can be placed without one
/// overwriting the source of another.
fn pass_fd(command: &mut Command, fd: &OwnedFd, target: RawFd) -> OwnedFd {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own; the result is owned below.
    let high = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) };
    assert!(
        high >= 0,
        "F_DUPFD_CLOEXEC: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a new descriptor nothing else owns.
    let high = unsafe { OwnedFd::from_raw_fd(high) };
    let raw = high.as_raw_fd();
    // SAFETY: dup2 is async-signal-safe and only touches the child's descriptor table; dup2
    // clears close-on-exec on the target.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(raw, target) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    high
}

/// A directory for one test, with the given mode, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, mode: u32) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("token-attacks-{}-{n}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn lower(text: &str) -> String {
    text.to_lowercase()
}

// ---------------------------------------------------------------------------------------------
// 1. Kernel memory read.

/// The `load NAME:` line the kernel-read role printed.
fn load_result<'a>(stdout: &'a str, name: &str) -> Option<&'a str> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("load {name}: ")))
}

fn assert_loaded(outcome: &Outcome, name: &str) {
    assert_eq!(
        load_result(&outcome.run.stdout, name),
        Some("loaded"),
        "program {name} should load: {outcome:#?}"
    );
}

/// Refused by the verifier: EINVAL and a log naming the helper.
fn assert_refused_by_verifier(outcome: &Outcome, name: &str, helper: &str) {
    let result = load_result(&outcome.run.stdout, name)
        .unwrap_or_else(|| panic!("no result for program {name}: {outcome:#?}"));
    assert!(
        result.starts_with("refused EINVAL"),
        "program {name} should be refused by the verifier with EINVAL: {outcome:#?}"
    );
    assert!(
        result.contains(helper),
        "the verifier log should name {helper}: {outcome:#?}"
    );
}

fn assert_not_loaded(outcome: &Outcome, name: &str) {
    let result = load_result(&outcome.run.stdout, name)
        .unwrap_or_else(|| panic!("no result for program {name}: {outcome:#?}"));
    assert!(
        result.starts_with("refused"),
        "program {name} must not load: {outcome:#?}"
    );
}

fn kernel_read_helpers_are_refused_by_the_verifier_by_default() {
    let _host = shared();
    let outcome = run_bounded(&mut demo_attack(&["-v"], "kernel-read"), LIMIT);
    outcome.assert_code(0);
    assert!(outcome.run.stdout.contains("token: ok"), "{outcome:#?}");
    // The token works: a program without those helpers loads through it.
    assert_loaded(&outcome, "control");
    assert_refused_by_verifier(&outcome, "current_task", "bpf_get_current_task#35");
    assert_refused_by_verifier(&outcome, "probe_read_kernel", "bpf_probe_read_kernel#113");
    assert_refused_by_verifier(&outcome, "exploit", "bpf_get_current_task#35");
}

fn kernel_read_helpers_load_with_cap_add_and_a_warning() {
    let _host = shared();
    for name in [
        "perfmon",
        "CAP_PERFMON",
        "Cap_Perfmon",
        "sys_admin",
        "CAP_SYS_ADMIN",
    ] {
        let outcome = run_bounded(&mut demo_attack(&["--cap-add", name], "kernel-read"), LIMIT);
        outcome.assert_code(0);
        for program in ["control", "current_task", "probe_read_kernel", "exploit"] {
            assert_loaded(&outcome, program);
        }
        assert!(
            outcome.run.stderr.contains("kernel memory"),
            "--cap-add {name} must warn that it grants kernel memory reads: {outcome:#?}"
        );
    }
}

fn the_demo_counter_still_counts_with_the_default_confinement() {
    let _host = shared();
    let outcome = run_bounded(&mut demo(&["-v"]), LIMIT);
    outcome.assert_code(0);
    assert_eq!(
        outcome.run.field("delta").as_deref(),
        Some("1"),
        "{outcome:#?}"
    );
    let trace = support::world_readable_copy(support::TRACE);
    let outcome = run_bounded(&mut demo(&["-v", "--", s(&trace.path)]), LIMIT);
    outcome.assert_code(0);
    assert_eq!(
        outcome.run.field("delta").as_deref(),
        Some("1"),
        "{outcome:#?}"
    );
}

/// The `Cap*:` masks of a `/proc/<pid>/status` text.
fn cap_sets(status: &str) -> BTreeMap<String, u64> {
    status
        .lines()
        .filter_map(|l| {
            let (key, value) = l.split_once(':')?;
            let key = key.trim();
            (key.starts_with("Cap") && key != "Capabilities")
                .then(|| Some((key.to_owned(), u64::from_str_radix(value.trim(), 16).ok()?)))?
        })
        .collect()
}

/// Every capability this kernel knows.
fn all_caps() -> u64 {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .expect("read cap_last_cap")
        .trim()
        .parse()
        .expect("a number");
    (1u64 << (last + 1)) - 1
}

const fn bit(cap: u32) -> u64 {
    1 << cap
}

/// CapEff, CapPrm and CapBnd are everything but PERFMON and SYS_ADMIN; CapInh and CapAmb hold
/// neither of them.
fn assert_confined_caps(status: &str, context: &dyn std::fmt::Debug) {
    let sets = cap_sets(status);
    let expected = all_caps() & !(bit(CAP_PERFMON) | bit(CAP_SYS_ADMIN));
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let mask = *sets
            .get(set)
            .unwrap_or_else(|| panic!("no {set} line: {context:#?}"));
        assert_eq!(
            mask & (bit(CAP_PERFMON) | bit(CAP_SYS_ADMIN)),
            0,
            "{set} = {mask:#x} holds CAP_PERFMON or CAP_SYS_ADMIN: {context:#?}"
        );
        if matches!(set, "CapPrm" | "CapEff" | "CapBnd") {
            assert_eq!(
                mask, expected,
                "{set} = {mask:#x} should keep every other capability ({expected:#x}, CAP_BPF and CAP_NET_ADMIN included): {context:#?}"
            );
        }
    }
}

fn the_command_lacks_perfmon_and_sys_admin_in_every_set() {
    let _host = shared();
    let outcome = run_bounded(&mut demo(&["-v", "--", "cat", "/proc/self/status"]), LIMIT);
    outcome.assert_code(0);
    assert_confined_caps(&outcome.run.stdout, &outcome);
    let eff = cap_sets(&outcome.run.stdout)["CapEff"];
    assert_ne!(eff & bit(CAP_BPF), 0, "{outcome:#?}");
    assert_ne!(eff & bit(CAP_NET_ADMIN), 0, "{outcome:#?}");
}

fn cap_drop_removes_more_capabilities() {
    let _host = shared();
    let caps_of = |options: &[&str]| {
        let mut args = vec!["-v"];
        args.extend_from_slice(options);
        args.extend(["--", "cat", "/proc/self/status"]);
        let outcome = run_bounded(&mut demo(&args), LIMIT);
        outcome.assert_code(0);
        (cap_sets(&outcome.run.stdout), outcome)
    };
    for name in ["net_admin", "CAP_NET_ADMIN"] {
        let (sets, outcome) = caps_of(&["--cap-drop", name]);
        for set in ["CapPrm", "CapEff", "CapBnd"] {
            assert_eq!(sets[set] & bit(CAP_NET_ADMIN), 0, "{set}: {outcome:#?}");
            assert_ne!(sets[set] & bit(CAP_BPF), 0, "{set}: {outcome:#?}");
            assert_eq!(sets[set] & bit(CAP_PERFMON), 0, "{set}: {outcome:#?}");
        }
    }
    let (sets, outcome) = caps_of(&["--cap-drop", "ALL"]);
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(sets[set], 0, "--cap-drop ALL leaves {set}: {outcome:#?}");
    }
    // --cap-add restores only the one asked for.
    let (sets, outcome) = caps_of(&["--cap-add", "perfmon"]);
    for set in ["CapPrm", "CapEff", "CapBnd"] {
        assert_ne!(sets[set] & bit(CAP_PERFMON), 0, "{set}: {outcome:#?}");
        assert_eq!(sets[set] & bit(CAP_SYS_ADMIN), 0, "{set}: {outcome:#?}");
    }
}

/// `security.capability` (VFS_CAP_REVISION_2) granting `caps` as permitted and inheritable,
/// with the effective flag if `effective`.
fn set_file_caps(path: &Path, caps: &[u32], effective: bool) {
    let mask: u64 = caps.iter().map(|&c| bit(c)).sum();
    let mut value = Vec::new();
    value.extend_from_slice(&(0x0200_0000u32 | u32::from(effective)).to_le_bytes());
    for half in [mask as u32, (mask >> 32) as u32] {
        value.extend_from_slice(&half.to_le_bytes()); // permitted
        value.extend_from_slice(&half.to_le_bytes()); // inheritable
    }
    let c_path = std::ffi::CString::new(s(path)).unwrap();
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let ret = unsafe {
        libc::setxattr(
            c_path.as_ptr(),
            c"security.capability".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        ret,
        0,
        "setxattr security.capability on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// The command execs a copy of the attack program that carries file capabilities (from host
/// root, so they apply in the sandbox's user namespace), or is setuid host root.
fn file_capability_or_setuid_binaries_do_not_regain_them() {
    let _host = shared();
    let exe = std::env::current_exe().unwrap();
    let caps = [CAP_PERFMON, CAP_SYS_ADMIN, CAP_BPF, CAP_NET_ADMIN];
    let file_caps = support::world_readable_copy(s(&exe));
    set_file_caps(&file_caps.path, &caps, false);
    let file_caps_effective = support::world_readable_copy(s(&exe));
    set_file_caps(&file_caps_effective.path, &caps, true);
    let setuid = support::world_readable_copy(s(&exe));
    std::fs::set_permissions(&setuid.path, std::fs::Permissions::from_mode(0o4755)).unwrap();
    for (binary, effective) in [
        (&file_caps.path, false),
        (&file_caps_effective.path, true),
        (&setuid.path, false),
    ] {
        let script = format!("exec {}", s(binary));
        let mut command = demo(&["-v", "--", "sh", "-c", &script]);
        command.env(ROLE_VAR, "kernel-read");
        let outcome = run_bounded(&mut command, LIMIT);
        if effective && outcome.run.code == Some(126) {
            // The kernel refuses to exec a binary with the effective flag whose file-permitted
            // capabilities the bounding set cannot give (bprm_caps_from_vfs_caps): not regained.
            assert!(
                outcome.run.stderr.contains("ermission denied")
                    || outcome.run.stderr.contains("not permitted"),
                "{outcome:#?}"
            );
            continue;
        }
        outcome.assert_code(0);
        assert_confined_caps(&outcome.run.stdout, &outcome);
        for program in ["current_task", "probe_read_kernel", "exploit"] {
            assert_not_loaded(&outcome, program);
        }
    }
}

/// Caps in a child user namespace count nowhere above it: after unshare(CLONE_NEWUSER) the
/// token (of the parent namespace) gives nothing. Holds on the kernel whatever the launcher does.
fn a_nested_user_namespace_gets_no_rights_through_the_token() {
    let _host = shared();
    let mut command = demo_attack(&["-v"], "kernel-read");
    command.env(NESTED_VAR, "1");
    let outcome = run_bounded(&mut command, LIMIT);
    outcome.assert_code(0);
    // A sandbox that refuses nested user namespaces altogether passes too.
    assert!(
        outcome.run.stdout.contains("nested user namespace: "),
        "{outcome:#?}"
    );
    for program in ["current_task", "probe_read_kernel", "exploit"] {
        assert_not_loaded(&outcome, program);
    }
}

fn perfmon_program_types_without_the_opt_in_are_refused_before_forking() {
    let _host = shared();
    for program_type in ["raw_tracepoint", "kprobe", "tracing"] {
        let outcome = run_bounded(
            &mut demo(&["-v", "--delegate-progs", program_type, "--", "true"]),
            LIMIT,
        );
        outcome.assert_refused_before_forking();
        assert!(
            outcome.run.stderr.contains(program_type)
                && outcome.run.stderr.contains("--cap-add perfmon"),
            "the refusal must name {program_type} and --cap-add perfmon: {outcome:#?}"
        );
    }
    // With the opt-in, the same delegation runs.
    let outcome = run_bounded(
        &mut demo(&[
            "-v",
            "--delegate-progs",
            "raw_tracepoint",
            "--cap-add",
            "perfmon",
            "--",
            "true",
        ]),
        LIMIT,
    );
    outcome.assert_code(0);
}

fn delegate_progs_any_is_allowed_with_a_warning() {
    let _host = shared();
    let outcome = run_bounded(&mut demo(&["--delegate-progs", "any", "--", "true"]), LIMIT);
    outcome.assert_code(0);
    assert!(
        lower(&outcome.run.stderr).contains("perfmon"),
        "`any` must warn that the tracing types need --cap-add perfmon: {outcome:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Terminal injection.

/// A pseudo-terminal pair, both ends close-on-exec and not our controlling terminal.
struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
}

impl Pty {
    fn open() -> Self {
        // SAFETY: plain system calls on descriptors owned below.
        unsafe {
            let master = libc::open(
                c"/dev/ptmx".as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            );
            assert!(
                master >= 0,
                "open /dev/ptmx: {}",
                std::io::Error::last_os_error()
            );
            let master = OwnedFd::from_raw_fd(master);
            let unlock: libc::c_int = 0;
            assert_eq!(
                libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK as _, &unlock),
                0,
                "unlockpt"
            );
            let slave = libc::ioctl(
                master.as_raw_fd(),
                libc::TIOCGPTPEER as _,
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            );
            assert!(
                slave >= 0,
                "TIOCGPTPEER: {}",
                std::io::Error::last_os_error()
            );
            let slave = OwnedFd::from_raw_fd(slave);
            // Raw: the input queue then holds exactly the bytes pushed into it, and nothing
            // typed is echoed.
            let mut termios: libc::termios = std::mem::zeroed();
            assert_eq!(libc::tcgetattr(slave.as_raw_fd(), &mut termios), 0);
            libc::cfmakeraw(&mut termios);
            assert_eq!(
                libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &termios),
                0
            );
            Self { master, slave }
        }
    }

    /// The bytes waiting in the terminal's input queue (what a shell reading it would get).
    fn pending_input(&self) -> Vec<u8> {
        let mut count: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        let ret = unsafe { libc::ioctl(self.slave.as_raw_fd(), libc::FIONREAD as _, &mut count) };
        assert_eq!(ret, 0, "FIONREAD: {}", std::io::Error::last_os_error());
        let mut buf = vec![0u8; usize::try_from(count).unwrap()];
        if !buf.is_empty() {
            // SAFETY: reading into a buffer of the given size.
            let n =
                unsafe { libc::read(self.slave.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            buf.truncate(usize::try_from(n).unwrap_or(0));
        }
        buf
    }

    /// Reads the master side until `stop` is set, so the program never blocks writing to the
    /// terminal; returns what it wrote.
    fn drain(&self, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<String> {
        let master = self.master.try_clone().expect("dup master");
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let mut pfd = libc::pollfd {
                    fd: master.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one pollfd.
                let ready = unsafe { libc::poll(&mut pfd, 1, 50) };
                if ready > 0 && pfd.revents & libc::POLLIN != 0 {
                    // SAFETY: reading into buf.
                    let n = unsafe {
                        libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                    };
                    if n > 0 {
                        out.extend_from_slice(&buf[..n as usize]);
                        continue;
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    return String::from_utf8_lossy(&out).into_owned();
                }
            }
        })
    }

    /// Makes the slave the program's stdin, stdout, stderr and controlling terminal, in a new
    /// session, as a login shell's terminal is.
    fn attach(&self, command: &mut Command) {
        let stdio = || Stdio::from(self.slave.try_clone().expect("dup slave"));
        command.stdin(stdio()).stdout(stdio()).stderr(stdio());
        // SAFETY: setsid and ioctl are async-signal-safe; std has already placed the slave on
        // 0, 1 and 2 when pre-exec hooks run.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// Runs the `tty` role under `pty` with `options`; returns its report, the terminal's output,
/// and how the run ended.
fn run_tty_role(pty: &Pty, options: &[&str]) -> (BTreeMap<String, String>, String, Option<i32>) {
    let stop = Arc::new(AtomicBool::new(false));
    let scratch = Scratch::new("tty", 0o1777);
    let report = scratch.path("report");
    let mut with_trace = vec!["-v"];
    with_trace.extend_from_slice(options);
    let mut command = demo_attack(&with_trace, "tty");
    command.env(REPORT_VAR, &report);
    pty.attach(&mut command);
    let drain = pty.drain(Arc::clone(&stop));
    let mounts_before = support::host_mounts();
    let child = command.spawn().expect("spawn");
    let Waited {
        status, timed_out, ..
    } = wait_bounded(child, LIMIT);
    drop(command);
    stop.store(true, Ordering::Relaxed);
    let terminal = drain.join().expect("drain thread");
    let run = Run {
        code: status.code(),
        stdout: String::new(),
        stderr: terminal.clone(),
    };
    support::assert_host_clean(&mounts_before, &run);
    assert!(!timed_out, "the run hung; terminal:\n{terminal}");
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "no report from the tty role ({e}); the run exited {:?}; terminal:\n{terminal}",
            status.code()
        )
    });
    let map = text
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (map, terminal, status.code())
}

fn tiocsti_and_tioclinux_are_refused_under_a_real_pty() {
    let _host = shared();
    let pty = Pty::open();
    let (report, terminal, code) = run_tty_role(&pty, &[]);
    let injected = pty.pending_input();
    let context = format!(
        "exit {code:?}\nreport: {report:#?}\ninput queue: {:?}\nterminal:\n{terminal}",
        String::from_utf8_lossy(&injected)
    );
    assert_eq!(code, Some(0), "{context}");
    // The setup is right: the pty is the command's controlling terminal, and ioctls on it work.
    assert_eq!(
        report.get("dev_tty").map(String::as_str),
        Some("ok"),
        "{context}"
    );
    assert_eq!(
        report.get("stdin_is_ctty").map(String::as_str),
        Some("ok"),
        "{context}"
    );
    assert_eq!(
        report.get("TIOCGWINSZ").map(String::as_str),
        Some("ok"),
        "{context}"
    );
    for key in ["TIOCSTI", "TIOCSTI|1<<32", "TIOCLINUX", "TIOCLINUX|1<<32"] {
        assert_eq!(
            report.get(key).map(String::as_str),
            Some("EPERM"),
            "{key} must fail with EPERM: {context}"
        );
    }
    assert!(
        injected.is_empty(),
        "bytes were pushed into the terminal's input: {context}"
    );
}

fn new_session_detaches_the_command_from_the_terminal() {
    let _host = shared();
    // Control: without the option, the command shares the caller's terminal.
    let pty = Pty::open();
    let (report, terminal, code) = run_tty_role(&pty, &[]);
    assert_eq!(code, Some(0), "{report:#?}\n{terminal}");
    for key in ["dev_tty", "stdin_is_ctty"] {
        assert_eq!(
            report.get(key).map(String::as_str),
            Some("ok"),
            "{report:#?}\n{terminal}"
        );
    }
    let _ = pty.pending_input();
    let pty = Pty::open();
    let (report, terminal, code) = run_tty_role(&pty, &["--new-session"]);
    assert_eq!(code, Some(0), "{report:#?}\n{terminal}");
    assert_eq!(
        report.get("dev_tty").map(String::as_str),
        Some("ENXIO"),
        "with --new-session /dev/tty must not open: {report:#?}\n{terminal}"
    );
    assert_eq!(
        report.get("stdin_is_ctty").map(String::as_str),
        Some("ENOTTY"),
        "{report:#?}\n{terminal}"
    );
    assert!(pty.pending_input().is_empty(), "{report:#?}\n{terminal}");
}

/// A tmux server of its own, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    const SESSION: &str = "attacks";

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.socket, "-f", "/dev/null"]);
        command
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        let out = self
            .command()
            .args([
                "capture-pane",
                "-p",
                "-J",
                "-S",
                "-500",
                "-t",
                Self::SESSION,
            ])
            .output()
            .expect("run tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn type_line(&self, text: &str) {
        self.run(&["send-keys", "-t", Self::SESSION, "-l", text]);
        self.run(&["send-keys", "-t", Self::SESSION, "Enter"]);
    }

    fn key(&self, key: &str) {
        self.run(&["send-keys", "-t", Self::SESSION, key]);
    }

    /// Polls until `ready` holds (at most 10 s), panicking with the screen otherwise.
    fn wait(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pane_pid(&self) -> i32 {
        self.run(&["display-message", "-p", "-t", Self::SESSION, "#{pane_pid}"])
            .trim()
            .parse()
            .expect("pane pid")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
    }
}

/// The state letter (`S`, `T`, ...) of each `sleep` process under `pid`.
fn sleeps_under(pid: i32) -> Vec<(i32, char)> {
    support::descendants(pid)
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep")
        })
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some((p, state))
        })
        .collect()
}

fn wait_until(what: &str, screen: impl Fn() -> String, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; screen:\n{}",
            screen()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn an_interactive_shell_keeps_job_control_under_tmux() {
    const PROMPT: &str = "attack-prompt> ";
    let _host = shared();
    let mounts_before = support::host_mounts();
    let scratch = Scratch::new("tmux", 0o755);
    let status_file = scratch.path("status");
    let tmux = Tmux {
        socket: format!("token-attacks-{}", std::process::id()),
    };
    let script = format!(
        "PS1='{PROMPT}' {DEMO} -- bash --norc --noprofile; echo $? > {}; exec sleep 60",
        s(&status_file)
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        Tmux::SESSION,
        "-x",
        "150",
        "-y",
        "50",
        "-c",
        "/",
        &script,
    ]);
    let pane = tmux.pane_pid();
    let prompts = |screen: &str| screen.lines().filter(|l| l.starts_with(PROMPT)).count();
    tmux.wait("the first prompt", |s| prompts(s) >= 1);

    tmux.type_line("echo hello-$((6*7))");
    tmux.wait("echo's output", |s| s.lines().any(|l| l == "hello-42"));

    // Ctrl-C interrupts the foreground job; the prompt comes back.
    let before = prompts(&tmux.screen());
    tmux.type_line("sleep 100");
    wait_until(
        "sleep to run",
        || tmux.screen(),
        || sleeps_under(pane).iter().any(|&(_, st)| st == 'S'),
    );
    let started = Instant::now();
    tmux.key("C-c");
    tmux.wait("the prompt after Ctrl-C", |s| prompts(s) > before);
    assert!(started.elapsed() < Duration::from_secs(10));
    wait_until(
        "sleep to die",
        || tmux.screen(),
        || sleeps_under(pane).is_empty(),
    );

    // Ctrl-Z stops it, fg resumes it.
    let before = prompts(&tmux.screen());
    tmux.type_line("sleep 100");
    wait_until(
        "sleep to run",
        || tmux.screen(),
        || sleeps_under(pane).iter().any(|&(_, st)| st == 'S'),
    );
    tmux.key("C-z");
    tmux.wait("the prompt after Ctrl-Z", |s| prompts(s) > before);
    wait_until(
        "sleep to stop",
        || tmux.screen(),
        || sleeps_under(pane).iter().any(|&(_, st)| st == 'T'),
    );
    assert!(tmux.screen().contains("Stopped"), "{}", tmux.screen());
    let before = prompts(&tmux.screen());
    tmux.type_line("fg");
    wait_until(
        "sleep to resume",
        || tmux.screen(),
        || sleeps_under(pane).iter().any(|&(_, st)| st == 'S'),
    );
    tmux.key("C-c");
    tmux.wait("the prompt after fg and Ctrl-C", |s| prompts(s) > before);
    tmux.type_line("echo after-$((1+1))");
    tmux.wait("the shell to answer", |s| s.lines().any(|l| l == "after-2"));

    tmux.type_line("exit 3");
    wait_until(
        "the supervisor to exit",
        || tmux.screen(),
        || std::fs::read_to_string(&status_file).is_ok_and(|t| t.ends_with('\n')),
    );
    let status = std::fs::read_to_string(&status_file).unwrap();
    let screen = tmux.screen();
    assert_eq!(status.trim(), "3", "screen:\n{screen}");
    drop(tmux);
    let run = Run {
        code: status.trim().parse().ok(),
        stdout: screen,
        stderr: String::new(),
    };
    support::assert_host_clean(&mounts_before, &run);
}

// ---------------------------------------------------------------------------------------------
// 3. Leaked descriptors.

/// The caller's secrets, opened by root and left inheritable on 7 (a 0600 file), 8 (`/`) and 9
/// (a writable 0600 file).
struct CallerFds {
    _scratch: Scratch,
    secret: String,
    writable: PathBuf,
    fds: Vec<OwnedFd>,
}

impl CallerFds {
    fn open() -> Self {
        use std::os::unix::fs::OpenOptionsExt as _;
        let scratch = Scratch::new("fds", 0o700);
        let secret = format!("root-only-secret-{}", std::process::id());
        let secret_path = scratch.path("secret");
        let writable = scratch.path("writable");
        for path in [&secret_path, &writable] {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .unwrap();
        }
        std::fs::write(&secret_path, &secret).unwrap();
        let read = std::fs::File::open(&secret_path).unwrap();
        let root = std::fs::File::open("/").unwrap();
        let write = std::fs::OpenOptions::new()
            .write(true)
            .open(&writable)
            .unwrap();
        Self {
            _scratch: scratch,
            secret,
            writable,
            fds: vec![read.into(), root.into(), write.into()],
        }
    }

    fn pass(&self, command: &mut Command) -> Vec<OwnedFd> {
        self.fds
            .iter()
            .zip([7, 8, 9])
            .map(|(fd, target)| pass_fd(command, fd, target))
            .collect()
    }
}

/// The `fds:` line of the fds role: the descriptors open in the command.
fn open_fds(stdout: &str) -> Option<Vec<i32>> {
    let line = stdout.lines().find_map(|l| l.strip_prefix("fds:"))?;
    Some(
        line.split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect(),
    )
}

fn the_callers_descriptors_are_closed_before_the_command_runs() {
    let _host = shared();
    let caller = CallerFds::open();
    let mut command = demo_attack(&["-v"], "fds");
    let _kept = caller.pass(&mut command);
    let outcome = run_bounded(&mut command, LIMIT);
    outcome.assert_code(0);
    assert_eq!(
        open_fds(&outcome.run.stdout),
        Some(vec![0, 1, 2]),
        "the command must see only 0, 1, 2: {outcome:#?}"
    );
    assert!(
        !outcome.run.stdout.contains(&caller.secret),
        "the command read the root-only secret: {outcome:#?}"
    );
    assert_eq!(
        std::fs::read_to_string(&caller.writable).unwrap(),
        "",
        "the command wrote into the caller's file: {outcome:#?}"
    );
    // The same with a shell listing its own descriptors.
    let mut command = demo(&["-v", "--", "ls", "/proc/self/fd"]);
    let _kept = caller.pass(&mut command);
    let outcome = run_bounded(&mut command, LIMIT);
    outcome.assert_code(0);
    let listed: Vec<&str> = outcome.run.stdout.split_whitespace().collect();
    // ls's own directory descriptor is the one extra entry.
    assert_eq!(listed, ["0", "1", "2", "3"], "{outcome:#?}");
}

fn preserve_fd_passes_exactly_that_descriptor() {
    let _host = shared();
    let caller = CallerFds::open();
    let mut command = demo_attack(&["-v", "--preserve-fd", "7"], "fds");
    let _kept = caller.pass(&mut command);
    let outcome = run_bounded(&mut command, LIMIT);
    outcome.assert_code(0);
    assert_eq!(
        open_fds(&outcome.run.stdout),
        Some(vec![0, 1, 2, 7]),
        "--preserve-fd 7 passes 7 and only 7: {outcome:#?}"
    );
    assert!(
        outcome
            .run
            .stdout
            .contains(&format!("read 7: {}", caller.secret)),
        "the preserved descriptor must be usable: {outcome:#?}"
    );
}

fn the_json_status_descriptor_is_not_passed_to_the_command() {
    let _host = shared();
    let scratch = Scratch::new("status-fd", 0o700);
    let status_path = scratch.path("status.json");
    let status: OwnedFd = std::fs::File::create(&status_path).unwrap().into();
    let mut command = demo_attack(&["-v", "--json-status", "5"], "fds");
    let _kept = pass_fd(&mut command, &status, 5);
    let outcome = run_bounded(&mut command, LIMIT);
    outcome.assert_code(0);
    let fds = open_fds(&outcome.run.stdout).expect("the fds line");
    assert!(
        !fds.contains(&5),
        "the status descriptor reached the command: {outcome:#?}"
    );
    let events = std::fs::read_to_string(&status_path).unwrap();
    assert!(events.contains("\"exited\""), "{events}\n{outcome:#?}");
}

// ---------------------------------------------------------------------------------------------
// 4. Setup stall.

fn a_sandbox_stopped_during_setup_still_times_out_with_124() {
    use std::io::BufRead as _;
    let _host = shared();
    let scratch = Scratch::new("stall", 0o1777);
    let mut history = Vec::new();
    for attempt in 0..10 {
        let marker = scratch.path(&format!("ran-{attempt}"));
        let mounts_before = support::host_mounts();
        let mut command = demo(&["-v", "--timeout", "1", "--", "touch", s(&marker)]);
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command.spawn().expect("spawn");
        let stderr = child.stderr.take().unwrap();
        // Stops the sandbox the moment the supervisor names it, from the reading thread.
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut trace = String::new();
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(pid) = line.split("sandbox child pid ").nth(1)
                    && let Ok(pid) = pid.trim().parse::<i32>()
                {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
                    let _ = tx.send(pid);
                }
                trace.push_str(&line);
                trace.push('\n');
            }
            trace
        });
        let Waited {
            status, timed_out, ..
        } = wait_bounded(child, Duration::from_secs(6));
        let elapsed = started.elapsed();
        let sandbox = rx.try_recv().ok();
        if let Some(pid) = sandbox {
            // Stopped before it set its parent-death signal, it would outlive the supervisor.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let trace = reader.join().unwrap();
        let run = Run {
            code: status.code(),
            stdout: String::new(),
            stderr: trace,
        };
        support::assert_host_clean(&mounts_before, &run);
        let ran = marker.exists();
        let summary = format!(
            "attempt {attempt}: stopped {sandbox:?}, command ran: {ran}, timed out: {timed_out}, {elapsed:?}\n{run:#?}"
        );
        assert!(sandbox.is_some(), "no sandbox pid in the trace: {summary}");
        assert!(
            !timed_out,
            "the supervisor hung after its sandbox was stopped during setup (--timeout 1): {summary}"
        );
        if ran {
            // The stop came after the setup: not the case under test, try again.
            history.push(summary);
            continue;
        }
        assert_eq!(run.code, Some(124), "{summary}");
        assert!(elapsed < Duration::from_secs(3), "{summary}");
        return;
    }
    panic!(
        "the stop never landed during the setup in 10 attempts:\n{}",
        history.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Working directory.

fn an_unreachable_working_directory_falls_back_to_root() {
    let _host = shared();
    let locked = Scratch::new("cwd", 0o700);
    let secret_dir = locked.path("secret");
    std::fs::create_dir(&secret_dir).unwrap();
    std::fs::set_permissions(&secret_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let contents = format!("cwd-secret-{}", std::process::id());
    std::fs::write(secret_dir.join("file"), &contents).unwrap();
    std::fs::set_permissions(
        secret_dir.join("file"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let mut command = demo(&["-v", "--", "sh", "-c", "pwd; cat ./file"]);
    command.current_dir(&secret_dir);
    let outcome = run_bounded(&mut command, LIMIT);
    assert!(
        !outcome.run.stdout.contains(&contents),
        "the command read a file through the inherited working directory: {outcome:#?}"
    );
    assert_eq!(
        outcome.run.stdout.lines().next(),
        Some("/"),
        "the command must start in /: {outcome:#?}"
    );
    assert_ne!(
        outcome.run.code,
        Some(0),
        "cat ./file must fail: {outcome:#?}"
    );
    let stderr = lower(&outcome.run.stderr);
    assert!(
        outcome.run.stderr.contains(s(&secret_dir))
            && (stderr.contains("working directory") || stderr.contains("cwd")),
        "a warning must name the directory it could not keep: {outcome:#?}"
    );
    // Control: a reachable directory is kept.
    let open = Scratch::new("cwd-open", 0o755);
    let mut command = demo(&["-v", "--", "pwd"]);
    command.current_dir(&open.0);
    let outcome = run_bounded(&mut command, LIMIT);
    outcome.assert_code(0);
    assert_eq!(outcome.run.stdout.trim_end(), s(&open.0), "{outcome:#?}");
}

// ---------------------------------------------------------------------------------------------
// 6. Identity.

/// The (uid, gid) the sandbox's root maps to, from the command's own id maps.
fn mapped_ids(outcome: &Outcome) -> (u32, u32) {
    let lines: Vec<Vec<u32>> = outcome
        .run
        .stdout
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .collect();
    match lines.as_slice() {
        [uid, gid] if uid.len() == 3 && gid.len() == 3 && uid[0] == 0 && gid[0] == 0 => {
            (uid[1], gid[1])
        }
        _ => panic!("unexpected id maps: {outcome:#?}"),
    }
}

/// Without `-v`: stderr then holds only warnings and errors.
fn id_map_command(options: &[&str]) -> Command {
    let mut args = options.to_vec();
    args.extend(["--", "cat", "/proc/self/uid_map", "/proc/self/gid_map"]);
    let mut command = demo(&args);
    command.env_remove("SUDO_UID").env_remove("SUDO_GID");
    command
}

fn sudo_uid_0_does_not_map_the_sandbox_to_host_root() {
    let _host = shared();
    let mut command = id_map_command(&[]);
    command.env("SUDO_UID", "0").env("SUDO_GID", "0");
    let outcome = run_bounded(&mut command, LIMIT);
    outcome.assert_code(0);
    let (uid, gid) = mapped_ids(&outcome);
    assert_ne!(
        uid, 0,
        "SUDO_UID=0 mapped the sandbox to host root: {outcome:#?}"
    );
    assert_ne!(
        gid, 0,
        "SUDO_GID=0 mapped the sandbox to host group 0: {outcome:#?}"
    );
}

fn the_default_identity_is_a_transient_uid_and_gid() {
    let _host = shared();
    let outcome = run_bounded(&mut id_map_command(&[]), LIMIT);
    outcome.assert_code(0);
    let expected = TRANSIENT_ID_BASE + outcome.pid;
    assert_eq!(
        mapped_ids(&outcome),
        (expected, expected),
        "the default must be 0x70000000 + the supervisor's pid {}: {outcome:#?}",
        outcome.pid
    );
}

fn explicit_uid_0_and_gid_0_work_with_a_warning() {
    let _host = shared();
    let outcome = run_bounded(&mut id_map_command(&["--uid", "0", "--gid", "1000"]), LIMIT);
    outcome.assert_code(0);
    assert_eq!(mapped_ids(&outcome).0, 0, "{outcome:#?}");
    assert!(
        outcome.run.stderr.contains("uid 0"),
        "--uid 0 must warn: {outcome:#?}"
    );
    let outcome = run_bounded(&mut id_map_command(&["--uid", "1000", "--gid", "0"]), LIMIT);
    outcome.assert_code(0);
    assert_eq!(mapped_ids(&outcome).1, 0, "{outcome:#?}");
    assert!(
        outcome.run.stderr.contains("gid 0"),
        "--gid 0 must warn: {outcome:#?}"
    );
}

fn a_system_group_warns_by_name() {
    let _host = shared();
    let groups = std::fs::read_to_string("/etc/group").unwrap();
    let named: Vec<(String, String)> = groups
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(':').collect();
            let (name, gid) = (*fields.first()?, *fields.get(2)?);
            ["shadow", "disk"]
                .contains(&name)
                .then(|| (name.to_owned(), gid.to_owned()))
        })
        .collect();
    assert!(!named.is_empty(), "neither shadow nor disk in /etc/group");
    for (name, gid) in named {
        let outcome = run_bounded(
            &mut id_map_command(&["--uid", "1000", "--gid", &gid]),
            LIMIT,
        );
        outcome.assert_code(0);
        assert!(
            outcome.run.stderr.contains(&name),
            "--gid {gid} must warn naming the group {name}: {outcome:#?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Policy files.

const POLICY: &str = "cmds = \"map_create:prog_load:btf_load\"\nmaps = \"array\"\nprogs = \"xdp\"\nattachs = \"xdp\"\n";

/// A policy run, bounded in time and (so /dev/zero cannot exhaust the host) in address space.
fn policy_run(flag: &str, path: &Path) -> Outcome {
    let mut command = demo(&["-v", flag, s(path), "--", "true"]);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 1 << 30,
                rlim_max: 1 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    run_bounded(&mut command, Duration::from_secs(10))
}

fn assert_policy_refused(flag: &str, path: &Path, what: &str) -> Outcome {
    let outcome = policy_run(flag, path);
    assert!(!outcome.timed_out, "{flag} {what} hung: {outcome:#?}");
    outcome.assert_refused_before_forking();
    assert!(
        outcome.run.stderr.contains(s(path)),
        "the message must name {}: {outcome:#?}",
        path.display()
    );
    // Refused before reading it: not after reading /dev/zero until memory ran out.
    assert!(
        outcome.max_rss_kib < 128 * 1024,
        "{flag} {what} made the supervisor use {} MiB: {outcome:#?}",
        outcome.max_rss_kib / 1024
    );
    outcome
}

fn a_fifo_policy_file_is_refused_quickly() {
    let _host = shared();
    let scratch = Scratch::new("fifo", 0o700);
    let fifo = scratch.path("policy.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for flag in ["--policy", "--policy-from"] {
        assert_policy_refused(flag, &fifo, "a FIFO");
    }
}

fn dev_zero_as_a_policy_file_is_refused_quickly() {
    let _host = shared();
    for flag in ["--policy", "--policy-from"] {
        assert_policy_refused(flag, Path::new("/dev/zero"), "/dev/zero");
    }
}

fn a_directory_as_a_policy_file_is_refused() {
    let _host = shared();
    let scratch = Scratch::new("policy-dir", 0o700);
    for flag in ["--policy", "--policy-from"] {
        assert_policy_refused(flag, &scratch.0, "a directory");
    }
}

fn a_symlinked_policy_file_is_refused() {
    let _host = shared();
    let scratch = Scratch::new("policy-link", 0o755);
    let policy = scratch.path("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let object = scratch.path("counter.o");
    std::fs::write(&object, bpf_token_launcher::counter::COUNTER_OBJECT).unwrap();
    for (flag, target) in [("--policy", &policy), ("--policy-from", &object)] {
        // Control: the file itself is accepted.
        let outcome = policy_run(flag, target);
        outcome.assert_code(0);
        let link = scratch.path(&format!("link{flag}"));
        std::os::unix::fs::symlink(target, &link).unwrap();
        let outcome = assert_policy_refused(flag, &link, "a symlink");
        let stderr = lower(&outcome.run.stderr);
        assert!(
            stderr.contains("symlink") || stderr.contains("symbolic link"),
            "the refusal must say it is a symbolic link: {outcome:#?}"
        );
    }
}

fn a_policy_file_over_the_size_limit_is_refused() {
    use std::io::Write as _;
    let _host = shared();
    let scratch = Scratch::new("policy-size", 0o700);
    // A valid policy padded with a comment to one byte over 1 MiB.
    let policy = scratch.path("big.toml");
    let mut file = std::fs::File::create(&policy).unwrap();
    file.write_all(POLICY.as_bytes()).unwrap();
    let padding = (1 << 20) + 1 - POLICY.len() - 2;
    file.write_all(b"#").unwrap();
    file.write_all(&vec![b'x'; padding]).unwrap();
    file.write_all(b"\n").unwrap();
    drop(file);
    assert_eq!(std::fs::metadata(&policy).unwrap().len(), (1 << 20) + 1);
    // A valid object with a sparse tail to one byte over 256 MiB (ELF parsers ignore the tail).
    let object = scratch.path("big.o");
    std::fs::write(&object, bpf_token_launcher::counter::COUNTER_OBJECT).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&object)
        .unwrap()
        .set_len((256 << 20) + 1)
        .unwrap();
    for (flag, path) in [("--policy", &policy), ("--policy-from", &object)] {
        assert_policy_refused(flag, path, "an oversized file");
    }
}

// ---------------------------------------------------------------------------------------------
// 8. --json-status.

fn an_unusable_json_status_descriptor_is_refused_before_forking() {
    let _host = shared();
    let scratch = Scratch::new("status-ro", 0o700);
    let file = scratch.path("status.json");
    std::fs::write(&file, "").unwrap();
    let read_only: OwnedFd = std::fs::File::open(&file).unwrap().into();
    let directory: OwnedFd = std::fs::File::open(&scratch.0).unwrap().into();
    for (what, fd) in [
        ("a read-only descriptor", &read_only),
        ("a directory", &directory),
    ] {
        let mut command = demo(&["-v", "--json-status", "3", "--", "true"]);
        let _kept = pass_fd(&mut command, fd, 3);
        let outcome = run_bounded(&mut command, LIMIT);
        assert!(
            outcome.run.code == Some(2) && outcome.run.child_pid().is_none(),
            "--json-status on {what} must be refused before forking: {outcome:#?}"
        );
        outcome.assert_refused_before_forking();
    }
}

fn a_full_json_status_pipe_does_not_block_the_run() {
    let _host = shared();
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    // Filled while non-blocking, then made blocking again: the open file description (and its
    // flags) is what the supervisor inherits.
    let set_nonblocking = |on: bool| {
        // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(write_end.as_raw_fd(), libc::F_GETFL);
            let flags = if on {
                flags | libc::O_NONBLOCK
            } else {
                flags & !libc::O_NONBLOCK
            };
            assert_eq!(libc::fcntl(write_end.as_raw_fd(), libc::F_SETFL, flags), 0);
        }
    };
    set_nonblocking(true);
    for chunk in [4096, 1] {
        let buf = vec![b'x'; chunk];
        while nix::unistd::write(&write_end, &buf).is_ok() {}
    }
    set_nonblocking(false);
    let mut command = demo(&["-v", "--json-status", "3", "--", "sh", "-c", "exit 7"]);
    let _kept = pass_fd(&mut command, &write_end, 3);
    let outcome = run_bounded(&mut command, Duration::from_secs(6));
    drop(read_end);
    assert!(
        !outcome.timed_out,
        "a full --json-status pipe blocked the run: {outcome:#?}"
    );
    outcome.assert_code(7);
    assert!(outcome.elapsed < Duration::from_secs(4), "{outcome:#?}");
}

fn the_exited_event_names_the_signal() {
    let _host = shared();
    let scratch = Scratch::new("status-signal", 0o700);
    let path = scratch.path("status.json");
    let file: OwnedFd = std::fs::File::create(&path).unwrap().into();
    let mut command = demo(&[
        "-v",
        "--json-status",
        "3",
        "--",
        "sh",
        "-c",
        "kill -TERM $$",
    ]);
    let _kept = pass_fd(&mut command, &file, 3);
    let outcome = run_bounded(&mut command, LIMIT);
    outcome.assert_code(143);
    let text = std::fs::read_to_string(&path).unwrap();
    let exited = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "exited")
        .unwrap_or_else(|| panic!("no exited event in {text:?}: {outcome:#?}"));
    assert_eq!(exited["signal"], "SIGTERM", "{text}\n{outcome:#?}");
    assert_eq!(exited["exit_code"], 143, "{text}\n{outcome:#?}");
}

// ---------------------------------------------------------------------------------------------
// 9. Panics.

fn assert_short_error(outcome: &Outcome) {
    outcome.assert_no_panic();
    assert!(
        outcome.run.stderr.lines().count() <= 2,
        "expected a one-line error: {outcome:#?}"
    );
}

fn stdout_on_dev_full_does_not_panic() {
    let _host = shared();
    for args in [&[][..], &["--check"][..]] {
        let mut command = demo(args);
        command.stdout(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        );
        let outcome = run_bounded_with(&mut command, LIMIT);
        assert_short_error(&outcome);
        assert_ne!(
            outcome.run.code,
            Some(0),
            "a report that could not be written is an error: {outcome:#?}"
        );
    }
}

fn stdout_on_a_closed_pipe_does_not_panic() {
    let _host = shared();
    for args in [&[][..], &["--check"][..]] {
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        drop(read_end);
        let mut command = demo(args);
        command.stdout(Stdio::from(write_end));
        let outcome = run_bounded_with(&mut command, LIMIT);
        assert_short_error(&outcome);
    }
}

fn an_out_of_range_timeout_is_refused() {
    let _host = shared();
    let outcome = run_bounded(&mut demo(&["-v", "--timeout", "1e19", "--", "true"]), LIMIT);
    outcome.assert_no_panic();
    outcome.assert_refused_before_forking();
    assert!(outcome.run.stderr.contains("timeout"), "{outcome:#?}");
}

// ---------------------------------------------------------------------------------------------
// 10. Misleading errors.

fn a_missing_command_behind_an_unreadable_path_directory_is_127() {
    let _host = shared();
    let scratch = Scratch::new("path", 0o755);
    let locked = scratch.path("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = format!("{}:/usr/bin:/bin", s(&locked));
    let mut command = demo(&["-v", "--", "token-attacks-no-such-command"]);
    command.env("PATH", &path);
    let outcome = run_bounded(&mut command, LIMIT);
    outcome.assert_code(127);
    assert!(
        lower(&outcome.run.stderr).contains("not found"),
        "{outcome:#?}"
    );
    // Control: a command that exists is still found past the locked directory.
    let mut command = demo(&["-v", "--", "true"]);
    command.env("PATH", &path);
    run_bounded(&mut command, LIMIT).assert_code(0);
}

fn too_few_descriptors_is_reported_as_emfile() {
    let _host = shared();
    let mut command = Command::new("sh");
    command
        .args(["-c", "ulimit -n 3 && exec \"$0\" -v -- true", DEMO])
        .current_dir("/")
        .stdin(Stdio::null());
    let outcome = run_bounded(&mut command, LIMIT);
    outcome.assert_no_panic();
    assert_ne!(outcome.run.code, Some(0), "{outcome:#?}");
    let stderr = lower(&outcome.run.stderr);
    // EMFILE by name, as glibc's or musl's strerror words it, or by number.
    assert!(
        [
            "emfile",
            "too many open files",
            "no file descriptors available",
            "os error 24",
        ]
        .iter()
        .any(|cause| stderr.contains(cause)),
        "the error must name the cause (EMFILE): {outcome:#?}"
    );
    assert!(
        !stderr.contains("unknown number of threads"),
        "{outcome:#?}"
    );
}

fn dangerous_bpffs_paths_are_refused_before_forking() {
    let _host = shared();
    let scratch = Scratch::new("bpffs-path", 0o755);
    let dir = scratch.path("dir");
    std::fs::create_dir(&dir).unwrap();
    let link = scratch.path("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    let dotdot = format!("{}/..", s(&dir));
    // Control: a plain directory is accepted.
    run_bounded(
        &mut demo(&["-v", "--bpffs-path", s(&dir), "--", "true"]),
        LIMIT,
    )
    .assert_code(0);
    for path in ["/", s(&link), &dotdot, "/proc", "/dev"] {
        let outcome = run_bounded(
            &mut demo(&["-v", "--bpffs-path", path, "--", "true"]),
            LIMIT,
        );
        assert!(
            outcome.run.code == Some(2) && outcome.run.child_pid().is_none(),
            "--bpffs-path {path} must be refused before forking: {outcome:#?}"
        );
        outcome.assert_refused_before_forking();
        assert!(outcome.run.stderr.contains("--bpffs-path"), "{outcome:#?}");
    }
}

fn an_empty_command_after_double_dash_is_refused() {
    let _host = shared();
    let outcome = run_bounded(&mut demo(&["-v", "--"]), LIMIT);
    outcome.assert_refused_before_forking();
}

// ---------------------------------------------------------------------------------------------
// The attack program, run inside the sandbox.

mod roles {
    use std::fmt::Write as _;
    use std::os::fd::{AsFd as _, BorrowedFd};
    use std::process::ExitCode;

    use aya_obj::generated::{bpf_attach_type, bpf_insn, bpf_prog_type};
    use bpf_token_launcher::bpf::token::Token;
    use bpf_token_launcher::sys::Errno;
    use bpf_token_launcher::sys::bpf::{LogBuffer, ProgLoadAttr, prog_load};

    pub fn play(role: &str) -> ExitCode {
        match role {
            "kernel-read" => kernel_read(),
            "tty" => tty(),
            "fds" => fds(),
            "keyring" => keyring(),
            other => {
                eprintln!("attacks: unknown role {other:?}");
                ExitCode::from(64)
            }
        }
    }

    /// The keyring calls, on the session keyring the command would share with its caller:
    /// prints `keyctl=<errno or id>` and `add_key=<errno or id>`.
    fn keyring() -> ExitCode {
        const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
        const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
        let describe = |ret: libc::c_long| {
            if ret < 0 {
                format!("{:?}", Errno::last())
            } else {
                ret.to_string()
            }
        };
        // SAFETY: integer arguments only.
        let id = unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                KEYCTL_GET_KEYRING_ID,
                KEY_SPEC_SESSION_KEYRING,
                0,
            )
        };
        println!("keyctl={}", describe(id));
        // SAFETY: valid NUL-terminated strings and a payload of the given length.
        let added = unsafe {
            libc::syscall(
                libc::SYS_add_key,
                c"user".as_ptr(),
                c"planted-by-sandbox".as_ptr(),
                c"x".as_ptr(),
                1usize,
                KEY_SPEC_SESSION_KEYRING,
            )
        };
        println!("add_key={}", describe(added));
        ExitCode::SUCCESS
    }

    fn print_caps() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        for line in status.lines().filter(|l| l.starts_with("Cap")) {
            println!("{line}");
        }
    }

    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> bpf_insn {
        bpf_insn {
            code,
            _bitfield_align_1: [],
            _bitfield_1: bpf_insn::new_bitfield_1(dst, src),
            off,
            imm,
        }
    }

    const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
    const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
    const MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
    const MOV_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
    const ADD_K: u8 = 0x07; // BPF_ALU64 | BPF_ADD | BPF_K
    const LD_IMM64: u8 = 0x18; // BPF_LD | BPF_IMM | BPF_DW (two instructions)
    const LDX_DW: u8 = 0x79; // BPF_LDX | BPF_MEM | BPF_DW
    const PSEUDO_KFUNC_CALL: u8 = 2;
    const GET_CURRENT_TASK: i32 = 35;
    const PROBE_READ_KERNEL: i32 = 113;
    const XDP_PASS: i32 = 2;

    /// XDP programs: a control without helpers, each kernel-read helper alone, and the
    /// exploit's first step (read 8 bytes of the current task_struct).
    fn programs() -> Vec<(&'static str, Vec<bpf_insn>)> {
        let pass = [insn(MOV_K, 0, 0, 0, XDP_PASS), insn(EXIT, 0, 0, 0, 0)];
        // r1 = fp - 8 (destination), r2 = 8 (size); r3 is the kernel address.
        let read_args = [
            insn(MOV_X, 1, 10, 0, 0),
            insn(ADD_K, 1, 0, 0, -8),
            insn(MOV_K, 2, 0, 0, 8),
        ];
        let call = |helper| insn(CALL, 0, 0, 0, helper);
        let mut current_task = vec![call(GET_CURRENT_TASK)];
        current_task.extend(pass);
        let mut probe_read = read_args.to_vec();
        probe_read.extend([insn(MOV_K, 3, 0, 0, 0), call(PROBE_READ_KERNEL)]);
        probe_read.extend(pass);
        let mut exploit = vec![call(GET_CURRENT_TASK), insn(MOV_X, 3, 0, 0, 0)];
        exploit.extend(read_args);
        exploit.push(call(PROBE_READ_KERNEL));
        exploit.extend(pass);
        let mut programs = vec![
            ("control", pass.to_vec()),
            ("current_task", current_task),
            ("probe_read_kernel", probe_read),
            ("exploit", exploit),
        ];
        // The kfunc bpf_rdonly_cast(addr, 0) gives a `void *` whose loads read kernel memory
        // (Linux 6.17+), with no CAP_PERFMON check: r1 = kernel text, r2 = 0, call, load.
        if let Some(id) = std::env::var("ATTACK_RDONLY_CAST_ID")
            .ok()
            .and_then(|v| v.parse::<i32>().ok())
        {
            let text = 0xffff_ffff_8100_0000_u64;
            let mut cast = vec![
                insn(LD_IMM64, 1, 0, 0, text as u32 as i32),
                insn(0, 0, 0, 0, (text >> 32) as u32 as i32),
                insn(MOV_K, 2, 0, 0, 0),
                insn(CALL, 0, PSEUDO_KFUNC_CALL, 0, id),
                insn(LDX_DW, 0, 0, 0, 0),
            ];
            cast.extend(pass);
            programs.push(("rdonly_cast", cast));
        }
        programs
    }

    fn load(insns: &[bpf_insn], token: BorrowedFd<'_>) -> String {
        let attr = ProgLoadAttr {
            prog_type: bpf_prog_type::BPF_PROG_TYPE_XDP as u32,
            expected_attach_type: bpf_attach_type::BPF_XDP as u32,
            prog_flags: 0,
            name: b"attack",
            insns,
            license: c"GPL",
            kern_version: 0,
            btf: None,
            func_info: &[],
            func_info_cnt: 0,
            func_info_rec_size: 0,
            line_info: &[],
            line_info_cnt: 0,
            line_info_rec_size: 0,
            attach_btf_id: None,
        };
        let mut buf = vec![0u8; 64 * 1024];
        let mut log = LogBuffer {
            level: 1,
            buf: &mut buf,
        };
        match prog_load(&attr, Some(token), Some(&mut log)) {
            Ok(_) => "loaded".to_owned(),
            Err(e) => format!(
                "refused {:?} | {}",
                e.errno,
                log.text().trim().replace('\n', " | ")
            ),
        }
    }

    /// Token from the delegated bpffs, then the kernel-read programs through it.
    fn kernel_read() -> ExitCode {
        print_caps();
        let path = bpf_token_launcher::counter::default_token_path();
        let token = match Token::from_bpffs_path(&path) {
            Ok(token) => {
                println!("token: ok");
                token
            }
            Err(e) => {
                println!("token: failed: {e}");
                return ExitCode::SUCCESS;
            }
        };
        if std::env::var_os(super::NESTED_VAR).is_some() {
            // SAFETY: the role runs single-threaded, as unshare(CLONE_NEWUSER) requires.
            if unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0 {
                println!("nested user namespace: ok");
                print_caps();
            } else {
                println!("nested user namespace: {:?}", Errno::last());
            }
        }
        for (name, insns) in programs() {
            println!("load {name}: {}", load(&insns, token.as_fd()));
        }
        ExitCode::SUCCESS
    }

    fn errno_of(ret: libc::c_long) -> String {
        if ret < 0 {
            format!("{:?}", Errno::last())
        } else {
            "ok".to_owned()
        }
    }

    /// ioctl with a 64-bit request, as a caller of the raw system call may pass it.
    fn ioctl64(fd: i32, request: u64, arg: *const libc::c_void) -> libc::c_long {
        // SAFETY: the requests used here read at most a few bytes from `arg`.
        unsafe { libc::syscall(libc::SYS_ioctl, libc::c_long::from(fd), request, arg) }
    }

    /// Terminal injection from stdin (the caller's terminal): writes a report to
    /// $ATTACK_REPORT.
    fn tty() -> ExitCode {
        let mut report = String::new();
        let dev_tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty");
        let _ = writeln!(
            report,
            "dev_tty: {}",
            dev_tty.map_or_else(
                |e| format!("{:?}", Errno::from_raw(e.raw_os_error().unwrap_or(0))),
                |_| "ok".to_owned()
            )
        );
        // TIOCGSID answers only for the caller's controlling terminal (ENOTTY otherwise).
        let mut sid: libc::pid_t = 0;
        let ret = ioctl64(0, libc::TIOCGSID as u64, (&raw mut sid).cast());
        let _ = writeln!(report, "stdin_is_ctty: {}", errno_of(ret));
        let mut winsize: libc::winsize = unsafe { std::mem::zeroed() };
        let ret = ioctl64(0, libc::TIOCGWINSZ as u64, (&raw mut winsize).cast());
        let _ = writeln!(report, "TIOCGWINSZ: {}", errno_of(ret));
        // Each pushes a command line into the terminal's input; the first result is kept.
        let inject = |request: u64, line: &[u8]| {
            let results: Vec<String> = line
                .iter()
                .map(|byte| errno_of(ioctl64(0, request, std::ptr::from_ref(byte).cast())))
                .collect();
            results[0].clone()
        };
        let tiocsti = libc::TIOCSTI as u64;
        let _ = writeln!(report, "TIOCSTI: {}", inject(tiocsti, b"id\n"));
        let _ = writeln!(
            report,
            "TIOCSTI|1<<32: {}",
            inject(tiocsti | (1 << 32), b"hi\n")
        );
        // TIOCL_GETSHIFTSTATE: harmless, and on a pty the kernel would answer ENOTTY.
        let subcode = [6u8, 0];
        let tioclinux = libc::TIOCLINUX as u64;
        let _ = writeln!(
            report,
            "TIOCLINUX: {}",
            errno_of(ioctl64(0, tioclinux, subcode.as_ptr().cast()))
        );
        let _ = writeln!(
            report,
            "TIOCLINUX|1<<32: {}",
            errno_of(ioctl64(0, tioclinux | (1 << 32), subcode.as_ptr().cast()))
        );
        let Some(path) = std::env::var_os(super::REPORT_VAR) else {
            eprintln!("attacks: {} is not set", super::REPORT_VAR);
            return ExitCode::from(64);
        };
        match std::fs::write(&path, report) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("attacks: writing {path:?}: {e}");
                ExitCode::from(65)
            }
        }
    }

    /// The descriptors the command holds, and what it can do with 7, 8 and 9.
    fn fds() -> ExitCode {
        let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: getrlimit into a zeroed struct.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
        let max = i32::try_from(limit.rlim_cur.min(65536)).unwrap_or(1024);
        // SAFETY: F_GETFD only asks whether a descriptor is open.
        let open: Vec<String> = (0..max)
            .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0)
            .map(|fd| fd.to_string())
            .collect();
        println!("fds: {}", open.join(" "));
        let mut buf = [0u8; 256];
        // SAFETY: reading into buf.
        let n = unsafe { libc::read(7, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            println!("read 7: {}", String::from_utf8_lossy(&buf[..n as usize]));
        } else {
            println!("read 7: {:?}", Errno::last());
        }
        // SAFETY: openat with a NUL-terminated path.
        let fd = unsafe {
            libc::openat(
                8,
                c"etc/hostname".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        println!(
            "openat 8: {}",
            if fd >= 0 {
                "ok".to_owned()
            } else {
                format!("{:?}", Errno::last())
            }
        );
        // SAFETY: writing from a static buffer.
        let n = unsafe { libc::write(9, b"pwned".as_ptr().cast(), 5) };
        println!(
            "write 9: {}",
            if n >= 0 {
                "ok".to_owned()
            } else {
                format!("{:?}", Errno::last())
            }
        );
        ExitCode::SUCCESS
    }
}

// ---------------------------------------------------------------------------------------------
// Found by a second review (red team), each a working exploit before its fix.

/// The kernel's keyrings are not namespaced: the command possessed the caller's session keyring
/// (read its keys, planted keys that outlived it). keyctl and add_key are refused (EPERM).
fn the_callers_keyrings_are_out_of_reach() {
    let _host = shared();
    let out = run_bounded(&mut demo_attack(&[], "keyring"), Duration::from_secs(20));
    out.assert_code(0);
    assert!(out.run.stdout.contains("keyctl=EPERM"), "{out:#?}");
    assert!(out.run.stdout.contains("add_key=EPERM"), "{out:#?}");
}

/// A nested user namespace plus a cgroup namespace of its own let the command mount the
/// sandbox's cgroup2 (the host's root cgroup here) around the covers and attach cgroup
/// programs to every host process. CLONE_NEWCGROUP is refused; the rest of a nested user
/// namespace still works.
fn no_cgroup_namespace_of_its_own_so_no_cgroup2_mount_around_the_covers() {
    let _host = shared();
    let script = "unshare --user --map-root-user --mount true && echo nested-userns-ok; \
        unshare --user --map-root-user --mount --cgroup true 2>/dev/null && echo cgroupns-made || echo cgroupns-refused; \
        unshare --user --map-root-user --mount sh -c 'mkdir -p /tmp/cg-$$ && mount -t cgroup2 none /tmp/cg-$$ 2>/dev/null && echo cgroup2-mounted || echo cgroup2-refused; rmdir /tmp/cg-$$'";
    let out = run_bounded(
        &mut demo(&["--", "sh", "-c", script]),
        Duration::from_secs(20),
    );
    out.assert_code(0);
    assert!(out.run.stdout.contains("nested-userns-ok"), "{out:#?}");
    assert!(out.run.stdout.contains("cgroupns-refused"), "{out:#?}");
    assert!(out.run.stdout.contains("cgroup2-refused"), "{out:#?}");
}

/// System V IPC objects the command made stayed on the host after it (and outside its memory
/// limit): the sandbox has its own IPC namespace.
fn system_v_ipc_objects_stay_in_the_sandbox() {
    let _host = shared();
    let count = || {
        let out = Command::new("ipcs").arg("-m").output().expect("run ipcs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("0x"))
            .count()
    };
    let before = count();
    let out = run_bounded(
        &mut demo(&[
            "--",
            "sh",
            "-c",
            "ipcmk -M 65536 && ipcs -m | grep -c '^0x'",
        ]),
        Duration::from_secs(20),
    );
    out.assert_code(0);
    assert_eq!(
        out.run.stdout.lines().last(),
        Some("1"),
        "made inside: {out:#?}"
    );
    assert_eq!(
        count(),
        before,
        "a shared memory segment reached the host: {out:#?}"
    );
}

/// The kfunc `bpf_rdonly_cast(addr, 0)` (Linux 6.17+) returns a `void *` whose loads are
/// fault-tolerant kernel reads, and the verifier asks no CAP_PERFMON for it: with prog_load
/// delegated, CAP_BPF alone reads kernel memory (a red team read a root-only file from the page
/// cache this way). Nothing in user space can refuse it without racing the caller, so the tool
/// says it: this test checks the warning is printed exactly when the kernel has the gap (the
/// program loads), and that a delegation without prog_load gets no such warning.
fn the_kfunc_kernel_read_of_this_kernel_is_said_before_the_run() {
    let _host = shared();
    let btf = std::fs::read(bpf_token_launcher::bpf::btf::VMLINUX_BTF).expect("read vmlinux BTF");
    let id = bpf_token_launcher::bpf::btf::find_func(&btf, "bpf_rdonly_cast")
        .expect("parse vmlinux BTF");
    let mut command = demo_attack(&[], "kernel-read");
    if let Some(id) = id {
        command.env("ATTACK_RDONLY_CAST_ID", id.to_string());
    }
    let out = run_bounded(&mut command, LIMIT);
    out.assert_code(0);
    let gap = load_result(&out.run.stdout, "rdonly_cast") == Some("loaded");
    let warned = out.run.stderr.contains("bpf_rdonly_cast");
    assert_eq!(
        gap, warned,
        "the warning must be printed exactly when the kernel lets the kfunc read (gap: {gap}): {out:#?}"
    );
    // No prog_load, no kernel read through programs, no warning.
    let out = run_bounded(
        &mut demo(&["--delegate-cmds", "map_create", "--", "true"]),
        LIMIT,
    );
    out.assert_code(0);
    assert!(!out.run.stderr.contains("bpf_rdonly_cast"), "{out:#?}");
}
