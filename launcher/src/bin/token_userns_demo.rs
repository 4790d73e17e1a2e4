//! `token_userns_demo`: run the XDP counter in a user-namespace sandbox with a delegated BPF token.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::os::unix::ffi::OsStrExt as _;

use bpf_token_launcher::net::{VethPair, VethSubnet};
use bpf_token_launcher::policy::{self, DelegateKind, Delegation, EnumNames, PolicyFile};
use bpf_token_launcher::status::StatusSink;
use bpf_token_launcher::supervisor::{
    self, ChildExit, SandboxAction, SupervisorError, SupervisorOptions,
};
use bpf_token_launcher::userns::HostIdentity;
use bpf_token_launcher::{counter, logging, preflight};
use clap::Parser;

/// Fork a sandbox into new user, mount and network namespaces, hand it a bpffs delegated by this
/// (root) process, and load the demo XDP counter there with a BPF token.
///
/// The default delegation is exactly what the demo counter needs, computed from its object:
/// delegate_cmds=map_create:prog_load:btf_load delegate_maps=array delegate_progs=xdp
/// delegate_attachs=xdp. --policy-from OBJECT computes it for another object, --policy FILE reads
/// it from a TOML file (keys cmds, maps, progs, attachs; a missing key delegates nothing). Each
/// --delegate-* flag then replaces one set; values are names from the running kernel's enums
/// (case-insensitive, with or without the BPF_* prefix) separated by `:` or `,`, `any`, `none`,
/// or one number. The supervisor checks the mounted bpffs shows exactly this delegation before
/// the sandbox uses it.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Start from the policy in this TOML file instead of the counter's
    #[arg(long, value_name = "FILE", conflicts_with = "policy_from")]
    policy: Option<PathBuf>,
    /// Start from the least privilege of this eBPF object (ELF) instead of the counter's
    #[arg(long, value_name = "OBJECT")]
    policy_from: Option<PathBuf>,
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
    /// Where the delegated bpffs is mounted inside the sandbox (its own mount namespace)
    #[arg(long, value_name = "PATH", default_value = "/sys/fs/bpf")]
    bpffs_path: PathBuf,
    /// Also create a veth pair (IPv4 only): NAME in the sandbox, tkn<pid> on the host, so XDP
    /// can be tested on a real driver path
    ///
    /// NAME is up in the sandbox with the .2 address of a /30, its peer tkn<pid> on the host has
    /// the .1 address. The /30 is a free one of 169.254.0.0/16 (unless --veth-subnet): never in
    /// 169.254.169.0/24 or 169.254.170.0/24 (cloud metadata services), never overlapping an
    /// address or a route of the host, never shared with another sandbox. The host end has IPv6
    /// disabled and ignores router advertisements, redirects and source routes; its
    /// reverse-path filter is strict; its forwarding is the host's (with net.ipv4.ip_forward=1
    /// the sandbox can route through the host). The supervisor deletes the host end before it
    /// exits, even when the sandbox's network namespace outlives the sandbox. NAME: 1 to 15
    /// bytes, no '/', ':', '%', whitespace or control characters, not lo, all, default, '.' or
    /// '..'.
    #[arg(long, value_name = "NAME")]
    veth: Option<String>,
    /// With --veth: use this /30 (e.g. 10.200.0.0/30: host end 10.200.0.1, sandbox end
    /// 10.200.0.2) instead of choosing one; refused if an address or route of the host, or
    /// another sandbox, uses it
    #[arg(long, value_name = "CIDR", requires = "veth", value_parser = parse_veth_subnet)]
    veth_subnet: Option<VethSubnet>,
    /// Kill the whole sandbox after SECS seconds (fractions allowed) and exit with 124
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    timeout: Option<Duration>,
    /// Write JSON status events (sandbox ready with pids, namespaces, policy and veth; exit
    /// status), one per line, to this already-open file descriptor
    #[arg(long, value_name = "FD")]
    json_status: Option<i32>,
    /// Check whether this machine can run the demo, one line per requirement with the fix for
    /// what is missing (a throw-away sandbox runs the demo on its own lo, with the delegation the
    /// other options give); exit 0 only when it can
    #[arg(long, conflicts_with_all = ["command", "veth", "json_status", "timeout", "no_traffic", "interface", "bpffs_path"])]
    check: bool,
    /// With --check: print the findings as one JSON object
    #[arg(long, requires = "check")]
    json: bool,
    /// Trace every step on stderr (repeat for more)
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
    /// Instead of the demo, run CMD in the sandbox with the delegated bpffs mounted at
    /// --bpffs-path and LIBBPF_BPF_TOKEN_PATH pointing at it
    #[arg(last = true, value_name = "CMD", conflicts_with_all = ["no_traffic", "interface"])]
    command: Vec<OsString>,
}

impl Cli {
    /// The delegation asked for: a base policy, then the --delegate-* flags.
    ///
    /// The kernel's enum names (read from its BTF, ~0.5 ms) are loaded here only when names
    /// must be parsed; otherwise the supervisor loads them after forking, alongside the
    /// sandbox's own work.
    fn delegation(&self) -> Result<Delegation, String> {
        let names = EnumNames::for_running_kernel;
        let mut delegation = if let Some(path) = &self.policy {
            PolicyFile::read(path, names())
                .map_err(|e| e.to_string())?
                .delegation
        } else if let Some(path) = &self.policy_from {
            let elf = std::fs::read(path)
                .map_err(|e| format!("--policy-from {}: {e}", path.display()))?;
            policy::least_privilege_for_elf(&elf)
                .map_err(|e| format!("--policy-from {}: {e}", path.display()))?
        } else {
            policy::least_privilege_for_elf(counter::COUNTER_OBJECT)
                .map_err(|e| format!("the embedded counter object: {e}"))?
        };
        for (kind, value) in [
            (DelegateKind::Cmds, &self.delegate_cmds),
            (DelegateKind::Maps, &self.delegate_maps),
            (DelegateKind::Progs, &self.delegate_progs),
            (DelegateKind::Attachs, &self.delegate_attachs),
        ] {
            if let Some(value) = value {
                delegation.set(kind, names().parse(kind, value).map_err(|e| e.to_string())?);
            }
        }
        if delegation.is_empty() {
            return Err(
                "the policy delegates nothing: a token needs at least one delegated set".to_owned(),
            );
        }
        Ok(delegation)
    }

    fn check_bpffs_path(&self) -> Result<(), String> {
        let path = &self.bpffs_path;
        if !path.is_absolute() {
            return Err(format!("--bpffs-path {path:?} must be an absolute path"));
        }
        if path.as_os_str().as_bytes().contains(&0) {
            return Err(format!("--bpffs-path {path:?} contains a NUL byte"));
        }
        // The sandbox's mount namespace starts as a copy of this one: a missing directory here
        // would only fail later, at move_mount, with a bare ENOENT.
        if !self.check && !path.is_dir() {
            return Err(format!(
                "--bpffs-path {path:?} is not an existing directory (the sandbox mounts the bpffs on a directory of its copy of the host's mount table)"
            ));
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose);
    // All input is checked before anything is forked or mounted.
    let delegation = match cli.check_bpffs_path().and_then(|()| cli.delegation()) {
        Ok(d) => d,
        Err(err) => {
            eprintln!("token_userns_demo: error: {err}");
            return ExitCode::from(2);
        }
    };
    let identity = HostIdentity::choose(cli.uid, cli.gid);
    if cli.check {
        return check(delegation, identity, cli.json);
    }
    if identity.uid == 0 {
        log::warn!(
            "--uid 0: the sandbox's root is host root; files it creates belong to host root"
        );
    }
    let action = if cli.command.is_empty() {
        SandboxAction::Trace {
            interface: cli.interface,
            send_traffic: !cli.no_traffic,
        }
    } else {
        SandboxAction::Exec { argv: cli.command }
    };
    let veth = match cli
        .veth
        .as_deref()
        .map(|name| VethPair::new(name, std::process::id(), cli.veth_subnet))
        .transpose()
    {
        Ok(veth) => veth,
        Err(err) => {
            eprintln!("token_userns_demo: error: {err}");
            return ExitCode::from(2);
        }
    };
    let status = match cli.json_status.map(status_sink).transpose() {
        Ok(status) => status,
        Err(err) => {
            eprintln!("token_userns_demo: error: {err}");
            return ExitCode::from(2);
        }
    };
    let options = SupervisorOptions {
        veth,
        status,
        delegation,
        timeout: cli.timeout,
        identity,
        bpffs_path: cli.bpffs_path,
        action,
    };
    match supervisor::run(&options) {
        Ok(exit) => {
            log::debug!("sandbox child {exit}");
            if let ChildExit::Signaled(_) | ChildExit::TimedOut(_) = exit {
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

/// `--check`: the report on stdout; exit 0 only when the demo can run.
fn check(delegation: Delegation, identity: HostIdentity, json: bool) -> ExitCode {
    let report = preflight::check(&preflight::CheckOptions {
        delegation,
        identity,
    });
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("the report serialises")
        );
    } else {
        print!("{report}");
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Takes over an inherited descriptor for status events, close-on-exec so the sandbox's
/// command does not inherit it.
fn status_sink(fd: i32) -> Result<StatusSink, String> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    use std::os::fd::{FromRawFd as _, OwnedFd};
    if fd <= 2 {
        return Err(format!(
            "--json-status {fd}: use a descriptor above 2 (e.g. 3>status.json)"
        ));
    }
    // SAFETY: only borrowed for the F_GETFD probe; ownership is taken below once it is known open.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|e| format!("--json-status {fd}: the descriptor is not open ({e})"))?;
    // SAFETY: the descriptor is open, was inherited for this purpose, and nothing else in this
    // process uses it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(StatusSink::new(std::fs::File::from(owned)))
}

fn parse_veth_subnet(text: &str) -> Result<VethSubnet, String> {
    text.parse()
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!(
            "{text:?}: the timeout must be a positive number of seconds"
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"))
}

fn exit_code(exit: ChildExit) -> ExitCode {
    ExitCode::from(u8::try_from(exit.exit_code()).unwrap_or(1))
}
