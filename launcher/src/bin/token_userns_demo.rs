//! `token_userns_demo`: run the XDP counter in a user-namespace sandbox with a delegated BPF token.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use std::os::unix::ffi::OsStrExt as _;

use bpf_token_launcher::policy::report::{Format, PolicyReport};
use bpf_token_launcher::policy::risk::{self, WarningKind};
use bpf_token_launcher::policy::{self, DelegateKind, Delegation, EnumNames, PolicyFile};
use bpf_token_launcher::sandbox::confine::CapabilityChoice;
use bpf_token_launcher::sandbox::learn::{self as learning, LearnError, PolicyDestination};
use bpf_token_launcher::sandbox::net::{VethPair, VethSubnet};
use bpf_token_launcher::sandbox::status::StatusSink;
use bpf_token_launcher::sandbox::supervisor::{
    self, ChildExit, SandboxAction, SupervisorError, SupervisorOptions,
};
use bpf_token_launcher::sandbox::userns::{self, HostIdentity};
use bpf_token_launcher::sandbox::{cgroup, preflight};
use bpf_token_launcher::sys::file::read_untrusted_file;
use bpf_token_launcher::{counter, logging};
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
/// the sandbox uses it. --learn FILE -- CMD writes the policy file CMD needs, found by running
/// it.
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
    /// Host uid the sandbox's root maps to [default: $SUDO_UID when not 0, else a transient uid
    /// 1879048192 + the supervisor's pid]; 0 (host root) only when given here
    #[arg(long, value_name = "UID")]
    uid: Option<u32>,
    /// Host gid the sandbox's root maps to [default: $SUDO_GID when not 0, else a transient gid
    /// 1879048192 + the supervisor's pid]
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
    /// Kill the whole sandbox after SECS seconds (fractions allowed; the setup counts) and exit
    /// with 124
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    timeout: Option<Duration>,
    /// Limit the sandbox's memory, BPF maps and other kernel memory included, to BYTES (K, M, G,
    /// T suffixes: 256M), swap excluded; a cgroup of the sandbox's own
    #[arg(long, value_name = "BYTES", value_parser = cgroup::parse_memory)]
    memory_max: Option<u64>,
    /// Limit the sandbox to N processes and threads, its init and the command included (N >= 2);
    /// a cgroup of the sandbox's own
    #[arg(long, value_name = "N", value_parser = cgroup::parse_pids)]
    pids_max: Option<u64>,
    /// Create the sandbox's cgroup in this cgroup2 directory instead of the supervisor's own
    /// cgroup (needed where the supervisor's cgroup v2 cannot give controllers to a child)
    #[arg(long, value_name = "DIR")]
    cgroup_parent: Option<PathBuf>,
    /// Write JSON status events (cgroup limits; sandbox ready with pids, namespaces, policy,
    /// dropped capabilities, risk and veth; exit status), one per line, to this already-open
    /// file descriptor
    #[arg(long, value_name = "FD")]
    json_status: Option<i32>,
    /// Check whether this machine can run the demo, one line per requirement with the fix for
    /// what is missing (a throw-away sandbox runs the demo on its own lo, with the delegation the
    /// other options give); exit 0 only when it can
    #[arg(long, conflicts_with_all = ["command", "veth", "json_status", "timeout", "no_traffic", "interface", "bpffs_path", "cap_add", "cap_drop", "memory_max", "pids_max"])]
    check: bool,
    /// Print the delegation this run would use (options, flags, and what it lets the command
    /// reach beyond the sandbox with the capabilities it keeps) and exit without running
    #[arg(long, conflicts_with_all = ["check", "command", "veth", "json_status", "timeout"])]
    print_policy: bool,
    /// With --check or --print-policy: print one JSON object
    #[arg(long)]
    json: bool,
    /// With --print-policy: text, flags, toml (a --policy file), systemd, lxd, incus or json
    #[arg(
        long,
        value_name = "FORMAT",
        requires = "print_policy",
        conflicts_with = "json"
    )]
    format: Option<Format>,
    /// Give the command back a capability it loses by default (perfmon, sys_admin): either one
    /// lets it read kernel memory and trace host processes through the token; repeatable
    #[arg(long = "cap-add", value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop one more capability from the command inside its user namespace (`all` for every
    /// one not given back with --cap-add); repeatable
    #[arg(long = "cap-drop", value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Run the command in a new session without the caller's controlling terminal (no job
    /// control; nothing it does can act on the caller's terminal as its own)
    #[arg(long, requires = "command")]
    new_session: bool,
    /// Pass this open descriptor of the caller on to the command (every other one above 2 is
    /// closed at start-up); repeatable
    #[arg(long = "preserve-fd", value_name = "FD", requires = "command")]
    preserve_fd: Vec<i32>,
    /// Run the command without the bpf() gateway, which otherwise gives loaders that know no
    /// BPF tokens (stock aya) the sandbox's token and explains the calls the delegation does
    /// not cover
    #[arg(long, requires = "command")]
    no_gateway: bool,
    /// Learn the delegation the command needs and write it to FILE as a policy file for
    /// --policy; also print it as flags, systemd lines and LXD/Incus keys. Runs the command
    /// with EVERY type delegated: only learn commands you trust
    ///
    /// The command runs once with every set delegated (`any`), so it may create any map and
    /// load any program type a token allows: only learn commands you trust. It is otherwise
    /// confined as usual (its own namespaces, the seccomp filter, the capabilities
    /// --cap-add/--cap-drop leave it: tracing program types still need --cap-add perfmon to
    /// load). The bpf() gateway records every call it makes (map creations, program and BTF
    /// loads, token-aware or not). FILE then holds what the calls asked for, with comments
    /// naming the process (pid in the sandbox, comm, argv[0]) that asked for each item; calls
    /// no delegation can help (tracing types without CAP_PERFMON, a bpf_attr too short for a
    /// token) are left out, saying why. FILE is checked before the run and replaced
    /// atomically after it; --json-status describes the learning run; the exit status is the
    /// command's.
    #[arg(
        long,
        value_name = "FILE",
        requires = "command",
        conflicts_with_all = ["policy", "policy_from", "delegate_cmds", "delegate_maps", "delegate_progs", "delegate_attachs", "no_gateway", "check", "print_policy"]
    )]
    learn: Option<PathBuf>,
    /// With --learn: then rerun the command once per learned item without it, and keep only
    /// the items whose absence changes its exit status (drops optional probes)
    ///
    /// First one rerun with exactly the learned items, which must give the learning run's
    /// exit status; then one rerun per item without it (and without the items already
    /// dropped): an item whose absence leaves the exit status unchanged is dropped as
    /// optional, for instance a loader's feature probe. The file says for each item which run
    /// kept or dropped it and why. At most one rerun per item plus that first one; the reruns
    /// get /dev/null as stdin and stdout, and as stderr unless -v. A rerun killed by a
    /// forwarded signal (Ctrl-C, kill) stops the minimization: FILE then holds every learned
    /// item, saying so.
    #[arg(long, requires = "learn")]
    minimize: bool,
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
            let elf = read_untrusted_file(path, MAX_OBJECT_LEN)
                .map_err(|e| format!("--policy-from {e}"))?;
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
        check_bpffs_path(&self.bpffs_path, !self.check)
    }
}

/// The largest object `--policy-from` reads (the biggest objects of BCC's libbpf-tools are a
/// few MiB).
const MAX_OBJECT_LEN: u64 = 256 << 20;

/// Directories the bpffs must not hide in the sandbox's mount table: mounting on one of them
/// hides what the sandbox's own programs need (`/proc`, `/dev`, `/sys/kernel/btf` ...).
const ESSENTIAL_DIRECTORIES: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/opt",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/sys/fs",
    "/sys/kernel",
    "/tmp",
    "/usr",
    "/var",
];
/// Trees the bpffs must not be mounted anywhere in.
const KERNEL_TREES: &[&str] = &["/proc", "/dev"];

/// `--bpffs-path` must name one existing directory plainly: absolute, no `.` or `..`, no
/// symbolic link (the sandbox mounts on whatever it resolves to in its copy of the mount
/// table), and nothing the sandbox needs.
fn check_bpffs_path(path: &Path, must_exist: bool) -> Result<(), String> {
    let bytes = path.as_os_str().as_bytes();
    if !path.is_absolute() {
        return Err(format!("--bpffs-path {path:?} must be an absolute path"));
    }
    if bytes.contains(&0) {
        return Err(format!("--bpffs-path {path:?} contains a NUL byte"));
    }
    if bytes
        .split(|b| *b == b'/')
        .any(|part| part == b"." || part == b"..")
    {
        return Err(format!(
            "--bpffs-path {path:?} contains `.` or `..`: give the directory's plain path"
        ));
    }
    // Repeated and trailing slashes are harmless spellings of the same path.
    let plain: PathBuf = path.components().collect();
    let text = plain.to_string_lossy();
    if ESSENTIAL_DIRECTORIES.contains(&text.as_ref()) {
        return Err(format!(
            "--bpffs-path {path:?}: mounting the bpffs there would hide that directory from the sandbox; use a directory of its own (default /sys/fs/bpf)"
        ));
    }
    if KERNEL_TREES.iter().any(|tree| plain.starts_with(tree)) {
        return Err(format!(
            "--bpffs-path {path:?} is inside /proc or /dev, which the sandbox needs as they are; use a directory of its own (default /sys/fs/bpf)"
        ));
    }
    if !must_exist {
        return Ok(());
    }
    // The sandbox's mount namespace starts as a copy of this one: a missing directory here
    // would only fail later, at move_mount, with a bare ENOENT.
    match std::fs::canonicalize(&plain) {
        Ok(resolved) if resolved != plain => Err(format!(
            "--bpffs-path {path:?} goes through a symbolic link (it resolves to {}); give that path",
            resolved.display()
        )),
        Ok(resolved) if resolved.is_dir() => Ok(()),
        _ => Err(format!(
            "--bpffs-path {path:?} is not an existing directory (the sandbox mounts the bpffs on a directory of its copy of the host's mount table)"
        )),
    }
}

/// `token_userns_demo --` with nothing after it: clap sees no command and would run the demo.
fn empty_command_after_dashes(command: &[OsString]) -> bool {
    command.is_empty() && std::env::args_os().skip(1).any(|arg| arg == "--")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose);
    match prepare(cli) {
        Ok(Prepared::Check {
            delegation,
            identity,
            json,
            cgroup_parent,
        }) => check(delegation, identity, json, cgroup_parent),
        Ok(Prepared::Run(options, warnings)) => run(&options, &warnings),
        Ok(Prepared::Learn {
            options,
            warnings,
            destination,
            minimize,
            verbose,
        }) => learn(&options, &warnings, &destination, minimize, verbose),
        Ok(Prepared::PrintPolicy {
            delegation,
            capabilities,
            format,
        }) => {
            let names = EnumNames::for_running_kernel();
            let report = PolicyReport::new(&delegation, capabilities.caps_kept(), names, None);
            let text = report.render(format, names);
            match logging::write_stdout(&text) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => ExitCode::from(logging::stdout_failure("token_userns_demo", &error)),
            }
        }
        Err(err) => {
            logging::error_line("token_userns_demo", &err);
            ExitCode::from(2)
        }
    }
}

enum Prepared {
    Check {
        delegation: Delegation,
        identity: HostIdentity,
        json: bool,
        cgroup_parent: Option<PathBuf>,
    },
    Run(Box<SupervisorOptions>, Vec<String>),
    Learn {
        options: Box<SupervisorOptions>,
        warnings: Vec<String>,
        destination: PolicyDestination,
        minimize: bool,
        verbose: bool,
    },
    PrintPolicy {
        delegation: Delegation,
        capabilities: CapabilityChoice,
        format: Format,
    },
}

/// Everything about the input is checked here, before anything is forked or mounted; the
/// caller's descriptors are dealt with here too, before anything opens one of its own.
fn prepare(cli: Cli) -> Result<Prepared, String> {
    if empty_command_after_dashes(&cli.command) {
        return Err(
            "nothing after `--`: give the command to run (or drop `--` to run the demo)".to_owned(),
        );
    }
    if cli.json && !cli.check && !cli.print_policy {
        return Err("--json goes with --check or --print-policy".to_owned());
    }
    cli.check_bpffs_path()?;
    let capabilities =
        CapabilityChoice::from_flags(&cli.cap_add, &cli.cap_drop).map_err(|e| e.to_string())?;
    // Learning delegates everything; where the file goes is checked before anything runs.
    let destination = cli
        .learn
        .as_deref()
        .map(PolicyDestination::check)
        .transpose()?;
    let delegation = if destination.is_some() {
        Delegation::ANY
    } else {
        cli.delegation()?
    };
    if cli.print_policy {
        return Ok(Prepared::PrintPolicy {
            delegation,
            capabilities,
            format: Format::from_flags(cli.json, cli.format),
        });
    }
    // Program types that need CAP_PERFMON are refused unless the command keeps it; other
    // delegations that reach beyond the sandbox are said. The built-in names suffice (the
    // kernel's BTF is not read on the launch path); --print-policy shows the kernel's.
    let risk_warnings = risk::check(&delegation, capabilities.caps_kept(), &EnumNames::builtin())
        .map_err(|refusal| refusal.to_string())?;
    if log::log_enabled!(log::Level::Debug) {
        let names = EnumNames::for_running_kernel();
        for line in risk::assess(&delegation, capabilities.caps_kept(), names).lines() {
            log::debug!("delegation: {line}");
        }
        log::debug!(
            "the command loses {}",
            capabilities.dropped_names().join(", ")
        );
    }
    if let Some(Err(err)) = cli.cgroup_parent.as_deref().map(cgroup::check_parent) {
        return Err(err.to_string());
    }
    let supervisor_pid = std::process::id();
    let identity = HostIdentity::choose(cli.uid, cli.gid, supervisor_pid);
    if cli.check {
        close_inherited_descriptors(&[])?;
        return Ok(Prepared::Check {
            delegation,
            identity,
            json: cli.json,
            cgroup_parent: cli.cgroup_parent,
        });
    }
    let veth = cli
        .veth
        .as_deref()
        .map(|name| VethPair::new(name, supervisor_pid, cli.veth_subnet))
        .transpose()
        .map_err(|e| e.to_string())?;
    let status = cli.json_status.map(status_sink).transpose()?;
    for &fd in &cli.preserve_fd {
        preserve(fd, cli.json_status)?;
    }
    // The --learn directory was opened above, to be written through later: it stays.
    let mut keep = cli.preserve_fd.clone();
    keep.extend(destination.as_ref().map(PolicyDestination::directory_fd));
    close_inherited_descriptors(&keep)?;
    let mut warnings = capabilities.warnings();
    // What the delegation lets a command reach: the demo (no command) runs only our counter.
    if !cli.command.is_empty() {
        warnings.extend(kfunc_kernel_read_warning(&delegation));
        // The --cap-add warning already says what keeping CAP_PERFMON grants.
        warnings.extend(
            risk_warnings
                .iter()
                .filter(|w| w.kind != WarningKind::KernelMemoryRead)
                .map(ToString::to_string),
        );
    }
    warnings.extend(identity.warnings(cli.uid.is_some(), cli.gid.is_some()));
    let action = if cli.command.is_empty() {
        SandboxAction::Trace {
            interface: cli.interface,
            send_traffic: !cli.no_traffic,
        }
    } else {
        SandboxAction::Exec {
            argv: cli.command,
            gateway: !cli.no_gateway,
            recording: None,
        }
    };
    let options = Box::new(SupervisorOptions {
        veth,
        status,
        delegation,
        timeout: cli.timeout,
        identity,
        bpffs_path: cli.bpffs_path,
        action,
        capabilities,
        new_session: cli.new_session,
        limits: Some(cgroup::Limits {
            memory_max: cli.memory_max,
            pids_max: cli.pids_max,
            parent: cli.cgroup_parent,
        })
        .filter(cgroup::Limits::wanted),
    });
    Ok(match destination {
        Some(destination) => Prepared::Learn {
            options,
            warnings,
            destination,
            minimize: cli.minimize,
            verbose: cli.verbose > 0,
        },
        None => Prepared::Run(options, warnings),
    })
}

/// `--learn FILE [--minimize]`: the runs, then the file and the summary on stderr; the exit
/// status is the command's.
fn learn(
    options: &SupervisorOptions,
    warnings: &[String],
    destination: &PolicyDestination,
    minimize: bool,
    verbose: bool,
) -> ExitCode {
    if let Err(err) = userns::check_supervisor_privilege() {
        logging::error_line("token_userns_demo", &err);
        return ExitCode::FAILURE;
    }
    for warning in warnings {
        log::warn!("{warning}");
    }
    let mut progress = |line: String| eprintln!("token_userns_demo: {line}");
    let outcome = match learning::learn(options, minimize, verbose, &mut progress) {
        Ok(outcome) => outcome,
        Err(LearnError::Run {
            source:
                SupervisorError::ChildDied {
                    exit: exit @ ChildExit::Exited(_),
                    ..
                },
            ..
        }) => {
            // The child already printed its own one-line error.
            return exit_code(exit);
        }
        Err(err) => {
            logging::error_line("token_userns_demo", &err);
            return match err {
                LearnError::NoLog { exit, .. }
                | LearnError::Run {
                    source: SupervisorError::ChildDied { exit, .. },
                    ..
                } if exit.exit_code() != 0 => exit_code(exit),
                _ => ExitCode::FAILURE,
            };
        }
    };
    let names = EnumNames::for_running_kernel();
    let text = outcome.policy_file(names).render(names);
    if let Err(error) = destination.write(&text) {
        eprintln!(
            "token_userns_demo: error: --learn: writing {}: {error}",
            destination.path().display()
        );
        return ExitCode::FAILURE;
    }
    for line in outcome.summary(destination.path(), names) {
        eprintln!("token_userns_demo: {line}");
    }
    // What --policy FILE would say about the learned delegation.
    if let Ok(warnings) = risk::check(&outcome.delegation(), outcome.caps, names) {
        for warning in warnings {
            log::warn!("{warning}");
        }
    }
    ExitCode::from(u8::try_from(outcome.exit_code()).unwrap_or(1))
}

/// Runs the sandbox; the warnings about what the run grants come once the supervisor is known
/// to have the privilege to run it at all.
fn run(options: &SupervisorOptions, warnings: &[String]) -> ExitCode {
    if let Err(err) = userns::check_supervisor_privilege() {
        logging::error_line("token_userns_demo", &err);
        return ExitCode::FAILURE;
    }
    for warning in warnings {
        log::warn!("{warning}");
    }
    match supervisor::run(options) {
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
            logging::error_line("token_userns_demo", &err);
            match err {
                SupervisorError::ChildDied { exit, .. } => exit_code(exit),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// The kfunc `bpf_rdonly_cast(addr, 0)` (Linux 6.17, upstream commit f2362a57aeff) returns a
/// `void *` whose loads the verifier turns into fault-tolerant kernel reads without asking for
/// CAP_PERFMON, and every program type may call it: with `prog_load` delegated, CAP_BPF alone
/// reads kernel memory, whatever the command's other capabilities (a red team read a root-only
/// file from the page cache on 6.18). Refusing such programs from user space would race the
/// caller (the instructions stay in its memory until the kernel copies them), so the run says
/// it before it starts.
fn kfunc_kernel_read_warning(delegation: &Delegation) -> Option<String> {
    const BPF_PROG_LOAD: u32 = 5;
    if !delegation.get(DelegateKind::Cmds).contains(BPF_PROG_LOAD) {
        return None;
    }
    let release = bpf_token_launcher::bpf::bpffs::kernel_release();
    let (major, minor) = preflight::parse_release(&release)?;
    ((major, minor) >= (6, 17)).then(|| format!(
        "on this kernel ({release}) prog_load lets the command read kernel memory through the kfunc bpf_rdonly_cast (Linux 6.17 and later), whatever capabilities it loses: run only commands you trust with it"
    ))
}

/// Checks a `--preserve-fd` descriptor is open, and lets it through exec.
fn preserve(fd: i32, status_fd: Option<i32>) -> Result<(), String> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    if fd <= 2 {
        return Err(format!(
            "--preserve-fd {fd}: descriptors 0, 1 and 2 always pass through"
        ));
    }
    if Some(fd) == status_fd {
        return Err(format!(
            "--preserve-fd {fd}: that descriptor is --json-status's, which the command must not get"
        ));
    }
    // SAFETY: only borrowed for the fcntl calls, while the caller's descriptor stays open.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::empty()))
        .map_err(|e| format!("--preserve-fd {fd}: the descriptor is not open ({e})"))?;
    Ok(())
}

/// Closes every descriptor above 2 the caller left open, except `keep` (and `--json-status`'s,
/// which [`status_sink`] made close-on-exec). A root caller's open files (a secret it read, a
/// directory fd on `/`) would otherwise pass to the command through fork and exec.
fn close_inherited_descriptors(keep: &[i32]) -> Result<(), String> {
    bpf_token_launcher::sys::file::close_descriptors_except(keep, STATUS_FD.get().copied())
        .map_err(|e| format!("closing the caller's descriptors: {e}"))
}

/// `--check`: the report on stdout; exit 0 only when the demo can run.
fn check(
    delegation: Delegation,
    identity: HostIdentity,
    json: bool,
    cgroup_parent: Option<PathBuf>,
) -> ExitCode {
    let report = preflight::check(&preflight::CheckOptions {
        delegation,
        identity,
        cgroup_parent,
    });
    let text = if json {
        format!(
            "{}\n",
            serde_json::to_string(&report).expect("the report serialises")
        )
    } else {
        report.to_string()
    };
    if let Err(error) = logging::write_stdout(&text) {
        return ExitCode::from(logging::stdout_failure("token_userns_demo", &error));
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The `--json-status` descriptor, kept open by [`close_inherited_descriptors`].
static STATUS_FD: std::sync::OnceLock<i32> = std::sync::OnceLock::new();

/// Takes over an inherited descriptor for status events, close-on-exec so the sandbox's
/// command does not inherit it. A descriptor events cannot be written to (read-only, a
/// directory) is refused here rather than losing every event later.
fn status_sink(fd: i32) -> Result<StatusSink, String> {
    use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
    use std::os::fd::{FromRawFd as _, OwnedFd};
    if fd <= 2 {
        return Err(format!(
            "--json-status {fd}: use a descriptor above 2 (e.g. 3>status.json)"
        ));
    }
    // SAFETY: only borrowed for the probes; ownership is taken below once it is known usable.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = fcntl(borrowed, FcntlArg::F_GETFL)
        .map_err(|e| format!("--json-status {fd}: the descriptor is not open ({e})"))?;
    let mode = OFlag::from_bits_truncate(flags) & OFlag::O_ACCMODE;
    if mode != OFlag::O_WRONLY && mode != OFlag::O_RDWR {
        return Err(format!(
            "--json-status {fd}: the descriptor is open read-only; open it for writing (e.g. 3>status.json)"
        ));
    }
    let stat = nix::sys::stat::fstat(borrowed)
        .map_err(|e| format!("--json-status {fd}: fstat failed ({e})"))?;
    if stat.st_mode & libc::S_IFMT == libc::S_IFDIR {
        return Err(format!("--json-status {fd}: the descriptor is a directory"));
    }
    fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|e| format!("--json-status {fd}: the descriptor is not open ({e})"))?;
    let _ = STATUS_FD.set(fd);
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
    // Far beyond any run, and far below what the monotonic clock can add without overflow.
    const MAX_SECS: f64 = 1e9;
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!(
            "{text:?}: the timeout must be a positive number of seconds"
        ));
    }
    if secs > MAX_SECS {
        return Err(format!(
            "{text:?}: the timeout must be at most {MAX_SECS:e} seconds"
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"))
}

fn exit_code(exit: ChildExit) -> ExitCode {
    ExitCode::from(u8::try_from(exit.exit_code()).unwrap_or(1))
}
