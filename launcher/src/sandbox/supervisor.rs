//! `token_userns_demo`: a root supervisor and a sandbox child in new user, mount and network
//! namespaces (and, to run a command, a PID namespace), sharing one delegated bpffs.
//!
//! ```text
//! supervisor (host root)                 sandbox child
//!   setgroups([]), socketpair,
//!   clone3(NEWUSER|NEWNS[|NEWPID]) ─────▶ mount("/", MS_REC|MS_PRIVATE)
//!   write uid_map, setgroups, gid_map
//!                    ─── IdMapsWritten ─▶ setresgid/setresuid(0), fsopen("bpf")
//!                    ◀── BpffsContext(fd)
//!   fsconfig delegate_*, CMD_CREATE        unshare(NET), lo up (at the same time)
//!                    ─── SuperblockCreated ▶ fsmount, move_mount to --bpffs-path
//!                    ◀── BpffsMounted
//!   veth, read /proc/<child>/mountinfo
//!                    ─── DelegationVerified ▶ token, load, attach, count (or fork and exec CMD)
//!   waitpid ◀──────────────────────────── exit status
//! ```
//!
//! The launch time of a sandbox is mostly kernel work: creating the namespaces, and the
//! `delegate_*` options, each of which costs the kernel a walk of the vmlinux BTF (~0.2 ms)
//! whatever form the value takes. The order overlaps the two slowest steps: the sandbox sends
//! its bpffs context as soon as it has one (the id maps must come first: the superblock's owner
//! is the caller's fsuid at `fsopen`, which must be the mapped host user, not host root) and
//! creates its network namespace while the supervisor sets the options, each on a CPU of its
//! own when there are two ([`crate::sandbox::placement`]). The masks go to the kernel as numbers, and
//! the read-back is checked against the built-in names first, so a run without `-v` never reads
//! the kernel's BTF itself.

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::{ForkResult, Pid};

use crate::bpf::bpffs::{self, BpffsError};
use crate::counter::{self, TraceError, TraceOptions};
use crate::diagnosis::{Diagnosed, Step};
use crate::logging::{self, Role};
use crate::mountinfo;
use crate::policy::{Delegation, EnumNames, PolicyMismatch};
use crate::sandbox::cgroup::{CgroupError, Limits, SandboxCgroup};
use crate::sandbox::channel::{
    ChannelError, CommandEnd, SandboxChannel, SupervisorChannel, channel_pair,
};
use crate::sandbox::confine::{self, CapabilityChoice, ConfineError};
use crate::sandbox::learn::Recording;
use crate::sandbox::net::{self, HostEnd, NetError, VethPair};
use crate::sandbox::pidns::{self, PidNsError};
use crate::sandbox::placement::Placement;
pub use crate::sandbox::relay::ChildExit;
use crate::sandbox::relay::{self, BlockedSignals, Reap};
use crate::sandbox::status::StatusSink;
use crate::sandbox::userns::{self, HostIdentity, UserNsError};
use crate::sys;
use crate::sys::SysError;

/// Everything the supervisor needs, checked before anything is forked.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    pub delegation: Delegation,
    /// A veth pair between the host and the sandbox (`--veth`).
    pub veth: Option<VethPair>,
    /// Where `--json-status` events go.
    pub status: Option<StatusSink>,
    /// Kill the whole sandbox after this long (the run then ends with [`ChildExit::TimedOut`]).
    pub timeout: Option<Duration>,
    pub identity: HostIdentity,
    /// Where the delegated bpffs is mounted in the sandbox's own mount namespace.
    pub bpffs_path: PathBuf,
    pub action: SandboxAction,
    /// The capabilities the sandbox's code (the command, or the demo) keeps.
    pub capabilities: CapabilityChoice,
    /// Run the command in a new session, without the caller's controlling terminal.
    pub new_session: bool,
    /// `--memory-max`, `--pids-max`, `--cgroup-parent`: a cgroup for the sandbox, created only
    /// when this is `Some`.
    pub limits: Option<Limits>,
}

/// What the sandbox does once it holds the delegated bpffs.
#[derive(Debug, Clone)]
pub enum SandboxAction {
    /// The demo: token from the bpffs, counter on `interface`.
    Trace {
        interface: String,
        send_traffic: bool,
    },
    /// Point `LIBBPF_BPF_TOKEN_PATH` at the bpffs and exec `argv`; `gateway`: serve the
    /// `bpf()` gateway ([`crate::sandbox::gateway`]) for it; `recording`: a run of `--learn`
    /// ([`crate::sandbox::learn`]).
    Exec {
        argv: Vec<OsString>,
        gateway: bool,
        recording: Option<Recording>,
    },
    /// `--check`: the demo on `lo` without its report, failing unless the counter saw exactly
    /// the one datagram. The sandbox's stderr goes to `stderr` (a memfd the caller reads after
    /// the run, so a long verifier log can never block the sandbox on a full pipe).
    Probe { stderr: Arc<OwnedFd> },
}

/// Runs the whole demo: returns how the sandbox child ended.
///
/// The process must be single-threaded: the sandbox is created by a fork-like `clone3`, which
/// copies only the calling thread. The calling process loses its supplementary groups (see
/// [`userns::drop_supplementary_groups`]).
pub fn run(options: &SupervisorOptions) -> Result<ChildExit, SupervisorError> {
    userns::check_supervisor_privilege().map_err(SupervisorError::Privilege)?;
    let threads = thread_count().map_err(SupervisorError::Threads)?;
    if threads != 1 {
        return Err(SupervisorError::MultiThreaded { threads });
    }
    userns::drop_supplementary_groups().map_err(SupervisorError::UserNs)?;
    // The veth's /30 is reserved before the fork, so that the sandbox child knows its address;
    // the reservation lasts until this function returns, after the host end is deleted.
    let veth = options
        .veth
        .as_ref()
        .map(VethPair::reserve)
        .transpose()
        .map_err(SupervisorError::Net)?;
    let options = &SupervisorOptions {
        veth: veth.as_ref().map(|v| v.veth.clone()),
        ..options.clone()
    };
    let pair = channel_pair().map_err(SupervisorError::Channel)?;
    // Blocked before the clone so that a signal arriving at any moment is queued for the relay
    // loop, in the supervisor and in the sandbox alike.
    let signals = BlockedSignals::block().map_err(SupervisorError::Signals)?;
    let deadline = options.timeout.map(|t| (Instant::now() + t, t));
    let placement = Placement::choose();
    if let Some(placement) = &placement {
        placement.pin_supervisor();
    }
    // A command gets a PID namespace with the sandbox as its init; the demo runs in the sandbox
    // process itself, which must not be an init (the kernel drops Ctrl-C to one).
    let (namespaces, call) = match options.action {
        // And an IPC namespace: System V shared memory, queues and semaphores the command
        // makes would otherwise stay on the host after it (and outside its --memory-max).
        SandboxAction::Exec { .. } => (
            CloneFlags::CLONE_NEWUSER
                | CloneFlags::CLONE_NEWNS
                | CloneFlags::CLONE_NEWPID
                | CloneFlags::CLONE_NEWIPC,
            "clone3(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC)",
        ),
        SandboxAction::Trace { .. } | SandboxAction::Probe { .. } => (
            CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS,
            "clone3(CLONE_NEWUSER | CLONE_NEWNS)",
        ),
    };

    if options.limits.is_some() && options.identity.uid == 0 {
        // The cgroup files belong to host uid 0, which the sandbox's root then is.
        log::warn!(
            "--uid 0: the command owns the host's cgroup files, so it can raise or leave its --memory-max and --pids-max"
        );
    }
    // Before the fork, so the child can be born in it; dropped (killed, removed) on return.
    let cgroup = options
        .limits
        .as_ref()
        .map(SandboxCgroup::create)
        .transpose()
        .map_err(SupervisorError::Cgroup)?;
    let clone_target = cgroup.as_ref().and_then(SandboxCgroup::clone_target);

    // SAFETY: single-threaded (checked above), so the child may run arbitrary code.
    let (forked, born_in_cgroup) =
        unsafe { sys::process::fork_into_cgroup(namespaces, clone_target, call) }.map_err(
            |source| {
                SupervisorError::UserNs(UserNsError::Create(Diagnosed::new(
                    Step::CreateNamespaces,
                    source,
                )))
            },
        )?;
    match forked {
        ForkResult::Child => {
            // The copy only closes its descriptors (the keeper then waits for the supervisor
            // alone); the supervisor's value removes the cgroups.
            if let Some(cgroup) = cgroup {
                cgroup.disarm();
            }
            if let SandboxAction::Probe { stderr } = &options.action {
                // Best effort: if it fails, the messages reach the caller's stderr instead.
                let _ = nix::unistd::dup2_stderr(stderr.as_fd());
            }
            if let SandboxAction::Exec {
                recording: Some(recording),
                ..
            } = &options.action
            {
                recording.redirect_stdio();
            }
            logging::set_role(Role::Sandbox);
            drop(pair.supervisor);
            // Closing this copy keeps the /30 reserved: the supervisor's copy holds the lock.
            drop(veth);
            let result = sandbox(&pair.sandbox, options, &signals, placement.as_ref());
            let code = match result {
                Ok(code) => code,
                Err(SupervisorError::Output(error)) => {
                    i32::from(logging::stdout_failure("token_userns_demo", &error))
                }
                Err(err) => {
                    crate::logging::error_line("token_userns_demo", &err);
                    1
                }
            };
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            // The child must never return into the caller's code: it is a copy of the caller's
            // process, and unwinding back into it would run the caller's logic twice.
            std::process::exit(code);
        }
        ForkResult::Parent { child } => {
            logging::set_role(Role::Supervisor);
            drop(pair.sandbox);
            if let Some(placement) = &placement {
                // While the child still waits in this CPU's run queue.
                placement.move_sandbox(child);
            }
            log::debug!("{call} = sandbox child pid {child}");
            if let Some(cgroup) = &cgroup {
                // The child waits for its id maps: it runs nothing of the command's before.
                if let Err(err) = cgroup.place(child, born_in_cgroup) {
                    let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                    let _ = relay::wait_blocking(child);
                    return Err(SupervisorError::Cgroup(err));
                }
                if let Some(status) = &options.status {
                    status.limits(cgroup);
                }
            }
            if let Some(placement) = &placement {
                log::debug!(
                    "setup runs with the supervisor on CPU {} and the sandbox on CPU {}",
                    placement.supervisor_cpu(),
                    placement.sandbox_cpu()
                );
            }
            let waited = |deadline| {
                relay::wait_forwarding(child, Reap::ChildOnly, deadline)
                    .map_err(SupervisorError::Wait)
            };
            // The deadline covers the setup too: a sandbox stopped (SIGSTOP from a process of
            // its host uid) or stalled during setup must not hang the supervisor.
            pair.supervisor.set_deadline(deadline.map(|(at, _)| at));
            match supervise(&pair.supervisor, child, options) {
                Ok(host_end) => {
                    let exit = waited(deadline)?;
                    // Deleted here, whatever became of the sandbox's network namespace.
                    drop(host_end);
                    log_peak_memory();
                    let command = pair.supervisor.command_end();
                    if let Some(status) = &options.status {
                        status.exited(exit, command);
                    }
                    Ok(exit)
                }
                Err(SupervisorError::Channel(ChannelError::TimedOut { expected, .. })) => {
                    let (_, after) = deadline.expect("only a deadline times out");
                    log::debug!(
                        "timeout of {after:?} reached during setup, waiting for {expected}: SIGKILL to pid {child}"
                    );
                    let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                    let _ = relay::wait_blocking(child);
                    let exit = ChildExit::TimedOut(after);
                    if let Some(status) = &options.status {
                        status.exited(exit, None);
                    }
                    Ok(exit)
                }
                Err(SupervisorError::Channel(ChannelError::Closed { expected, .. })) => {
                    // The child ended early: its own error is already on stderr; report how it ended.
                    let exit = waited(None)?;
                    Err(SupervisorError::ChildDied {
                        expected: expected.to_string(),
                        exit,
                    })
                }
                Err(err) => {
                    // A sandbox killed from outside during setup makes the step that needed it
                    // fail in its own way (its /proc files vanish, say): report the death,
                    // which is the cause.
                    let dying = matches!(&err, SupervisorError::MountInfo { .. });
                    let within = Duration::from_millis(if dying { 200 } else { 0 });
                    if let Ok(Some(exit)) = relay::collect_within(child, within) {
                        log::debug!("setup failed after the sandbox child ended: {err}");
                        return Err(SupervisorError::ChildDied {
                            expected: "the setup to finish".to_owned(),
                            exit,
                        });
                    }
                    // Nothing may outlive a failed run: the child holds the namespaces.
                    let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                    let _ = relay::wait_blocking(child);
                    Err(err)
                }
            }
        }
    }
}

/// `-v`: the most memory each side used. RUSAGE_CHILDREN covers the reaped sandbox child and
/// what it reaped in turn (the command).
fn log_peak_memory() {
    use nix::sys::resource::{UsageWho, getrusage};
    if !log::log_enabled!(log::Level::Debug) {
        return;
    }
    let peak_kib = |who| getrusage(who).map_or(-1, |usage| usage.max_rss());
    log::debug!(
        "peak RSS: supervisor {} KiB, sandbox {} KiB",
        peak_kib(UsageWho::RUSAGE_SELF),
        peak_kib(UsageWho::RUSAGE_CHILDREN)
    );
}

fn thread_count() -> Result<usize, std::io::Error> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// The supervisor's part: id maps, then delegation and superblock, then the check. Returns the
/// veth's host end, which is deleted when dropped (on an error here too).
fn supervise(
    channel: &SupervisorChannel,
    child: Pid,
    options: &SupervisorOptions,
) -> Result<Option<HostEnd>, SupervisorError> {
    userns::write_id_maps(child, options.identity).map_err(SupervisorError::UserNs)?;
    channel
        .id_maps_written()
        .map_err(SupervisorError::Channel)?;
    if log::log_enabled!(log::Level::Debug) {
        // Only -v needs them this early (to show the masks by name).
        log::debug!(
            "kernel enum names: {}",
            EnumNames::for_running_kernel().source()
        );
    }
    let context = channel
        .wait_bpffs_context()
        .map_err(SupervisorError::Channel)?;
    log::debug!("received bpffs context as fd {}", context.as_raw_fd());
    bpffs::check_is_bpf_context(context.as_fd()).map_err(SupervisorError::Bpffs)?;
    bpffs::delegate_and_create(context.as_fd(), &options.delegation)
        .map_err(SupervisorError::Bpffs)?;
    drop(context);
    channel
        .superblock_created()
        .map_err(SupervisorError::Channel)?;

    channel
        .wait_bpffs_mounted()
        .map_err(SupervisorError::Channel)?;
    // The sandbox has its network namespace by now (it unshared it before mounting).
    let host_end = match &options.veth {
        Some(veth) => {
            let host_end = veth.create(child.as_raw()).map_err(SupervisorError::Net)?;
            log::debug!("veth {veth}");
            Some(host_end)
        }
        None => None,
    };
    verify_mounted_delegation(child, options)?;
    if let Some(status) = &options.status {
        let names = EnumNames::for_running_kernel();
        status.sandbox_ready(
            child,
            &options.bpffs_path,
            &options.delegation,
            &options.capabilities,
            names,
            options.veth.as_ref(),
        );
    }
    channel
        .delegation_verified()
        .map_err(SupervisorError::Channel)?;
    Ok(host_end)
}

/// Reads the sandbox's mount table as the kernel shows it and checks the bpffs there carries
/// exactly the delegation that was asked for. `fsconfig` accepts unknown keys silently, so this
/// is the only way to know a kernel did not ignore an option.
///
/// The expected text is first rendered with the built-in names (the UAPI enums, whose values
/// never change): when the kernel shows exactly that, the masks are equal and reading the
/// kernel's BTF (~0.5 ms) is skipped. Any difference is judged with the running kernel's own
/// names, which also name the difference in the error.
fn verify_mounted_delegation(
    child: Pid,
    options: &SupervisorOptions,
) -> Result<(), SupervisorError> {
    let mounts = mountinfo::read(Some(child))
        .map_err(|source| SupervisorError::MountInfo { pid: child, source })?;
    // The last entry for a path is the mount on top, the one a lookup of the path finds.
    let mounted = mounts
        .iter()
        .rev()
        .find(|m| m.mount_point == options.bpffs_path)
        .filter(|m| m.fs_type == "bpf")
        .ok_or_else(|| SupervisorError::BpffsNotMounted {
            path: options.bpffs_path.clone(),
        })?;
    log::debug!(
        "/proc/{child}/mountinfo: {} bpf {}",
        mounted.mount_point.display(),
        mounted.super_options
    );
    let delegation = &options.delegation;
    if delegation
        .check_mounted(&mounted.super_options, &EnumNames::builtin())
        .is_err()
    {
        let names = EnumNames::for_running_kernel();
        log::debug!(
            "the mounted options differ from the built-in names' rendering; checking with the kernel enum names ({})",
            names.source()
        );
        delegation
            .check_mounted(&mounted.super_options, names)
            .map_err(SupervisorError::PolicyMismatch)?;
    }
    log::debug!("mounted delegation matches the policy");
    Ok(())
}

/// Kills this process when the supervisor dies, and checks it has not died already.
fn die_with_supervisor(channel: &SandboxChannel) -> Result<(), SupervisorError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|errno| SupervisorError::Sandbox {
        step: "setting the parent-death signal",
        source: Diagnosed::unexplained(SysError {
            call: "prctl(PR_SET_PDEATHSIG)",
            errno,
        }),
    })?;
    // getppid() cannot tell: in a new PID namespace the parent is invisible (it reads 0).
    if !channel.supervisor_alive() {
        return Err(SupervisorError::SupervisorGone);
    }
    Ok(())
}

/// The sandbox child's part.
fn sandbox(
    channel: &SandboxChannel,
    options: &SupervisorOptions,
    signals: &BlockedSignals,
    placement: Option<&Placement>,
) -> Result<i32, SupervisorError> {
    die_with_supervisor(channel)?;
    // The new mount namespace copied the host's propagation: make it private so nothing mounted
    // here can propagate back to the host. Full capabilities in the new user namespace are
    // enough, so this runs while the supervisor writes the id maps.
    sys::mount::make_tree_private().map_err(|source| SupervisorError::Sandbox {
        step: "making / private",
        source: Diagnosed::unexplained(source),
    })?;
    log::debug!("mount(/, MS_REC|MS_PRIVATE)");
    channel.wait_id_maps().map_err(SupervisorError::Channel)?;
    userns::become_namespace_root().map_err(SupervisorError::UserNs)?;
    log::debug!(
        "setresgid(0)/setresuid(0): root in the user namespace, {} on the host",
        options.identity
    );
    // The kernel clears the parent-death signal when credentials change: set it again.
    die_with_supervisor(channel)?;

    // After the credential change: the bpffs root belongs to the caller's fsuid/fsgid at fsopen.
    let context = bpffs::open_context().map_err(SupervisorError::Bpffs)?;
    log::debug!("fsopen(\"bpf\") = fd {}", context.as_raw_fd());
    channel
        .send_bpffs_context(context.as_fd())
        .map_err(SupervisorError::Channel)?;
    log::debug!(
        "sent bpffs context fd {} over SCM_RIGHTS",
        context.as_raw_fd()
    );
    // While the supervisor sets the delegate options (each costs the kernel a walk of its BTF):
    // creating a network namespace is one of the slowest steps of the setup, and the two run
    // on both CPUs at once when there are two.
    nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|errno| SupervisorError::Sandbox {
        step: "creating the network namespace",
        source: Diagnosed::new(
            Step::CreateNetworkNamespace,
            SysError {
                call: "unshare(CLONE_NEWNET)",
                errno,
            },
        ),
    })?;
    log::debug!("unshare(CLONE_NEWNET): new network namespace");
    net::bring_up_loopback().map_err(SupervisorError::Net)?;
    log::debug!("lo is up");
    if let SandboxAction::Exec { .. } = options.action {
        // Here, while the supervisor still sets the delegate options, and before the delegated
        // bpffs is mounted: reading the mount table later would make the kernel render that
        // bpffs's delegate options with its BTF names (~0.2 ms each, the slowest part of a
        // mountinfo read).
        let covered = confine::hide_host_cgroups().map_err(SupervisorError::Confine)?;
        if !covered.is_empty() {
            log::debug!("host cgroup2 mounts covered with empty tmpfs: {covered:?}");
        }
    }
    channel
        .wait_superblock()
        .map_err(SupervisorError::Channel)?;
    let mount = bpffs::mount(context.as_fd()).map_err(SupervisorError::Bpffs)?;
    drop(context);
    log::debug!("fsmount = mount fd {}", mount.as_raw_fd());
    let bpffs_path = &options.bpffs_path;
    let target = CString::new(bpffs_path.as_os_str().as_bytes())
        .expect("the binary refuses paths with NUL bytes");
    crate::sys::mount::move_mount_to(mount.as_fd(), &target).map_err(|source| {
        SupervisorError::Sandbox {
            step: "mounting the bpffs at its path",
            source: Diagnosed::unexplained(source),
        }
    })?;
    log::debug!(
        "move_mount(fd {}, {}): bpffs attached",
        mount.as_raw_fd(),
        bpffs_path.display()
    );
    drop(mount);
    channel.bpffs_mounted().map_err(SupervisorError::Channel)?;
    channel
        .wait_delegation_verified()
        .map_err(SupervisorError::Channel)?;
    if let Some(veth) = &options.veth {
        veth.configure_sandbox_end().map_err(SupervisorError::Net)?;
        log::debug!("{} is up", veth.sandbox_name);
    }

    match &options.action {
        SandboxAction::Trace {
            interface,
            send_traffic,
        } => {
            // The demo is our own code, but it needs no more than the command would get.
            confine::drop_now(&options.capabilities).map_err(SupervisorError::Confine)?;
            // The demo runs in this process: let Ctrl-C and kill interrupt it as usual.
            signals.restore().map_err(SupervisorError::Signals)?;
            let trace = TraceOptions {
                token_path: bpffs_path.clone(),
                interface: interface.clone(),
                send_traffic: *send_traffic,
                hold: false,
            };
            let report =
                counter::run_trace(&trace).map_err(|error| SupervisorError::Trace { error })?;
            logging::write_stdout(&report.to_string()).map_err(SupervisorError::Output)?;
            Ok(0)
        }
        SandboxAction::Probe { .. } => {
            confine::drop_now(&options.capabilities).map_err(SupervisorError::Confine)?;
            signals.restore().map_err(SupervisorError::Signals)?;
            let trace = TraceOptions {
                token_path: bpffs_path.clone(),
                interface: "lo".to_owned(),
                send_traffic: true,
                hold: false,
            };
            let report =
                counter::run_trace(&trace).map_err(|error| SupervisorError::Trace { error })?;
            if report.delta() != 1 {
                return Err(SupervisorError::ProbeCount {
                    delta: report.delta(),
                });
            }
            Ok(0)
        }
        SandboxAction::Exec {
            argv,
            gateway,
            recording,
        } => {
            // The command runs on the caller's CPUs, not on the one the setup was kept on.
            if let Some(placement) = placement {
                placement.release();
            }
            let spec = pidns::CommandSpec {
                argv,
                bpffs_path,
                capabilities: &options.capabilities,
                new_session: options.new_session,
                gateway: *gateway,
                status: options.status.as_ref(),
                call_log: recording.as_ref().map(Recording::call_log),
            };
            let exit = pidns::run_as_init(&spec).map_err(SupervisorError::PidNs)?;
            let end = match exit {
                ChildExit::Signaled(signal) => CommandEnd::Signaled(signal as u8),
                other => CommandEnd::Exited(u8::try_from(other.exit_code() & 0xff).unwrap_or(1)),
            };
            // Best effort: the supervisor only uses it to name the signal in --json-status.
            let _ = channel.command_ended(end);
            Ok(exit.exit_code())
        }
    }
}

/// A failed run of the supervisor or of its sandbox child.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("{0}")]
    Privilege(UserNsError),
    #[error("supervisor: the process has {threads} threads; fork needs a single-threaded caller")]
    MultiThreaded { threads: usize },
    #[error("supervisor: reading /proc/self/task to check the process is single-threaded: {}", describe_io(.0))]
    Threads(std::io::Error),
    #[error("supervisor: fork: {0}")]
    Fork(SysError),
    #[error("supervisor: waiting for the sandbox child: {0}")]
    Wait(SysError),
    #[error("parent/child channel: {0}")]
    Channel(ChannelError),
    #[error("sandbox child {exit} while the supervisor expected {expected}")]
    ChildDied { expected: String, exit: ChildExit },
    #[error("sandbox: the supervisor exited before the sandbox was set up")]
    SupervisorGone,
    #[error("user namespace: {0}")]
    UserNs(UserNsError),
    #[error("bpffs: {0}")]
    Bpffs(BpffsError),
    #[error("supervisor: reading /proc/{pid}/mountinfo to check the delegation: {source}")]
    MountInfo { pid: Pid, source: std::io::Error },
    #[error("supervisor: no bpffs is mounted at {} in the sandbox's mount table after move_mount", path.display())]
    BpffsNotMounted { path: PathBuf },
    #[error("supervisor: {0}")]
    PolicyMismatch(PolicyMismatch),
    #[error("sandbox: {step}: {source}")]
    Sandbox {
        step: &'static str,
        source: Diagnosed,
    },
    #[error("sandbox network: {0}")]
    Net(NetError),
    #[error("sandbox: {0}")]
    PidNs(PidNsError),
    #[error("blocking signals for the relay: {0}")]
    Signals(SysError),
    #[error("{}: {error}", error.step())]
    Trace { error: TraceError },
    #[error("count: the counter on lo saw {delta} datagrams instead of the 1 sent")]
    ProbeCount { delta: u64 },
    #[error("sandbox: {0}")]
    Confine(ConfineError),
    #[error("writing the report to stdout: {0}")]
    Output(std::io::Error),
    #[error("sandbox cgroup: {0}")]
    Cgroup(CgroupError),
}

/// An I/O error with the cause of the errors a supervisor can hit for a reason of its caller's.
fn describe_io(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::EMFILE) => format!(
            "{error}: the caller's descriptor limit is too low (`ulimit -n`); allow at least 64"
        ),
        Some(libc::ENFILE) => format!("{error}: the system's file table is full (fs.file-max)"),
        _ => error.to_string(),
    }
}
