//! The command's PID namespace: an init of ours as PID 1, the command as its child.
//!
//! A PID namespace is what guarantees nothing outlives the sandbox: when its PID 1 exits, the
//! kernel kills every other process in it (`zap_pid_ns_processes`), however they daemonised.
//! The command is not PID 1 itself because the kernel drops signals a PID 1 has no handler
//! for, so `kill -TERM $$` in a shell would do nothing; our init forwards signals, reaps
//! orphans, and exits with the command's status (128 + N if it died of signal N).
//!
//! Process tree: supervisor (host) → sandbox (`unshare(CLONE_NEWPID)`, waits) → init (PID 1)
//! → command (PID 2). Each link has `PR_SET_PDEATHSIG(SIGKILL)`, so killing any ancestor, even
//! with SIGKILL, takes the namespace down.

use std::ffi::OsString;
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::Path;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::ForkResult;

use crate::relay::{self, BlockedSignals, ChildExit, Reap};
use crate::sys::SysError;

/// Runs `argv` in a new PID namespace and returns its exit code; `signals` must be blocked.
/// Called in the sandbox after its user, mount and network namespaces and bpffs are ready.
pub fn run_command(
    argv: &[OsString],
    bpffs_path: &Path,
    signals: &BlockedSignals,
) -> Result<i32, PidNsError> {
    let (program, args) = argv.split_first().ok_or(PidNsError::EmptyCommand)?;
    nix::sched::unshare(CloneFlags::CLONE_NEWPID).map_err(|errno| PidNsError::Sys {
        step: "creating the PID namespace",
        source: SysError {
            call: "unshare(CLONE_NEWPID)",
            errno,
        },
    })?;
    // init cannot see its parent (it is outside the namespace, getppid() is 0), so it learns
    // whether the sandbox died before PR_SET_PDEATHSIG took effect from this pipe: the sandbox
    // holds the write end, and a closed write end means it is gone.
    let (alive_read, alive_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| PidNsError::Sys {
            step: "creating the liveness pipe",
            source: SysError {
                call: "pipe2",
                errno,
            },
        })?;
    match fork("forking the PID namespace's init")? {
        ForkResult::Parent { child: init } => {
            drop(alive_read);
            log::debug!("init of the PID namespace is pid {init} on the host");
            let exit = relay::wait_forwarding(init, Reap::ChildOnly, None).map_err(|source| {
                PidNsError::Sys {
                    step: "waiting for init",
                    source,
                }
            })?;
            drop(alive_write);
            Ok(exit.exit_code())
        }
        ForkResult::Child => {
            drop(alive_write);
            let code = match init(program, args, bpffs_path, &alive_read, signals) {
                Ok(exit) => exit.exit_code(),
                Err(err) => {
                    eprintln!("token_userns_demo: error: sandbox init: {err}");
                    1
                }
            };
            // The forked init must never return into the caller's code.
            std::process::exit(code);
        }
    }
}

fn fork(step: &'static str) -> Result<ForkResult, PidNsError> {
    // SAFETY: callers are single-threaded, so the child may run arbitrary code.
    unsafe { nix::unistd::fork() }.map_err(|errno| PidNsError::Sys {
        step,
        source: SysError {
            call: "fork",
            errno,
        },
    })
}

/// PID 1: the command as its child, then relay and reap.
///
/// `/proc` is left as it is (the host's PID namespace view, as `unshare -p` without
/// `--mount-proc`): mounting a fresh procfs in a user namespace cost 3.3 ms here, a third of the
/// whole launch. The command may mount its own (`mount -t proc proc /proc`): it holds
/// CAP_SYS_ADMIN over its mount and PID namespaces.
fn init(
    program: &OsString,
    args: &[OsString],
    bpffs_path: &Path,
    sandbox_alive: &OwnedFd,
    signals: &BlockedSignals,
) -> Result<ChildExit, PidNsError> {
    die_with_sandbox(sandbox_alive)?;
    match fork("forking the command")? {
        ForkResult::Parent { child } => {
            log::debug!("command {program:?} is pid {child} in the PID namespace");
            relay::wait_forwarding(child, Reap::All, None).map_err(|source| PidNsError::Sys {
                step: "waiting for the command",
                source,
            })
        }
        ForkResult::Child => {
            let code = match exec(program, args, bpffs_path, signals) {
                Ok(never) => match never {},
                Err(err) => {
                    eprintln!("token_userns_demo: error: {err}");
                    match &err {
                        // A shell's codes: 127 for a command not found, 126 for one that cannot run.
                        PidNsError::Exec { error, .. }
                            if error.kind() == std::io::ErrorKind::NotFound =>
                        {
                            127
                        }
                        PidNsError::Exec { .. } => 126,
                        _ => 1,
                    }
                }
            };
            std::process::exit(code);
        }
    }
}

fn exec(
    program: &OsString,
    args: &[OsString],
    bpffs_path: &Path,
    signals: &BlockedSignals,
) -> Result<std::convert::Infallible, PidNsError> {
    // No parent-death signal here: when init exits the kernel kills the whole namespace.
    // The command gets the signal mask the user started us with.
    signals.restore().map_err(|source| PidNsError::Sys {
        step: "restoring the signal mask",
        source,
    })?;
    let argv: Vec<&OsString> = std::iter::once(program).chain(args).collect();
    log::debug!(
        "exec {argv:?} with LIBBPF_BPF_TOKEN_PATH={}",
        bpffs_path.display()
    );
    let error = std::process::Command::new(program)
        .args(args)
        .env("LIBBPF_BPF_TOKEN_PATH", bpffs_path)
        .exec();
    Err(PidNsError::Exec {
        program: program.to_string_lossy().into_owned(),
        error,
    })
}

/// `PR_SET_PDEATHSIG(SIGKILL)`, then a check that the sandbox has not already gone.
fn die_with_sandbox(sandbox_alive: &OwnedFd) -> Result<(), PidNsError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|errno| PidNsError::Sys {
        step: "setting the parent-death signal",
        source: SysError {
            call: "prctl(PR_SET_PDEATHSIG)",
            errno,
        },
    })?;
    let mut fds = [PollFd::new(sandbox_alive.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => Ok(()),
        _ => Err(PidNsError::ParentGone),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PidNsError {
    #[error("no command given after --")]
    EmptyCommand,
    #[error("{step}: {source}")]
    Sys {
        step: &'static str,
        source: SysError,
    },
    #[error("the parent process exited during start-up")]
    ParentGone,
    #[error("executing {program:?}: {error}")]
    Exec {
        program: String,
        error: std::io::Error,
    },
}
