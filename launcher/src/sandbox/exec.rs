//! `token_exec`: the sandbox's `bpf()` gateway ([`crate::sandbox::gateway`]) for a command in an
//! environment someone else made, without root and without a sandbox of ours.
//!
//! Where a delegated bpffs already exists in the caller's user namespace (a systemd service
//! with `PrivateBPF=`, an LXD/Incus container, a pod, `token_userns_demo`'s own sandbox),
//! loaders that know BPF tokens use it, and the others get EPERM. `token_exec` makes a token
//! from that bpffs, installs the gateway's seccomp filter, starts the command as its child and
//! serves the filter's listener while the command runs: a token-unaware loader's
//! `BPF_MAP_CREATE`, `BPF_PROG_LOAD` and `BPF_BTF_LOAD` then carry the token, exactly as in the
//! sandbox. Nothing is granted that the command could not take itself: the token comes from a
//! bpffs the command can open in its own user namespace, and the kernel checks the delegation
//! and the caller's own capabilities in the token's user namespace on every call (so a
//! `token_exec` given file capabilities the command lacks still lends it none).
//!
//! It is built from the sandbox's parts, which is why it lives here: the token
//! ([`crate::bpf::token`]), the command's filter ([`confine::install_command_filter_with_gateway`],
//! which also denies `TIOCSTI`/`TIOCLINUX`), the start of the command ([`pidns::spawn`],
//! [`pidns::resolve_program`]), the wait loop that forwards signals ([`relay`]) and the gateway.
//! What differs from the sandbox's init:
//! - No capability is dropped and no namespace made: the environment decides what the command
//!   may do. `no_new_privs` is set, because the kernel lets a process without CAP_SYS_ADMIN
//!   install a seccomp filter only with it; the command inherits it (setuid and file
//!   capabilities no longer raise privileges on exec).
//! - `token_exec` is not PID 1 of a PID namespace: it reaps only its child
//!   ([`Reap::ChildOnly`]); processes the command leaves behind are re-parented to whoever
//!   reaps orphans there (the nearest subreaper or init) and keep the filter. Once `token_exec`
//!   has exited, the filter has no listener and the kernel fails their notified `bpf()` calls
//!   with ENOSYS. The same happens to the command if `token_exec` is killed with SIGKILL.
//! - Its own process makes no notified `bpf()` call once the filter is installed (it would wait
//!   for an answer only it can give; [`crate::sys::bpf`] asserts this): the token is made
//!   before, what it allows is read from its fdinfo.

use std::ffi::OsString;
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability};

use crate::bpf::token::{Token, TokenError};
use crate::policy::calls::Findings;
use crate::policy::risk::CapsKept;
use crate::policy::{DelegateKind, Delegation, EnumNames};
use crate::sandbox::confine::{self, ConfineError};
use crate::sandbox::gateway::{Gateway, GatewayError};
use crate::sandbox::pidns::{self, NotRunnable, PidNsError};
use crate::sandbox::relay::{self, BlockedSignals, ChildExit, Reap, Watch};
use crate::sys::SysError;

/// The name the gateway's explanations are printed under.
const PROGRAM: &str = "token_exec";

/// What `token_exec` runs, and with which bpffs.
#[derive(Debug, Clone, Copy)]
pub struct ExecOptions<'a> {
    /// The command and its arguments.
    pub argv: &'a [OsString],
    /// The delegated bpffs to make the token from (also given to the command as
    /// `LIBBPF_BPF_TOKEN_PATH`, so that token-aware loaders use the same one).
    pub token_path: &'a Path,
    /// When the command fails, explain the calls the delegation did not cover.
    pub explain: bool,
}

/// How the command ended, with the gateway that served it.
#[derive(Debug)]
pub struct Finished {
    pub exit: ChildExit,
    /// `None` when the gateway could not start (another listener in the filter chain). Kept
    /// for what reads the run afterwards (the recorded calls, for `--learn`).
    pub gateway: Option<Gateway>,
}

/// The bpffs when no `-t` is given, by libbpf's rule: `$LIBBPF_BPF_TOKEN_PATH`, else
/// `/sys/fs/bpf`. libbpf takes an empty variable as "use no token"; for `token_exec`, whose
/// only purpose is the token, that is an error.
pub fn default_token_path() -> Result<PathBuf, ExecError> {
    match std::env::var_os(TOKEN_PATH_VARIABLE) {
        Some(value) if value.is_empty() => Err(ExecError::EmptyTokenPath),
        _ => Ok(crate::counter::default_token_path()),
    }
}

const TOKEN_PATH_VARIABLE: &str = "LIBBPF_BPF_TOKEN_PATH";

/// Runs the command under the gateway and returns how it ended; when it failed (and
/// `options.explain`), the calls the delegation did not cover are explained on stderr.
///
/// The relayed signals ([`relay::FORWARDED`]) are blocked in this process from here on, so that
/// one sent before the command starts is forwarded to it once it runs; the command starts with
/// an empty mask.
pub fn run(options: &ExecOptions<'_>) -> Result<Finished, ExecError> {
    let program = options.argv.first().ok_or(ExecError::EmptyCommand)?;
    // Made while this process may still call bpf(): after the filter it could not.
    let token = Token::from_bpffs_path(options.token_path).map_err(ExecError::Token)?;
    let resolved = pidns::resolve_program(program, std::env::var_os("PATH").as_deref())
        .map_err(ExecError::NotRunnable)?;
    let _blocked = BlockedSignals::block().map_err(|source| ExecError::Sys {
        step: "blocking the signals forwarded to the command",
        source,
    })?;
    let caps = caps_of_the_command();
    let mut gateway = match confine::install_command_filter_with_gateway() {
        Ok(listener) => {
            // From here on this process must make no bpf(BPF_MAP_CREATE/PROG_LOAD/BTF_LOAD).
            log::debug!(
                "seccomp filter installed (no_new_privs set): bpf() MAP_CREATE, PROG_LOAD and BTF_LOAD go through the gateway (listener fd {}, token fd {} from {})",
                listener.as_raw_fd(),
                token.as_fd().as_raw_fd(),
                options.token_path.display()
            );
            let gateway = Gateway::new(token, listener, caps).map_err(ExecError::Gateway)?;
            log::debug!(
                "the token allows {}",
                mount_options(gateway.allowed(), EnumNames::for_running_kernel())
            );
            Some(gateway)
        }
        Err(ConfineError::GatewayListenerTaken(source)) => {
            log::warn!(
                "the bpf() gateway cannot start: {source}: a seccomp filter with a listener already confines this process, and a process's filters can have only one (token_userns_demo's own gateway, which then serves the command, or a container runtime's notifier); the command runs without token_exec's gateway"
            );
            None
        }
        Err(ConfineError::GatewayUnsupported(source)) => {
            log::warn!(
                "the bpf() gateway cannot start: {source}: this kernel does not know SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19); the command runs without it"
            );
            None
        }
        Err(error) => return Err(ExecError::Confine(error)),
    };
    let child =
        pidns::spawn(options.argv, options.token_path, &resolved).map_err(ExecError::Start)?;
    log::debug!("command {program:?} is pid {child}");
    let watch = gateway.as_mut().map(|g| g as &mut dyn Watch);
    let exit =
        relay::wait_forwarding_with(child, Reap::ChildOnly, None, watch).map_err(|source| {
            ExecError::Sys {
                step: "waiting for the command",
                source,
            }
        })?;
    log::debug!("command {program:?} {exit}");
    if let Some(gateway) = &gateway {
        let explain = options.explain && exit != ChildExit::Exited(0);
        gateway.finish(PROGRAM, explain, None);
        if explain
            && let Some(hint) = where_the_delegation_comes_from(
                gateway.findings(),
                gateway.allowed(),
                options.token_path,
                EnumNames::for_running_kernel(),
            )
        {
            crate::logging::program_line(PROGRAM, &hint);
        }
    }
    Ok(Finished { exit, gateway })
}

/// Whether the command will hold CAP_PERFMON and CAP_SYS_ADMIN (in this user namespace, the
/// token's), which decides the advice on tracing program types. An exec gives a root user its
/// bounding and inheritable sets, any other user only its ambient set (file capabilities
/// aside).
fn caps_of_the_command() -> CapsKept {
    let sets: &[CapSet] = if nix::unistd::geteuid().is_root() {
        &[CapSet::Bounding, CapSet::Inheritable]
    } else {
        &[CapSet::Ambient]
    };
    let has = |cap| {
        sets.iter()
            .any(|set| caps::has_cap(None, *set, cap).unwrap_or(false))
    };
    CapsKept {
        perfmon: has(Capability::CAP_PERFMON),
        sys_admin: has(Capability::CAP_SYS_ADMIN),
    }
}

/// `delegate_cmds=...,delegate_maps=...` for the non-empty sets of `delegation`, as a bpffs
/// is mounted with them.
fn mount_options(delegation: &Delegation, names: &EnumNames) -> String {
    let options: Vec<String> = DelegateKind::ALL
        .into_iter()
        .filter(|kind| !delegation.get(*kind).is_empty())
        .map(|kind| {
            format!(
                "{}={}",
                kind.option(),
                names.render(kind, delegation.get(kind))
            )
        })
        .collect();
    if options.is_empty() {
        "nothing".to_owned()
    } else {
        options.join(",")
    }
}

/// The gateway's explanations name `token_userns_demo`'s flags; under `token_exec` the
/// delegation is fixed by whoever mounted the bpffs. This line says so and gives the mount
/// options that would cover every call seen (`None` when no delegation would help, e.g. only
/// attrs too short for a token were seen).
pub fn where_the_delegation_comes_from(
    findings: &Findings,
    allowed: &Delegation,
    token_path: &Path,
    names: &EnumNames,
) -> Option<String> {
    let wider = findings.covering(allowed);
    (wider != *allowed).then(|| {
        format!(
            "the delegation is the one the bpffs at {} was mounted with ({}), which token_exec cannot change: whoever mounts it must give {} (systemd: BPFDelegateCommands=, BPFDelegateMaps=, BPFDelegatePrograms=, BPFDelegateAttachments=; Incus: security.bpffs.delegate_*; LXD: security.delegate_bpf.*; token_userns_demo: the --delegate-* flags above)",
            token_path.display(),
            mount_options(allowed, names),
            mount_options(&wider, names)
        )
    })
}

/// Why `token_exec` could not run the command.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("no command given after --")]
    EmptyCommand,
    #[error(
        "LIBBPF_BPF_TOKEN_PATH is set but empty, which tells libbpf to use no token: unset it, or name the delegated bpffs with -t PATH"
    )]
    EmptyTokenPath,
    #[error(
        "{0} (token_trace --list shows every bpffs mounted here, its delegation and whether a token can be made from it)"
    )]
    Token(TokenError),
    #[error("{0}")]
    NotRunnable(NotRunnable),
    #[error("{0}")]
    Start(PidNsError),
    #[error("{step}: {source}")]
    Sys {
        step: &'static str,
        source: SysError,
    },
    #[error("{0}")]
    Confine(ConfineError),
    #[error("{0}")]
    Gateway(GatewayError),
}

impl ExecError {
    /// `token_exec`'s exit status for this error: 2 for bad input, 127 or 126 for a command
    /// that cannot be found or run (as a shell), 1 for anything else (the token among them).
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::EmptyCommand | Self::EmptyTokenPath => 2,
            Self::NotRunnable(error) => error.exit_code(),
            Self::Start(error) => error.start_exit_code(),
            Self::Token(_) | Self::Sys { .. } | Self::Confine(_) | Self::Gateway(_) => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Mask;
    use crate::policy::calls::{BpfCall, Caller};

    fn names() -> &'static EnumNames {
        EnumNames::for_running_kernel()
    }

    fn counter_delegation() -> Delegation {
        let n = names();
        let mut d = Delegation::default();
        for (kind, value) in [
            (DelegateKind::Cmds, "map_create:prog_load:btf_load"),
            (DelegateKind::Maps, "array"),
            (DelegateKind::Progs, "xdp"),
            (DelegateKind::Attachs, "xdp"),
        ] {
            d.set(kind, n.parse(kind, value).unwrap());
        }
        d
    }

    #[test]
    fn mount_options_name_the_non_empty_sets() {
        assert_eq!(
            mount_options(&counter_delegation(), names()),
            "delegate_cmds=map_create:prog_load:btf_load,delegate_maps=array,delegate_progs=xdp,delegate_attachs=xdp"
        );
        assert_eq!(mount_options(&Delegation::default(), names()), "nothing");
        let mut any = Delegation::default();
        any.set(DelegateKind::Progs, Mask::ANY);
        assert_eq!(mount_options(&any, names()), "delegate_progs=any");
    }

    /// libbpf's probe: a socket filter with expected attach type 0 (`cgroup_inet_ingress`).
    fn socket_filter_probe(attr_size: usize) -> BpfCall {
        let mut attr = vec![0u8; attr_size];
        attr[0..4].copy_from_slice(&1u32.to_le_bytes());
        BpfCall::decode(5, &attr, attr_size as u32).unwrap()
    }

    #[test]
    fn the_hint_gives_the_mount_options_that_cover_every_call() {
        let allowed = counter_delegation();
        let mut findings = Findings::default();
        let call = socket_filter_probe(148);
        let gap = Findings::gap(&call, &allowed).expect("not covered");
        findings.record(&call, gap, || Caller { pid: 7, comm: None });
        let hint =
            where_the_delegation_comes_from(&findings, &allowed, Path::new("/sys/fs/bpf"), names())
                .expect("a wider delegation helps");
        assert!(
            hint.contains("the bpffs at /sys/fs/bpf was mounted with (delegate_cmds=map_create:prog_load:btf_load,delegate_maps=array,delegate_progs=xdp,delegate_attachs=xdp), which token_exec cannot change"),
            "{hint}"
        );
        assert!(
            hint.contains("must give delegate_cmds=map_create:prog_load:btf_load,delegate_maps=array,delegate_progs=socket_filter:xdp,delegate_attachs=cgroup_inet_ingress:xdp "),
            "{hint}"
        );
    }

    #[test]
    fn no_hint_when_no_delegation_would_help() {
        let allowed = counter_delegation();
        let mut findings = Findings::default();
        // libbpf 1.1's 64-byte PROG_LOAD cannot carry a token whatever the delegation.
        let call = socket_filter_probe(64);
        let gap = Findings::gap(&call, &allowed).expect("too short");
        findings.record(&call, gap, || Caller { pid: 7, comm: None });
        assert_eq!(
            where_the_delegation_comes_from(&findings, &allowed, Path::new("/x"), names()),
            None
        );
        assert_eq!(
            where_the_delegation_comes_from(
                &Findings::default(),
                &allowed,
                Path::new("/x"),
                names()
            ),
            None
        );
    }

    #[test]
    fn exit_codes_are_a_shells_and_bad_input_is_2() {
        let error = ExecError::EmptyTokenPath;
        assert_eq!(error.exit_code(), 2);
        let not_found = ExecError::NotRunnable(NotRunnable::NotFound {
            program: "x".into(),
        });
        assert_eq!(not_found.exit_code(), 127);
    }
}
