//! `token_userns_demo`: run the XDP counter in a user-namespace sandbox with a delegated BPF token.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use bpf_token_launcher::logging;
use bpf_token_launcher::policy::{self, DelegateKind, EnumNames, PolicyError};
use bpf_token_launcher::supervisor::{
    self, ChildExit, SandboxAction, SupervisorError, SupervisorOptions,
};
use bpf_token_launcher::userns::HostIdentity;
use clap::Parser;

/// Fork a sandbox into new user, mount and network namespaces, hand it a bpffs delegated by this
/// (root) process, and load the demo XDP counter there with a BPF token.
///
/// The default delegation is exactly what the counter needs:
/// delegate_cmds=map_create:prog_load:btf_load delegate_maps=array delegate_progs=xdp
/// delegate_attachs=xdp. Each --delegate-* flag replaces one of these sets; values are kernel enum
/// names (case-insensitive, with or without the BPF_* prefix) separated by `:` or `,`, `any`, or
/// one number.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Commands to delegate (e.g. map_create:prog_load:btf_load)
    #[arg(long, value_name = "LIST")]
    delegate_cmds: Option<String>,
    /// Map types to delegate (e.g. array:hash)
    #[arg(long, value_name = "LIST")]
    delegate_maps: Option<String>,
    /// Program types to delegate (e.g. xdp)
    #[arg(long, value_name = "LIST")]
    delegate_progs: Option<String>,
    /// Attach types to delegate (e.g. xdp)
    #[arg(long, value_name = "LIST")]
    delegate_attachs: Option<String>,
    /// Host uid the sandbox's root maps to [default: $SUDO_UID, else 65534]
    #[arg(long, value_name = "UID")]
    uid: Option<u32>,
    /// Host gid the sandbox's root maps to [default: $SUDO_GID, else 65534]
    #[arg(long, value_name = "GID")]
    gid: Option<u32>,
    /// Interface inside the sandbox to attach the counter to
    #[arg(
        short = 'i',
        long = "interface",
        value_name = "IFACE",
        default_value = "lo"
    )]
    interface: String,
    /// Send no test datagram (the delta is then 0)
    #[arg(short = 'n', long = "no-traffic")]
    no_traffic: bool,
    /// Where the delegated bpffs is mounted inside the sandbox for -- CMD
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/sys/fs/bpf",
        requires = "command"
    )]
    bpffs_path: PathBuf,
    /// Trace every step on stderr (repeat for more)
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
    /// Instead of the demo, run CMD in the sandbox with the delegated bpffs mounted at
    /// --bpffs-path and LIBBPF_BPF_TOKEN_PATH pointing at it
    #[arg(last = true, value_name = "CMD", conflicts_with_all = ["no_traffic", "interface"])]
    command: Vec<OsString>,
}

impl Cli {
    fn delegation(&self, names: &EnumNames) -> Result<policy::Delegation, PolicyError> {
        let mut delegation = policy::counter_delegation(names);
        for (kind, value) in [
            (DelegateKind::Cmds, &self.delegate_cmds),
            (DelegateKind::Maps, &self.delegate_maps),
            (DelegateKind::Progs, &self.delegate_progs),
            (DelegateKind::Attachs, &self.delegate_attachs),
        ] {
            if let Some(value) = value {
                delegation.set(kind, names.parse(kind, value)?);
            }
        }
        Ok(delegation)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose);
    let names = EnumNames::builtin();
    // All input is checked before anything is forked or mounted.
    let delegation = match cli.delegation(&names) {
        Ok(d) => d,
        Err(err) => {
            eprintln!("token_userns_demo: error: {err}");
            return ExitCode::from(2);
        }
    };
    log::debug!("kernel enum names: {}", names.source());
    for (kind, value) in bpf_token_launcher::bpffs::delegation_options(&delegation, &names) {
        log::debug!("delegation {}={value}", kind.option());
    }
    let identity = HostIdentity::choose(cli.uid, cli.gid);
    if identity.uid == 0 {
        log::warn!(
            "--uid 0: the sandbox's root is host root; files it creates belong to host root"
        );
    }
    if !cli.bpffs_path.is_absolute() {
        eprintln!(
            "token_userns_demo: error: --bpffs-path {:?} must be an absolute path",
            cli.bpffs_path
        );
        return ExitCode::from(2);
    }
    let action = if cli.command.is_empty() {
        SandboxAction::Trace {
            interface: cli.interface,
            send_traffic: !cli.no_traffic,
        }
    } else {
        SandboxAction::Exec {
            argv: cli.command,
            bpffs_path: cli.bpffs_path,
        }
    };
    let options = SupervisorOptions {
        delegation,
        identity,
        action,
    };
    match supervisor::run(&options, &names) {
        Ok(exit) => {
            log::debug!("sandbox child {exit}");
            if let ChildExit::Signaled(_) = exit {
                eprintln!("token_userns_demo: sandbox child {exit}");
            }
            exit_code(exit)
        }
        // The child already printed its own one-line error: do not add a second line.
        Err(SupervisorError::ChildDied {
            exit: exit @ ChildExit::Exited(_),
            expected,
        }) => {
            log::debug!("sandbox child {exit} while the supervisor expected {expected}");
            exit_code(exit)
        }
        Err(err) => {
            eprintln!("token_userns_demo: error: {err}");
            match err {
                SupervisorError::ChildDied { exit, .. } => exit_code(exit),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn exit_code(exit: ChildExit) -> ExitCode {
    ExitCode::from(u8::try_from(exit.exit_code()).unwrap_or(1))
}
