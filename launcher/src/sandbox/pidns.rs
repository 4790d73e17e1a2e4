//! The command's PID namespace: the sandbox process is its PID 1, the command its child.
//!
//! A PID namespace is what guarantees nothing outlives the sandbox: when its PID 1 exits, the
//! kernel kills every other process in it (`zap_pid_ns_processes`), however they daemonised.
//! The command is not PID 1 itself because the kernel drops signals a PID 1 has no handler
//! for, so `kill -TERM $$` in a shell would do nothing; the sandbox, as init, forwards signals,
//! reaps orphans, and exits with the command's status (128 + N if it died of signal N).
//!
//! Process tree: supervisor (host) → sandbox (created by `clone3(CLONE_NEWUSER | CLONE_NEWNS |
//! CLONE_NEWPID)`, so it is PID 1) → command (PID 2). The sandbox has
//! `PR_SET_PDEATHSIG(SIGKILL)`, so killing the supervisor, even with SIGKILL, takes the whole
//! namespace down.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawn};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{AccessFlags, Pid};

use crate::bpf::token::{Token, TokenError};
use crate::sandbox::confine::{self, CapabilityChoice, ConfineError};
use crate::sandbox::gateway::{Gateway, GatewayError};
#[cfg(doc)]
use crate::sandbox::relay::BlockedSignals;
use crate::sandbox::relay::{self, ChildExit, Reap, Watch};
use crate::sandbox::status::StatusSink;
use crate::sys::{Errno, SysError};

/// The command and how it is confined.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec<'a> {
    pub argv: &'a [OsString],
    /// Where the delegated bpffs is mounted (`LIBBPF_BPF_TOKEN_PATH`).
    pub bpffs_path: &'a Path,
    pub capabilities: &'a CapabilityChoice,
    /// Start the command in a session of its own, without the caller's controlling terminal.
    pub new_session: bool,
    /// Serve the `bpf()` gateway ([`crate::sandbox::gateway`]) while the command runs.
    pub gateway: bool,
    /// Where the gateway's report goes at the end (`--json-status`).
    pub status: Option<&'a StatusSink>,
    /// `--learn`: the gateway logs every call and writes the log here at the end
    /// ([`crate::sandbox::learn`]).
    pub call_log: Option<BorrowedFd<'a>>,
}

/// Runs the command as PID 2 and returns how it ended; the caller must be PID 1 of its PID
/// namespace with the relayed signals blocked ([`BlockedSignals`]). Called in the sandbox once
/// its namespaces and bpffs are ready.
///
/// Before the start, in this process (the command inherits all of it): the working directory is
/// entered again by path as the sandbox's user, the gateway's token is made from the bpffs,
/// this process becomes non-dumpable and removes the dropped capabilities from what an exec can
/// give, optionally leaves the caller's session, and installs the command's seccomp filter
/// ([`crate::sandbox::confine`]), with the gateway's listener unless `spec.gateway` is off. While the
/// command runs, this process serves the gateway ([`crate::sandbox::gateway`]) besides forwarding
/// signals and reaping; at the end the gateway reports (explanations on stderr when the command
/// failed, `--json-status`).
///
/// The command is started with `posix_spawn` (`clone(CLONE_VM | CLONE_VFORK)` and exec), not
/// `fork`, which copies the sandbox's page tables only to drop them at exec (`perf trace` showed
/// 0.36 ms for that fork). It starts as `std::process::Command` would start it: an empty signal
/// mask and SIGPIPE at its default (Rust programs ignore it), the sandbox's environment with
/// `LIBBPF_BPF_TOKEN_PATH`; the program is looked up in `PATH` here (see [`resolve_program`]).
pub fn run_as_init(spec: &CommandSpec<'_>) -> Result<ChildExit, PidNsError> {
    let program = spec.argv.first().ok_or(PidNsError::EmptyCommand)?;
    enter_working_directory_again();
    let resolved = match resolve_program(program, std::env::var_os("PATH").as_deref()) {
        Ok(path) => path,
        Err(err) => {
            crate::logging::error_line("token_userns_demo", &err);
            return Ok(ChildExit::Exited(err.exit_code()));
        }
    };
    // The gateway's token, made while this process may still call bpf() (see below).
    let token = if spec.gateway {
        Some(Token::from_bpffs_path(spec.bpffs_path).map_err(PidNsError::GatewayToken)?)
    } else {
        None
    };
    confine::make_undumpable().map_err(PidNsError::Confine)?;
    confine::drop_for_exec(spec.capabilities).map_err(PidNsError::Confine)?;
    log::debug!(
        "the command starts without {}",
        spec.capabilities.dropped_names().join(", ")
    );
    if spec.new_session {
        // Leaving the session here leaves it for the command too: it starts without a
        // controlling terminal, so nothing it does can reach the caller's terminal as one.
        nix::unistd::setsid().map_err(|errno| PidNsError::Sys {
            step: "starting a new session (--new-session)",
            source: SysError {
                call: "setsid",
                errno,
            },
        })?;
        log::debug!("setsid(): the command has no controlling terminal");
    }
    let mut gateway = match token {
        None => {
            confine::install_command_filter().map_err(PidNsError::Confine)?;
            log::debug!("seccomp filter installed: ioctl TIOCSTI and TIOCLINUX fail with EPERM");
            None
        }
        Some(token) => match confine::install_command_filter_with_gateway() {
            // An environment where the gateway cannot work: the command still can (with a
            // token-aware loader), so it runs, warned.
            Err(
                error @ (ConfineError::GatewayUnsupported(_)
                | ConfineError::GatewayListenerTaken(_)),
            ) => {
                log::warn!(
                    "{error}; the command runs without it (loaders that know no BPF tokens get EPERM; --no-gateway skips the attempt)"
                );
                drop(token);
                confine::install_command_filter().map_err(PidNsError::Confine)?;
                None
            }
            Err(error) => return Err(PidNsError::Confine(error)),
            Ok(listener) => {
                // From here on this process must make no bpf(BPF_MAP_CREATE/PROG_LOAD/BTF_LOAD)
                // call: the filter applies to it too, and the answer would have to come from it.
                log::debug!(
                    "seccomp filter installed: ioctl TIOCSTI and TIOCLINUX fail with EPERM; bpf() MAP_CREATE, PROG_LOAD and BTF_LOAD go through the gateway (listener fd {}, token fd {})",
                    listener.as_raw_fd(),
                    token.as_fd().as_raw_fd()
                );
                let mut gateway = Gateway::new(token, listener, spec.capabilities.caps_kept())
                    .map_err(PidNsError::Gateway)?;
                if spec.call_log.is_some() {
                    gateway.log_calls();
                }
                Some(gateway)
            }
        },
    };
    let child = match spawn(spec.argv, spec.bpffs_path, &resolved) {
        Ok(child) => child,
        Err(err) => {
            crate::logging::error_line("token_userns_demo", &err);
            return Ok(ChildExit::Exited(err.start_exit_code()));
        }
    };
    log::debug!("command {program:?} is pid {child} in the PID namespace");
    let watch = gateway.as_mut().map(|g| g as &mut dyn Watch);
    let exit = relay::wait_forwarding_with(child, Reap::All, None, watch).map_err(|source| {
        PidNsError::Sys {
            step: "waiting for the command",
            source,
        }
    })?;
    if let Some(gateway) = &gateway {
        gateway.finish(
            "token_userns_demo",
            exit != ChildExit::Exited(0),
            spec.status,
        );
    }
    if let Some(fd) = spec.call_log {
        crate::sandbox::learn::write_call_log(fd, gateway.as_ref().and_then(Gateway::call_log));
    }
    Ok(exit)
}

/// The working directory came from the supervisor as an open directory, not a path: a
/// directory the sandbox's user could never reach by path (inside a 0700 directory of host
/// root, say) would stay usable through it (runc's CVE-2024-21626 class). Entering it again by
/// path, now as the sandbox's user, keeps it only when that user can reach it; otherwise the
/// command starts in `/`.
fn enter_working_directory_again() {
    let fallback = |why: String| {
        log::warn!("the working directory {why}: the command starts in /");
        let _ = nix::unistd::chdir("/");
    };
    match nix::unistd::getcwd() {
        Ok(path) if path.is_absolute() => {
            if let Err(errno) = nix::unistd::chdir(&path) {
                fallback(format!(
                    "{} cannot be entered by the sandbox's user ({})",
                    path.display(),
                    crate::sys::ErrnoName(errno)
                ));
            }
        }
        Ok(path) => fallback(format!("{} is outside the sandbox's root", path.display())),
        Err(errno) => fallback(format!(
            "cannot be named ({})",
            crate::sys::ErrnoName(errno)
        )),
    }
}

/// Finds `program` as `execvp` would, but tells "not found" from "found and not executable":
/// glibc's `execvp` reports EACCES when any `PATH` directory could not be searched, so a
/// missing command looked like one that cannot run (126 instead of 127). A directory the
/// sandbox's user cannot search simply does not contain the program for it.
pub fn resolve_program(program: &OsStr, path: Option<&OsStr>) -> Result<PathBuf, NotRunnable> {
    let name = program.to_string_lossy().into_owned();
    if program.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(program));
    }
    if program.is_empty() {
        return Err(NotRunnable::NotFound { program: name });
    }
    let path = path.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    let mut not_executable = None;
    for dir in path.as_bytes().split(|b| *b == b':') {
        // An empty entry means the current directory, as for execvp.
        let dir = if dir.is_empty() { b"." as &[u8] } else { dir };
        let candidate = Path::new(OsStr::from_bytes(dir)).join(program);
        match std::fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() => {
                if nix::unistd::access(&candidate, AccessFlags::X_OK).is_ok() {
                    return Ok(candidate);
                }
                not_executable.get_or_insert(candidate);
            }
            // A directory of that name, a missing file, an unsearchable directory: not here.
            Ok(_) | Err(_) => {}
        }
    }
    match not_executable {
        Some(path) => Err(NotRunnable::NotExecutable {
            program: name,
            path,
        }),
        None => Err(NotRunnable::NotFound { program: name }),
    }
}

/// Why the command cannot be started, with a shell's exit code.
#[derive(Debug, thiserror::Error)]
pub enum NotRunnable {
    #[error(
        "{program:?}: command not found in PATH (directories the sandbox's user cannot search are skipped)"
    )]
    NotFound { program: String },
    #[error("{program:?}: {} is not executable by the sandbox's user", path.display())]
    NotExecutable { program: String, path: PathBuf },
}

impl NotRunnable {
    pub const fn exit_code(&self) -> i32 {
        match self {
            Self::NotFound { .. } => 127,
            Self::NotExecutable { .. } => 126,
        }
    }
}

/// Starts `argv` (its program already resolved to `program`) as a child of this process, as
/// [`run_as_init`] describes, with `LIBBPF_BPF_TOKEN_PATH` set to `bpffs_path`; `token_exec`
/// starts its command this way too.
pub fn spawn(argv: &[OsString], bpffs_path: &Path, program: &Path) -> Result<Pid, PidNsError> {
    let exec_error = |error| PidNsError::Exec {
        program: argv[0].to_string_lossy().into_owned(),
        error,
    };
    let c_string = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| {
            exec_error(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "an argument or environment variable contains a NUL byte",
            ))
        })
    };
    let args = argv
        .iter()
        .map(|a| c_string(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let path = c_string(program.as_os_str().as_bytes())?;
    let mut env = Vec::new();
    for (key, value) in std::env::vars_os().filter(|(k, _)| k != TOKEN_PATH_VARIABLE) {
        env.push(c_string(
            &[key.as_bytes(), b"=", value.as_bytes()].concat(),
        )?);
    }
    env.push(c_string(
        &[
            TOKEN_PATH_VARIABLE.as_bytes(),
            b"=",
            bpffs_path.as_os_str().as_bytes(),
        ]
        .concat(),
    )?);
    let preparing = |call| {
        move |errno| PidNsError::Sys {
            step: "preparing the command's start",
            source: SysError { call, errno },
        }
    };
    let mut attr = PosixSpawnAttr::init().map_err(preparing("posix_spawnattr_init"))?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )
    .map_err(preparing("posix_spawnattr_setflags"))?;
    attr.set_sigmask(&SigSet::empty())
        .map_err(preparing("posix_spawnattr_setsigmask"))?;
    let mut default = SigSet::empty();
    default.add(Signal::SIGPIPE);
    attr.set_sigdefault(&default)
        .map_err(preparing("posix_spawnattr_setsigdefault"))?;
    let actions =
        PosixSpawnFileActions::init().map_err(preparing("posix_spawn_file_actions_init"))?;
    log::debug!(
        "exec {argv:?} ({}) with {TOKEN_PATH_VARIABLE}={}",
        program.display(),
        bpffs_path.display()
    );
    posix_spawn(path.as_c_str(), &actions, &attr, &args, &env).map_err(|errno| match errno {
        // The clone itself failed: a process limit, not the program.
        Errno::EAGAIN => PidNsError::ProcessLimit,
        errno => exec_error(std::io::Error::from(errno)),
    })
}

/// Where libbpf (and our `token_trace`) look for a delegated bpffs by default.
const TOKEN_PATH_VARIABLE: &str = "LIBBPF_BPF_TOKEN_PATH";

#[derive(Debug, thiserror::Error)]
pub enum PidNsError {
    #[error("no command given after --")]
    EmptyCommand,
    #[error("{step}: {source}")]
    Sys {
        step: &'static str,
        source: SysError,
    },
    #[error("executing {program:?}: {error}")]
    Exec {
        program: String,
        error: std::io::Error,
    },
    #[error(
        "starting the command: the process limit is reached (EAGAIN): --pids-max, the cgroup's pids.max or the user's RLIMIT_NPROC (`ulimit -u`) allows no more processes"
    )]
    ProcessLimit,
    #[error("{0}")]
    Confine(ConfineError),
    #[error("starting the bpf() gateway: {0}; --no-gateway runs the command without it")]
    GatewayToken(TokenError),
    #[error("{0}")]
    Gateway(GatewayError),
}

impl PidNsError {
    /// The exit status for a command that could not be started, as a shell gives it: 127 for
    /// a program not found, 126 for one that cannot run, else 1.
    pub fn start_exit_code(&self) -> i32 {
        match self {
            Self::Exec { error, .. } if error.kind() == std::io::ErrorKind::NotFound => 127,
            Self::Exec { .. } => 126,
            _ => 1,
        }
    }
}
