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

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::Path;

use nix::unistd::ForkResult;

use crate::relay::{self, BlockedSignals, ChildExit, Reap};
use crate::sys::SysError;

/// Runs `argv` as PID 2 and returns how it ended; the caller must be PID 1 of its PID namespace
/// with `signals` blocked. Called in the sandbox once its namespaces and bpffs are ready.
pub fn run_as_init(
    argv: &[OsString],
    bpffs_path: &Path,
    signals: &BlockedSignals,
) -> Result<ChildExit, PidNsError> {
    let (program, args) = argv.split_first().ok_or(PidNsError::EmptyCommand)?;
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
            // The forked command must never return into the caller's code.
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
}
