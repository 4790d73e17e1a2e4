//! The sandbox's `bpf()` gateway: loaders that know nothing of BPF tokens (stock aya, anything
//! calling `bpf()` itself) use the delegation unchanged, and every call the delegation does not
//! cover is explained.
//!
//! How: the command's seccomp filter ([`crate::sandbox::confine::command_filter`]) stops every `bpf()`
//! call of a command that takes a token (`BPF_MAP_CREATE`, `BPF_PROG_LOAD`, `BPF_BTF_LOAD`) and
//! hands it to a listener held by the sandbox's init, PID 1 of the command's PID namespace,
//! which also holds a token made from the delegated bpffs. For each call the gateway reads the
//! caller's `bpf_attr` (`process_vm_readv`), decodes it ([`crate::policy::calls`]) and, when the
//! call carries no token and its attr is long enough for one, puts a copy of the token into the
//! caller's descriptor table (`SECCOMP_IOCTL_NOTIF_ADDFD`, close-on-exec, once per descriptor
//! table), writes the token's number and `BPF_F_TOKEN_FD` into the caller's attr
//! (`process_vm_writev`) and lets the call run (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`): the kernel
//! then performs the call itself, reading the attr again, as if the loader had passed the token.
//!
//! Why this grants nothing: the gateway never makes a `bpf()` call for the caller and never
//! answers one with a result; every call still runs in the caller, with the caller's
//! credentials, and the kernel checks the token's delegation and the caller's capabilities in
//! the token's user namespace as for any loader. The token is one the command could make
//! itself: the bpffs is mounted at `LIBBPF_BPF_TOKEN_PATH` in its own mount namespace, and it
//! is root of the user namespace that owns it. The gateway only saves token-unaware loaders that
//! work. For the same reason the usual weakness of seccomp notifiers, that a caller's other
//! threads can change the attr between the gateway's read and the kernel's, is harmless here:
//! nothing is decided on what was read, and a caller racing itself only breaks its own call.
//!
//! `token_exec` ([`crate::sandbox::exec`]) serves the same gateway from a command's parent, for
//! a delegated bpffs someone else made; what is said here of PID 1 holds for that parent too.
//!
//! Invariants, because PID 1 runs under the same filter as the command:
//! - PID 1 makes no notified `bpf()` call once the filter is installed: it would wait for an
//!   answer only it can give. The token is created before the filter (`BPF_TOKEN_CREATE` is not
//!   notified anyway); what the token allows is read from its fdinfo, not with `bpf()`.
//! - Every notification is answered `CONTINUE`, untouched when any step fails (logged at
//!   `-v`), never with an error of ours and never left waiting: a gateway failure must not break
//!   a call that could have worked (a token-aware loader's) or hang the command. A caller that
//!   died meanwhile (`SECCOMP_IOCTL_NOTIF_ID_VALID` fails, ENOENT from an ioctl, ESRCH) is
//!   skipped.
//! - The caller's pid is the one in the notification, which the kernel gives in the listener's
//!   PID namespace: PID 1's own, the command's. The sandbox's `/proc` is the host's, whose
//!   numbers differ, so `/proc/<pid>` is never used with it: memory goes through
//!   `process_vm_readv/writev`, which take pids of the caller's namespace, and anything read is
//!   trusted only if `ID_VALID` still holds afterwards (a killed caller's pid can be reused).
//!   The one write made after that check targets the same pid: in the microseconds between, a
//!   reuse would need the whole pid space to wrap, and could only reach another process of the
//!   command's, which the command controls anyway.
//! - One injection per descriptor table: threads share one, so a caller's thread finds the
//!   token its sibling got; a child forked after the injection inherits it. Before reusing a
//!   number the gateway checks with `kcmp(KCMP_FILE)` that the caller's descriptor there still
//!   is the token: a loader that closed it, reused the number or `exec`ed (close-on-exec drops
//!   it) gets the token again.
//!
//! The same filter also sends the gateway every `perf_event_open`, which it only looks at: the
//! type of the event (`struct perf_event_attr`'s first field, read as the `bpf_attr` is) tells
//! the tracepoint, kprobe and uprobe events that attach tracing programs, which the kernel
//! allows only with CAP_PERFMON in the host's user namespace and so no token ever grants; they
//! are explained like uncovered calls ([`crate::policy::calls::ProbeFindings`]). The call is
//! always answered `CONTINUE` untouched: the kernel decides, as without the gateway. A command
//! that never calls `perf_event_open` never stops for it: the filter only gains two compares
//! (measured on the development VM, release build: `-- /bin/true` 3.45 ms median before and
//! after; `dd bs=1` making 4 million other syscalls 541 ms and 540 ms, medians of 15). Each
//! call costs its caller about 20-50 µs, plus the caller's name for the first probe event of
//! each kind.
//!
//! For `--learn` ([`crate::sandbox::learn`]) the gateway also logs every call, those that carry
//! a token of their own included, with its first callers' names ([`Gateway::log_calls`]).
//!
//! Costs are reported at `-v`: the time from receiving a call to answering it, per call and
//! in total (without the time `-v` itself spends naming the caller). Measured on the 2-vCPU
//! development VM (release build): a `BPF_MAP_CREATE` that takes 0.8 µs with a token directly
//! takes 5-6 µs through the gateway in a tight loop, 6.5-7.5 µs when the gateway patches it;
//! `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` is what keeps it there (40-48 µs without). A loader that
//! works between its calls finds the gateway asleep and pays about 50 µs per call (the counter's
//! three calls: 0.17-0.25 ms load without the gateway, 0.32-0.42 ms with). A command making no
//! notified call pays the token and the listener before it starts: about 45 µs of the launch.

use std::collections::HashMap;
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use serde_json::json;

use crate::bpf::token::Token;
use crate::policy::calls::{
    ATTR_SIZE, BpfCall, Caller, Finding, Findings, PERF_ATTR_READ, PerfProbe, ProbeFindings,
    ProbePmus, TokenCommand,
};
use crate::policy::learn::CallLog;
use crate::policy::risk::CapsKept;
use crate::policy::{Delegation, EnumNames};
use crate::sandbox::confine;
use crate::sandbox::relay::Watch;
use crate::sandbox::status::StatusSink;
use crate::sys::seccomp::{self, Notification, RemoteFd};
use crate::sys::{self, Errno, SysError};

/// The most tasks whose token number is remembered (a command forking without end must not
/// grow PID 1); the cache is only a shortcut, the numbers the token was given at are tried too.
const MAX_KNOWN_TASKS: usize = 4096;
/// The most distinct numbers the token was given at that are tried before injecting again.
const MAX_NUMBERS: usize = 16;

/// What happened to one notified call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The call now carries the token at the caller's `fd`; `injected` when the gateway just
    /// added it to the caller's table, else it was already there.
    Patched { fd: RemoteFd, injected: bool },
    /// The call carries a token of its own: untouched.
    CarriedToken,
    /// The caller's attr is too short to carry a token: untouched.
    TooShort,
    /// Not a command that takes a token (the filter sends none; kept for robustness).
    NotTokenCommand,
    /// A step failed: the call ran untouched.
    Failed { step: &'static str, error: SysError },
    /// The caller died before it could be answered.
    CallerGone,
    /// A `perf_event_open`, looked at and passed on untouched: `probe` when it opens a
    /// tracepoint, kprobe or uprobe event.
    PerfEventOpen { probe: Option<PerfProbe> },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Patched { fd, injected: true } => {
                write!(f, "token added as its fd {}, attr patched", fd.0)
            }
            Self::Patched {
                fd,
                injected: false,
            } => write!(f, "token already its fd {}, attr patched", fd.0),
            Self::CarriedToken => f.write_str("carries its own token: untouched"),
            Self::TooShort => f.write_str("attr too short for a token: untouched"),
            Self::NotTokenCommand => f.write_str("takes no token: untouched"),
            Self::Failed { step, error } => write!(f, "{step}: {error}: passed on untouched"),
            Self::CallerGone => f.write_str("the caller died before the answer"),
            Self::PerfEventOpen { probe: Some(probe) } => write!(
                f,
                "a {} event, which no token grants: passed on untouched",
                probe.name()
            ),
            Self::PerfEventOpen { probe: None } => {
                f.write_str("no tracepoint, kprobe or uprobe event: passed on untouched")
            }
        }
    }
}

/// Counts for `-v` and `--json-status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayStats {
    pub notified: u64,
    /// Calls that got the token (`injected` of them by a new copy in the caller's table).
    pub patched: u64,
    pub injected: u64,
    pub carried_token: u64,
    pub too_short: u64,
    pub failed: u64,
    pub callers_gone: u64,
    /// `perf_event_open` calls seen (not among `notified`, which counts `bpf()` calls).
    pub perf_event_opens: u64,
    /// From receiving each `bpf()` call to answering it, summed.
    pub busy: Duration,
    pub slowest: Duration,
}

/// The gateway, in PID 1 of the command's PID namespace.
#[derive(Debug)]
pub struct Gateway {
    listener: OwnedFd,
    token: Token,
    /// What the token allows: the masks the kernel checks, from its fdinfo.
    allowed: Delegation,
    caps: CapsKept,
    /// This process's pid in its own namespace (for `kcmp`).
    me: Pid,
    /// The procfs this process saw at start, opened before the command could change the mount
    /// table they share (a command keeping CAP_SYS_ADMIN could mount over `/proc`).
    proc: Option<OwnedFd>,
    /// Task → the number the token was last found at or given in its descriptor table.
    known: HashMap<i32, RemoteFd>,
    /// The numbers the token was given at, most recent last.
    numbers: Vec<RemoteFd>,
    findings: Findings,
    /// The kernel's kprobe and uprobe PMU numbers, read at the first perf_event_open.
    pmus: std::cell::OnceCell<ProbePmus>,
    /// `kernel.perf_event_paranoid`, read when an explanation first needs it.
    paranoid: std::cell::OnceCell<Option<i32>>,
    /// Tracepoint, kprobe and uprobe events the command tried to open.
    probes: ProbeFindings,
    /// Every call, for `--learn` ([`Self::log_calls`]).
    log: Option<CallLog>,
    stats: GatewayStats,
}

impl Gateway {
    /// Takes the token (made before the filter was installed) and the filter's listener.
    pub fn new(token: Token, listener: OwnedFd, caps: CapsKept) -> Result<Self, GatewayError> {
        let allowed = token.allowed().map_err(GatewayError::TokenInfo)?;
        // Best effort (Linux 6.6): the listener is woken on the caller's CPU and the caller on
        // the listener's, a synchronous hand-off instead of two cross-CPU wake-ups (measured:
        // 5-6 µs per call instead of 40-48).
        if let Err(error) = seccomp::set_sync_wake_up(listener.as_fd()) {
            log::debug!("gateway: {error}: wake-ups stay asynchronous");
        }
        let proc = openat(
            nix::fcntl::AT_FDCWD,
            "/proc",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok();
        Ok(Self {
            listener,
            token,
            allowed,
            caps,
            me: nix::unistd::getpid(),
            proc,
            known: HashMap::new(),
            numbers: Vec::new(),
            findings: Findings::default(),
            // Read at the first perf_event_open, not here: sysfs lookups cost every launch
            // ~0.1 ms for commands that never make that call.
            pmus: std::cell::OnceCell::new(),
            paranoid: std::cell::OnceCell::new(),
            probes: ProbeFindings::default(),
            log: None,
            stats: GatewayStats::default(),
        })
    }

    /// Logs every call from now on, those carrying their own token included, with its
    /// callers' names (`--learn`).
    pub fn log_calls(&mut self) {
        self.log.get_or_insert_with(CallLog::default);
    }

    /// The calls logged since [`Self::log_calls`].
    pub const fn call_log(&self) -> Option<&CallLog> {
        self.log.as_ref()
    }

    pub fn listener(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// `kernel.perf_event_paranoid`, read once when first needed.
    fn paranoid(&self) -> Option<i32> {
        *self.paranoid.get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
                .ok()
                .and_then(|text| text.trim().parse().ok())
        })
    }

    /// What the token allows.
    pub const fn allowed(&self) -> &Delegation {
        &self.allowed
    }

    pub const fn findings(&self) -> &Findings {
        &self.findings
    }

    /// The tracepoint, kprobe and uprobe events the command tried to open.
    pub const fn probe_findings(&self) -> &ProbeFindings {
        &self.probes
    }

    pub const fn stats(&self) -> GatewayStats {
        self.stats
    }

    /// Receives one call and answers it. Call when the listener is readable.
    pub fn handle_next(&mut self) {
        let started = Instant::now();
        match seccomp::receive(self.listener.as_fd()) {
            Ok(notification) => {
                self.handle(&notification, started);
            }
            // Killed between the listener polling readable and the receive.
            Err(error) if error.errno == Errno::ENOENT => self.stats.callers_gone += 1,
            Err(error) if error.errno == Errno::EINTR => {}
            Err(error) => log::debug!("gateway: {error}"),
        }
    }

    /// Handles one received call and answers it; `started` is when it was received.
    pub fn handle(&mut self, notification: &Notification, started: Instant) -> Outcome {
        if confine::is_perf_event_open(notification.arch, notification.nr) {
            return self.observe_perf_event_open(notification, started);
        }
        let mut seen = Seen::default();
        let examined = self.examine(notification, &mut seen);
        let outcome = match examined {
            Err(Stop::Gone) => Outcome::CallerGone,
            Err(Stop::Failed { step, error }) => {
                self.answer(notification, Outcome::Failed { step, error })
            }
            Ok(outcome) => self.answer(notification, outcome),
        };
        // Naming the caller is for -v and explanations only: not part of the gateway's cost.
        let spent = started.elapsed().saturating_sub(seen.naming);
        self.count(&outcome, spent);
        if log::log_enabled!(log::Level::Debug) {
            let names = EnumNames::for_running_kernel();
            let who = seen.caller.map_or_else(
                || format!("pid {}", notification.pid),
                |caller| caller.to_string(),
            );
            let what = seen.call.as_ref().map_or_else(
                || format!("bpf(cmd {})", notification.args[0] as u32),
                |call| call.describe(names),
            );
            log::debug!(
                "gateway: {who} {what}: {outcome}, in {} µs (+{} µs naming the caller)",
                spent.as_micros(),
                seen.naming.as_micros()
            );
        }
        outcome
    }

    /// Every call still waiting is answered `CONTINUE`, patched or untouched.
    fn answer(&self, notification: &Notification, outcome: Outcome) -> Outcome {
        match seccomp::answer_continue(self.listener.as_fd(), notification.id) {
            Ok(()) => outcome,
            Err(error) if error.errno == Errno::ENOENT => Outcome::CallerGone,
            Err(error) => Outcome::Failed {
                step: "answering the call",
                error,
            },
        }
    }

    fn count(&mut self, outcome: &Outcome, spent: Duration) {
        let stats = &mut self.stats;
        stats.notified += 1;
        stats.busy += spent;
        stats.slowest = stats.slowest.max(spent);
        match outcome {
            Outcome::Patched { injected, .. } => {
                stats.patched += 1;
                stats.injected += u64::from(*injected);
            }
            Outcome::CarriedToken => stats.carried_token += 1,
            Outcome::TooShort => stats.too_short += 1,
            Outcome::NotTokenCommand => {}
            Outcome::Failed { .. } => stats.failed += 1,
            Outcome::CallerGone => stats.callers_gone += 1,
            Outcome::PerfEventOpen { .. } => {}
        }
    }

    /// A `perf_event_open`: records a tracepoint, kprobe or uprobe event (no token grants
    /// one) and lets the call run untouched, whatever was or could not be read.
    fn observe_perf_event_open(
        &mut self,
        notification: &Notification,
        started: Instant,
    ) -> Outcome {
        self.stats.perf_event_opens += 1;
        let mut caller = None;
        let mut naming = Duration::ZERO;
        let probe = self.perf_probe(notification, &mut caller, &mut naming);
        let outcome = self.answer(notification, Outcome::PerfEventOpen { probe });
        if log::log_enabled!(log::Level::Debug) {
            let spent = started.elapsed().saturating_sub(naming);
            let who = caller.map_or_else(
                || format!("pid {}", notification.pid),
                |caller: Caller| caller.to_string(),
            );
            log::debug!(
                "gateway: {who} perf_event_open: {outcome}, in {} µs (+{} µs naming the caller)",
                spent.as_micros(),
                naming.as_micros()
            );
        }
        outcome
    }

    /// The probe kind of the event a `perf_event_open` call opens, recorded when the call is
    /// still the caller's after reading; `None` for any other event or when nothing could be
    /// read (the kernel's own copy will then fail or tell).
    fn perf_probe(
        &mut self,
        notification: &Notification,
        caller: &mut Option<Caller>,
        naming: &mut Duration,
    ) -> Option<PerfProbe> {
        if notification.pid <= 0 {
            return None;
        }
        let tid = Pid::from_raw(notification.pid);
        let mut attr = [0u8; PERF_ATTR_READ];
        let read = sys::process::read_memory(tid, notification.args[0], &mut attr).ok()?;
        let probe = PerfProbe::decode(&attr[..read], *self.pmus.get_or_init(probe_pmus))?;
        let debug = log::log_enabled!(log::Level::Debug);
        let comm = if debug || !self.probes.contains(probe) {
            let started = Instant::now();
            let comm = self.proc_text_of(tid, "comm");
            *naming = started.elapsed();
            comm
        } else {
            None
        };
        // What was read is the caller's only if it still waits now.
        seccomp::id_valid(self.listener.as_fd(), notification.id).ok()?;
        let who = Caller {
            pid: notification.pid,
            comm,
        };
        *caller = Some(who.clone());
        let first = self.probes.record(probe, || who.clone());
        if debug {
            let single = crate::policy::calls::ProbeFinding {
                probe,
                first_caller: who,
                calls: 1,
            };
            log::debug!(
                "gateway: {}{}",
                single.explain(self.paranoid(), self.caps),
                if first { "" } else { " (seen before)" }
            );
        }
        Some(probe)
    }

    fn examine(&mut self, notification: &Notification, seen: &mut Seen) -> Result<Outcome, Stop> {
        let cmd = notification.args[0] as u32;
        let Some(command) = TokenCommand::from_cmd(cmd) else {
            return Ok(Outcome::NotTokenCommand);
        };
        if notification.pid <= 0 {
            // A caller outside this PID namespace (impossible for the command's processes).
            return Err(Stop::failed("naming the caller", Errno::ESRCH));
        }
        let tid = Pid::from_raw(notification.pid);
        let address = notification.args[1];
        // `unsigned int size`.
        let size = notification.args[2] as u32;
        let mut attr = [0u8; ATTR_SIZE];
        let wanted = BpfCall::bytes_to_read(command, size);
        let read = sys::process::read_memory(tid, address, &mut attr[..wanted])
            .map_err(|error| Stop::from_sys("reading the caller's bpf_attr", error))?;
        if read < wanted {
            // The kernel's own copy will fail with EFAULT: leave the call to it.
            return Err(Stop::failed("reading the caller's bpf_attr", Errno::EFAULT));
        }
        let call = BpfCall::decode(cmd, &attr[..read], size).expect("a command that takes a token");
        seen.call = Some(call.clone());
        let gap = Findings::gap(&call, &self.allowed);
        // A name is only needed for -v, for the first call of each kind left uncovered, and
        // for the log's first callers of each kind.
        let learning = self
            .log
            .as_ref()
            .is_some_and(|log| log.wants_caller(&call, notification.pid));
        let needs_name = log::log_enabled!(log::Level::Debug)
            || learning
            || gap
                .as_ref()
                .is_some_and(|gap| !self.findings.contains(&call, gap));
        let (comm, argv0) = if needs_name {
            let naming = Instant::now();
            let comm = self.proc_text_of(tid, "comm");
            let argv0 = if learning {
                self.proc_text_of(tid, "cmdline")
            } else {
                None
            };
            seen.naming = naming.elapsed();
            (comm, argv0)
        } else {
            (None, None)
        };
        // What was read is the caller's only if it still waits now.
        seccomp::id_valid(self.listener.as_fd(), notification.id).map_err(|_| Stop::Gone)?;
        if let Some(log) = &mut self.log {
            log.record(&call, notification.pid, || (comm.clone(), argv0));
        }
        let caller = Caller {
            pid: notification.pid,
            comm,
        };
        seen.caller = Some(caller.clone());
        if let Some(gap) = gap {
            if log::log_enabled!(log::Level::Debug) {
                let finding = Finding {
                    shape: call.shape(),
                    gap: gap.clone(),
                    first_caller: caller.clone(),
                    calls: 1,
                };
                let names = EnumNames::for_running_kernel();
                log::debug!("gateway: {}", finding.explain(names, self.caps));
            }
            self.findings.record(&call, gap, || caller);
        }
        let outcome = if !call.reaches_token_field() {
            Outcome::TooShort
        } else if call.carries_token() {
            Outcome::CarriedToken
        } else {
            let (fd, injected) = self.token_in_caller(notification, tid)?;
            let patch = call
                .token_patch(fd.0)
                .expect("the attr reaches the token field");
            let writes = patch
                .writes
                .map(|(offset, bytes)| (address + offset as u64, bytes));
            let writes: Vec<(u64, &[u8])> =
                writes.iter().map(|(at, bytes)| (*at, &bytes[..])).collect();
            let written = sys::process::write_memory(tid, &writes).map_err(|error| {
                Stop::from_sys("writing the token into the caller's bpf_attr", error)
            })?;
            if written != 8 {
                return Err(Stop::failed(
                    "writing the token into the caller's bpf_attr",
                    Errno::EFAULT,
                ));
            }
            seccomp::id_valid(self.listener.as_fd(), notification.id).map_err(|_| Stop::Gone)?;
            Outcome::Patched { fd, injected }
        };
        Ok(outcome)
    }

    /// The token's number in the caller's descriptor table: where it was last found for this
    /// task or given to any, if `kcmp` says it is still the token there, else a new copy.
    fn token_in_caller(
        &mut self,
        notification: &Notification,
        tid: Pid,
    ) -> Result<(RemoteFd, bool), Stop> {
        let ours = self.token.as_fd().as_raw_fd();
        let cached = self.known.get(&notification.pid).copied();
        let candidates: Vec<RemoteFd> = cached
            .into_iter()
            .chain(
                self.numbers
                    .iter()
                    .rev()
                    .copied()
                    .filter(|n| Some(*n) != cached),
            )
            .collect();
        for candidate in candidates {
            match sys::process::same_file(tid, candidate.0, self.me, ours) {
                Ok(true) => {
                    self.remember(notification.pid, candidate);
                    return Ok((candidate, false));
                }
                // Another file there, or none.
                Ok(false) => {}
                Err(error) if error.errno == Errno::EBADF => {}
                Err(error) => {
                    return Err(Stop::from_sys("checking the caller's descriptors", error));
                }
            }
        }
        let fd =
            seccomp::add_fd_cloexec(self.listener.as_fd(), notification.id, self.token.as_fd())
                .map_err(|error| Stop::from_sys("putting the token into the caller", error))?;
        self.remember(notification.pid, fd);
        self.numbers.retain(|n| *n != fd);
        self.numbers.push(fd);
        if self.numbers.len() > MAX_NUMBERS {
            self.numbers.remove(0);
        }
        Ok((fd, true))
    }

    fn remember(&mut self, pid: i32, fd: RemoteFd) {
        if self.known.len() >= MAX_KNOWN_TASKS && !self.known.contains_key(&pid) {
            self.known.clear();
        }
        self.known.insert(pid, fd);
    }

    /// The caller's `comm`, or the first word of its `cmdline`, through the procfs opened at
    /// start (at most 4 KiB of it). That procfs numbers tasks in
    /// its own PID namespace (the host's, usually), not in ours: a pidfd made from our number
    /// shows in its fdinfo the task's number in the namespace of the procfs it is read
    /// through (`Pid:`), which then names the same task there. The caller is known to be that
    /// task as long as its call is valid, which the caller of this function checks after.
    fn proc_text_of(&self, tid: Pid, file: &str) -> Option<String> {
        let proc = self.proc.as_ref()?;
        let pidfd = sys::process::pidfd_open_thread(tid).ok()?;
        let read = |path: String| -> Option<String> {
            let fd = openat(
                proc,
                path.as_str(),
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .ok()?;
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(std::fs::File::from(fd), 4096),
                &mut bytes,
            )
            .ok()?;
            Some(String::from_utf8_lossy(&bytes).into_owned())
        };
        let fdinfo = read(format!("self/fdinfo/{}", pidfd.as_raw_fd()))?;
        let there: i32 = fdinfo
            .lines()
            .find_map(|line| line.strip_prefix("Pid:"))?
            .trim()
            .parse()
            .ok()?;
        if there <= 0 {
            return None;
        }
        let text = read(format!("{there}/{file}"))?;
        let text = match file {
            "cmdline" => text.split('\0').next().unwrap_or_default().to_owned(),
            _ => text.trim_end_matches('\n').to_owned(),
        };
        // The command chooses its comm and command line: nothing in them may act on the
        // terminal.
        (!text.is_empty()).then(|| {
            text.chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect()
        })
    }

    /// At the command's end: `-v` gets the counts and costs; a failed command gets one line per
    /// kind of call the delegation did not cover, each prefixed with `program` (the binary that
    /// serves the gateway); `--json-status` gets the list.
    pub fn finish(&self, program: &str, command_failed: bool, status: Option<&StatusSink>) {
        let stats = self.stats;
        if stats.notified > 0 {
            log::debug!(
                "gateway: {} bpf() calls handled ({} patched, {} by a new copy of the token; {} carried their own token, {} too short, {} failed, {} callers died), {} µs in all, {} µs per call on average, slowest {} µs",
                stats.notified,
                stats.patched,
                stats.injected,
                stats.carried_token,
                stats.too_short,
                stats.failed,
                stats.callers_gone,
                stats.busy.as_micros(),
                stats.busy.as_micros() / u128::from(stats.notified),
                stats.slowest.as_micros()
            );
        } else {
            log::debug!("gateway: no bpf() call to handle");
        }
        if stats.perf_event_opens > 0 {
            log::debug!(
                "gateway: {} perf_event_open calls seen, passed on untouched",
                stats.perf_event_opens
            );
        }
        let names = EnumNames::for_running_kernel;
        if command_failed {
            for line in self.probes.lines(self.paranoid(), self.caps) {
                crate::logging::program_line(program, &line);
            }
        }
        if command_failed && !self.findings.is_empty() {
            for line in self.findings.lines(&self.allowed, names(), self.caps) {
                crate::logging::program_line(program, &line);
            }
        }
        // Only a command that made such calls gets the event: one that made none has nothing
        // to report.
        if let Some(status) = status.filter(|_| stats.notified > 0 || stats.perf_event_opens > 0) {
            status.gateway(&json!({
                "notified": stats.notified,
                "patched": stats.patched,
                "token_injected": stats.injected,
                "carried_token": stats.carried_token,
                "attr_too_short": stats.too_short,
                "failed": stats.failed,
                "callers_gone": stats.callers_gone,
                "busy_us": stats.busy.as_micros() as u64,
                "uncovered_calls": self.findings.json(names()),
                "perf_event_open": stats.perf_event_opens,
                "never_granted": self.probes.json(),
            }));
        }
    }
}

impl Watch for Gateway {
    fn watched_fd(&self) -> BorrowedFd<'_> {
        self.listener()
    }

    fn on_readable(&mut self) {
        self.handle_next();
    }
}

/// The kernel's kprobe and uprobe PMU type numbers (given at registration, so they differ
/// between kernels and boots), from sysfs. Read at the first perf_event_open: the command
/// could mount over /sys by then only if it kept CAP_SYS_ADMIN, and the numbers only choose
/// which explanation it gets.
fn probe_pmus() -> ProbePmus {
    let read = |pmu: &str| {
        std::fs::read_to_string(format!("/sys/bus/event_source/devices/{pmu}/type"))
            .ok()
            .and_then(|text| text.trim().parse().ok())
    };
    ProbePmus {
        kprobe: read("kprobe"),
        uprobe: read("uprobe"),
    }
}

/// What [`Gateway::examine`] learnt before it stopped, for the `-v` line.
#[derive(Default)]
struct Seen {
    call: Option<BpfCall>,
    caller: Option<Caller>,
    /// Time spent finding the caller's name, left out of the gateway's cost.
    naming: Duration,
}

/// Why a call is not patched.
enum Stop {
    Gone,
    Failed { step: &'static str, error: SysError },
}

impl Stop {
    fn failed(step: &'static str, errno: Errno) -> Self {
        Self::Failed {
            step,
            error: SysError {
                call: "gateway",
                errno,
            },
        }
    }

    /// ESRCH (no such task) and ENOENT (no such notification) mean the caller died.
    fn from_sys(step: &'static str, error: SysError) -> Self {
        match error.errno {
            Errno::ESRCH | Errno::ENOENT => Self::Gone,
            _ => Self::Failed { step, error },
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(
        "starting the bpf() gateway: reading what its token allows (/proc/self/fdinfo): {0}; --no-gateway runs without it"
    )]
    TokenInfo(std::io::Error),
}
