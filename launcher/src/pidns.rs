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

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawnp};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;

#[cfg(doc)]
use crate::relay::BlockedSignals;
use crate::relay::{self, ChildExit, Reap};
use crate::sys::SysError;

/// Runs `argv` as PID 2 and returns how it ended; the caller must be PID 1 of its PID namespace
/// with the relayed signals blocked ([`BlockedSignals`]). Called in the sandbox once its
/// namespaces and bpffs are ready.
///
/// The command is started with `posix_spawnp` (glibc: `clone(CLONE_VM | CLONE_VFORK)` and
/// exec), not `fork`, which copies the sandbox's page tables only to drop them at exec (`perf
/// trace` showed 0.36 ms for that fork; the end-to-end gain was within this VM's noise). It starts as `std::process::Command` would start it: an empty signal
/// mask and SIGPIPE at its default (Rust programs ignore it), the sandbox's environment with
/// `LIBBPF_BPF_TOKEN_PATH`, `PATH` lookup.
pub fn run_as_init(argv: &[OsString], bpffs_path: &Path) -> Result<ChildExit, PidNsError> {
    let program = argv.first().ok_or(PidNsError::EmptyCommand)?;
    let child = match spawn(argv, bpffs_path) {
        Ok(child) => child,
        Err(err) => {
            eprintln!("token_userns_demo: error: {err}");
            // A shell's codes: 127 for a command not found, 126 for one that cannot run.
            let code = match &err {
                PidNsError::Exec { error, .. } if error.kind() == std::io::ErrorKind::NotFound => {
                    127
                }
                PidNsError::Exec { .. } => 126,
                _ => 1,
            };
            return Ok(ChildExit::Exited(code));
        }
    };
    log::debug!("command {program:?} is pid {child} in the PID namespace");
    relay::wait_forwarding(child, Reap::All, None).map_err(|source| PidNsError::Sys {
        step: "waiting for the command",
        source,
    })
}

fn spawn(argv: &[OsString], bpffs_path: &Path) -> Result<Pid, PidNsError> {
    let program = &argv[0];
    let exec_error = |error| PidNsError::Exec {
        program: program.to_string_lossy().into_owned(),
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
        "exec {argv:?} with {TOKEN_PATH_VARIABLE}={}",
        bpffs_path.display()
    );
    posix_spawnp(&args[0], &actions, &attr, &args, &env)
        .map_err(|errno| exec_error(std::io::Error::from(errno)))
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
}
