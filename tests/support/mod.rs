//! Shared helpers for the root tests on the real kernel: running the built binaries, and checking
//! that nothing is left behind on the host after each run.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

pub const DEMO: &str = env!("CARGO_BIN_EXE_token_userns_demo");
pub const TRACE: &str = env!("CARGO_BIN_EXE_token_trace");

/// Tests that change host state (mount a bpffs, change a sysctl) take this lock for writing; all
/// others take it for reading, so the leak checks never see another test's deliberate changes.
static HOST: RwLock<()> = RwLock::new(());

/// Fails (never skips) without root: CI must not pass by skipping these tests.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root on the real kernel (kernel 6.9+ with BPF tokens); run `cargo xtask test`"
    );
}

pub fn shared() -> RwLockReadGuard<'static, ()> {
    require_root();
    HOST.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    require_root();
    HOST.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The host's mount table, without the fields that change on their own.
pub fn host_mounts() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .map(|l| l.split(' ').skip(4).take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

/// Whether an XDP program is attached to the host's `lo`.
pub fn host_lo_has_xdp() -> bool {
    let out = Command::new("ip")
        .args(["-d", "link", "show", "dev", "lo"])
        .output()
        .expect("run ip");
    let text = String::from_utf8_lossy(&out.stdout);
    text.contains("xdp") || text.contains("prog/")
}

/// A completed run of one of the binaries.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(out: Output) -> Self {
        Self {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The value printed after `label :` in the demo's report.
    pub fn field(&self, label: &str) -> Option<String> {
        self.stdout.lines().find_map(|l| {
            let (key, value) = l.split_once(" : ")?;
            (key.trim_end() == label).then(|| value.trim().to_owned())
        })
    }

    /// The sandbox child's pid, from the `-v` trace.
    pub fn child_pid(&self) -> Option<i32> {
        self.stderr
            .lines()
            .find_map(|l| l.split("sandbox child pid ").nth(1)?.trim().parse().ok())
    }
}

/// Runs a binary and checks that the host is as it was: same mounts, no XDP on `lo`, and (when
/// the run was traced with `-v`) the sandbox child gone.
pub fn run_clean(program: &str, args: &[&str]) -> Run {
    let mut command = Command::new(program);
    command.args(args);
    run_command_clean(&mut command)
}

/// [`run_clean`] for a command the caller has prepared (environment, pre-exec hooks).
pub fn run_command_clean(command: &mut Command) -> Run {
    let mounts_before = host_mounts();
    let run = Run::from_output(command.output().expect("spawn"));
    assert_host_clean(&mounts_before, &run);
    run
}

pub fn assert_host_clean(mounts_before: &BTreeSet<String>, run: &Run) {
    let mounts_after = host_mounts();
    let added: Vec<_> = mounts_after.difference(mounts_before).collect();
    assert!(
        added.is_empty(),
        "new host mounts after the run: {added:?}\n{run:#?}"
    );
    assert!(
        !host_lo_has_xdp(),
        "an XDP program is still attached to the host's lo\n{run:#?}"
    );
    if let Some(pid) = run.child_pid() {
        assert!(
            wait_gone(pid, Duration::from_secs(2)),
            "sandbox child {pid} still exists\n{run:#?}"
        );
    }
}

/// Waits until `pid` no longer exists (or is a zombie of nobody we know).
pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
        let alive = status.is_ok_and(|s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && l.contains("Z"))
        });
        if !alive {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A bpffs mounted on the host in a temporary directory, unmounted on drop.
pub struct HostBpffs {
    pub dir: std::path::PathBuf,
}

impl HostBpffs {
    pub fn mount() -> Self {
        let dir = std::env::temp_dir().join(format!("bpffs-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create mount point");
        nix::mount::mount(
            Some("bpf"),
            &dir,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount bpffs on the host");
        Self { dir }
    }
}

impl Drop for HostBpffs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `token_trace -t PATH` on the host and checks it leaves nothing behind.
pub fn run_trace_clean(path: &std::path::Path, extra: &[&str]) -> Run {
    let mut args = vec!["-t", path.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    run_clean(TRACE, &args)
}

/// Makes `command` (and everything it forks) see system call `nr` return `-errno` without
/// running it, optionally only when argument `arg.0` equals `arg.1` (compared as 32 bits, enough
/// for commands and flags). `errno` 0 makes the call "succeed" while doing nothing: a kernel that
/// silently ignores the request. A seccomp filter (built by seccompiler), so the product needs
/// no test hooks; several calls stack filters.
pub fn inject_syscall_result(command: &mut Command, nr: i64, arg: Option<(u8, u64)>, errno: i32) {
    let arg = arg.map(|(index, value)| (index, seccompiler::SeccompCmpOp::Eq, value));
    inject_syscall_result_when(command, nr, arg, errno);
}

/// [`inject_syscall_result`] with any comparison of the argument (e.g. `Gt` on a length).
pub fn inject_syscall_result_when(
    command: &mut Command,
    nr: i64,
    arg: Option<(u8, seccompiler::SeccompCmpOp, u64)>,
    errno: i32,
) {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
    };
    use std::os::unix::process::CommandExt as _;
    let rules = match arg {
        // No rule: the system call number alone matches.
        None => vec![],
        Some((index, op, value)) => vec![
            SeccompRule::new(vec![
                SeccompCondition::new(index, SeccompCmpArgLen::Dword, op, value)
                    .expect("valid condition"),
            ])
            .expect("valid rule"),
        ],
    };
    let filter = SeccompFilter::new(
        [(nr, rules)].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(u32::try_from(errno).expect("errno is positive")),
        TargetArch::x86_64,
    )
    .expect("valid filter");
    // Compiled before the fork: the pre-exec hook must not allocate.
    let program: seccompiler::BpfProgram = filter.try_into().expect("filter compiles");
    // SAFETY: the hook makes two system calls on memory it owns and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            // seccompiler sets PR_SET_NO_NEW_PRIVS first; the product runs no setuid programs.
            seccompiler::apply_filter(&program).map_err(std::io::Error::other)
        });
    }
}

/// A copy of a binary in a directory every user can reach, for running it as the sandbox's
/// unprivileged host identity; removed on drop.
pub struct WorldReadableCopy {
    dir: std::path::PathBuf,
    pub path: std::path::PathBuf,
}

impl Drop for WorldReadableCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn world_readable_copy(binary: &str) -> WorldReadableCopy {
    use std::os::unix::fs::PermissionsExt as _;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("token-test-bin-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the copy's directory");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = dir.join(
        std::path::Path::new(binary)
            .file_name()
            .expect("binary name"),
    );
    std::fs::copy(binary, &path).expect("copy the binary");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    WorldReadableCopy { dir, path }
}

/// `token_userns_demo -v -- CMD` running in the background, read until the command is exec'd.
pub struct RunningSandbox {
    pub supervisor: std::process::Child,
    pub sandbox_pid: i32,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
}

impl RunningSandbox {
    pub fn start(command: &[&str]) -> Self {
        Self::start_with(&[], command)
    }

    /// [`Self::start`] with supervisor options before `--`.
    pub fn start_with(options: &[&str], command: &[&str]) -> Self {
        let mut supervisor = Command::new(DEMO)
            .arg("-v")
            .args(options)
            .arg("--")
            .args(command)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the supervisor");
        let pipe = supervisor.stderr.take().expect("stderr pipe");
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(pipe));
        let mut sandbox_pid = None;
        let mut trace = String::new();
        for line in lines.by_ref() {
            let line = line.expect("read the trace");
            trace.push_str(&line);
            trace.push('\n');
            if let Some(pid) = line.split("sandbox child pid ").nth(1) {
                sandbox_pid = pid.trim().parse::<i32>().ok();
            }
            if line.contains("exec [") {
                break;
            }
        }
        let sandbox_pid =
            sandbox_pid.unwrap_or_else(|| panic!("no sandbox pid in the trace:\n{trace}"));
        // Give exec a moment to replace the sandbox child with the command.
        std::thread::sleep(Duration::from_millis(50));
        Self {
            supervisor,
            sandbox_pid,
            lines,
        }
    }

    /// Everything the supervisor writes to stderr from now until it exits.
    pub fn rest_of_trace(&mut self) -> String {
        self.lines
            .by_ref()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Every descendant of `pid` (children, their children, ...), from `/proc/*/task/*/children`.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

/// Waits up to 2 s for `path` to disappear (an interface removed asynchronously, say).
pub fn wait_gone_path(path: &std::path::Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while path.exists() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Asserts `text` carries the diagnosis of `cause` from the library's table: its cause and its
/// fix, as every error path prints them.
pub fn assert_diagnosed(text: &str, cause: bpf_token_launcher::diagnosis::Cause) {
    let row = bpf_token_launcher::diagnosis::row(cause);
    assert!(
        text.contains(row.cause) && text.contains(&format!("; fix: {}", row.fix)),
        "expected the diagnosis {cause:?} ({}; fix: {}) in:\n{text}",
        row.cause,
        row.fix
    );
}

/// A directory any mapped uid can write to (mode 1777), removed on drop.
pub struct ScratchDir(pub std::path::PathBuf);

impl ScratchDir {
    pub fn new(suite: &str, name: &str) -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("token-{suite}-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        Self(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the supervisor with `args`, a file as its descriptor 3 (for `--json-status 3`), and
/// checks the host is clean; returns the run and what was written to descriptor 3.
pub fn run_with_status_fd(args: &[&str]) -> (Run, String) {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::process::CommandExt as _;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("token-status-{}-{n}", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    let raw = file.as_raw_fd();
    let mut command = Command::new(DEMO);
    command.args(args);
    // SAFETY: dup2 and fcntl are async-signal-safe and only touch the child's descriptor table.
    unsafe {
        command.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec: clear the flag instead.
            let ok = if raw == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) >= 0
            } else {
                libc::dup2(raw, 3) >= 0
            };
            if !ok {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let run = run_command_clean(&mut command);
    drop(file);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    (run, text)
}

/// A directory of programs and files the sandboxed runs need, readable by any mapped uid (the
/// build directory may not be: a clone under /root, say).
pub struct ProgramDir {
    pub dir: std::path::PathBuf,
}

impl ProgramDir {
    pub fn new(prefix: &str) -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the programs' directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir }
    }

    /// Writes `bytes` as `name` with `mode`; returns its path.
    pub fn put(&self, name: &str, bytes: &[u8], mode: u32) -> String {
        use std::os::unix::fs::PermissionsExt as _;
        let path = self.dir.join(name);
        std::fs::write(&path, bytes).expect("write a program");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path.to_str().expect("utf-8 temp dir").to_owned()
    }

    /// A copy of the running test binary (which plays roles in the sandbox).
    pub fn put_this(&self, name: &str) -> String {
        let this = std::fs::read(std::env::current_exe().unwrap()).expect("read this binary");
        self.put(name, &this, 0o755)
    }

    pub fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `tests` with libtest-mimic (for the suites whose binary also plays roles in the
/// sandbox, so they need their own `main`), each test's panic a failure; `cleanup` runs after.
pub fn run_trials(
    tests: &[(&'static str, fn())],
    cleanup: impl FnOnce(),
) -> std::process::ExitCode {
    use libtest_mimic::{Arguments, Failed, Trial};
    let arguments = Arguments::from_args();
    let trials = tests
        .iter()
        .map(|&(name, test)| {
            Trial::test(name, move || {
                std::panic::catch_unwind(test).map_err(|panic| {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default();
                    Failed::from(message)
                })
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&arguments, trials);
    cleanup();
    conclusion.exit_code()
}
