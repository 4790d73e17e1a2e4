//! Waiting for a child while passing on the signals meant for it, as a shell or an init does.
//!
//! The forwarded signals (and `SIGCHLD`) are blocked and read from a signalfd, so one loop sees
//! both "a signal arrived" and "a child changed state" without handlers or races. The mask is
//! set before `fork` and inherited, so no signal can fall between fork and the loop; whoever
//! runs a command restores the old mask first (exec keeps the blocked mask).
//!
//! Only signals sent by a process (`kill`, `si_code` `SI_USER`/`SI_QUEUE`/...) are forwarded.
//! Signals the kernel generated for the terminal's process group (Ctrl-C) already reached every
//! process in the group, the command included; forwarding them would deliver them twice.

use std::os::fd::{AsFd as _, BorrowedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::sys::{Errno, SysError};

/// The signals a supervisor passes on to the command.
pub const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    Exited(i32),
    Signaled(Signal),
    /// Killed by us when the deadline passed.
    TimedOut(Duration),
}

impl ChildExit {
    /// The exit code a shell would give: the code, 128 + the signal number, or 124 for a
    /// timeout (as `timeout(1)`).
    pub const fn exit_code(self) -> i32 {
        match self {
            Self::Exited(code) => code,
            Self::Signaled(signal) => 128 + signal as i32,
            Self::TimedOut(_) => 124,
        }
    }
}

impl std::fmt::Display for ChildExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exited(code) => write!(f, "exited with status {code}"),
            Self::Signaled(signal) => write!(f, "was killed by {signal}"),
            Self::TimedOut(after) => {
                write!(
                    f,
                    "was killed after the timeout of {:.3} s",
                    after.as_secs_f64()
                )
            }
        }
    }
}

fn relayed_set() -> SigSet {
    let mut set = SigSet::empty();
    for signal in FORWARDED {
        set.add(signal);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// The forwarded signals and `SIGCHLD`, blocked in this process until [`Self::restore`].
#[derive(Debug)]
pub struct BlockedSignals {
    previous: SigSet,
}

impl BlockedSignals {
    pub fn block() -> Result<Self, SysError> {
        let mut previous = SigSet::empty();
        sigprocmask(
            SigmaskHow::SIG_BLOCK,
            Some(&relayed_set()),
            Some(&mut previous),
        )
        .map_err(|errno| SysError {
            call: "sigprocmask(SIG_BLOCK)",
            errno,
        })?;
        Ok(Self { previous })
    }

    /// Puts back the mask from before [`Self::block`] (for a process about to exec a command or
    /// to do work that Ctrl-C should interrupt).
    pub fn restore(&self) -> Result<(), SysError> {
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.previous), None).map_err(|errno| SysError {
            call: "sigprocmask(SIG_SETMASK)",
            errno,
        })
    }
}

/// Which children [`wait_forwarding`] collects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reap {
    /// Only `child` (a supervisor must not steal its caller's other children).
    ChildOnly,
    /// Every child, as PID 1 of a namespace must: orphans are re-parented to it.
    All,
}

/// A descriptor [`wait_forwarding_with`] watches besides the signals, with what to do when it
/// is readable (the sandbox's init serves the `bpf()` gateway's listener this way).
pub trait Watch {
    fn watched_fd(&self) -> BorrowedFd<'_>;
    /// Handles what made the descriptor readable; must not block for long, as signals and the
    /// child's end wait meanwhile.
    fn on_readable(&mut self);
}

/// Waits until `child` ends, forwarding [`FORWARDED`] signals sent by other processes to it, and
/// killing it with `SIGKILL` once `deadline` passes. Needs [`BlockedSignals`] in force.
pub fn wait_forwarding(
    child: Pid,
    reap: Reap,
    deadline: Option<(Instant, Duration)>,
) -> Result<ChildExit, SysError> {
    wait_forwarding_with(child, reap, deadline, None)
}

/// [`wait_forwarding`], also serving `watch` whenever its descriptor is readable (until it
/// reports an error or hang-up, after which it is no longer polled).
pub fn wait_forwarding_with(
    child: Pid,
    reap: Reap,
    deadline: Option<(Instant, Duration)>,
    mut watch: Option<&mut dyn Watch>,
) -> Result<ChildExit, SysError> {
    let signals = SignalFd::with_flags(
        &relayed_set(),
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )
    .map_err(|errno| SysError {
        call: "signalfd",
        errno,
    })?;
    loop {
        // A child may have ended before the signalfd existed: look before sleeping.
        if let Some(exit) = collect(child, reap)? {
            return Ok(exit);
        }
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some((at, after)) => {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    log::debug!("timeout of {after:?} reached: SIGKILL to pid {child}");
                    let _ = kill(child, Signal::SIGKILL);
                    return wait_blocking(child).map(|_| ChildExit::TimedOut(after));
                }
                // Round up so the loop does not spin on a sub-millisecond remainder.
                let ms = left.as_millis().saturating_add(1);
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut watch_events = None;
        {
            let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
            if let Some(watch) = &watch {
                fds.push(PollFd::new(watch.watched_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(errno) => {
                    return Err(SysError {
                        call: "poll",
                        errno,
                    });
                }
            }
            if let Some(watched) = fds.get(1) {
                watch_events = watched.revents();
            }
        }
        if let Some(events) = watch_events {
            if events.contains(PollFlags::POLLIN) {
                if let Some(watch) = watch.as_mut() {
                    watch.on_readable();
                }
            } else if events
                .intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL)
            {
                log::debug!("the watched descriptor reports {events:?}: no longer polled");
                watch = None;
            }
        }
        while let Some(info) = signals.read_signal().map_err(|errno| SysError {
            call: "read(signalfd)",
            errno,
        })? {
            let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            if signal == Signal::SIGCHLD || info.ssi_code == libc::SI_KERNEL {
                continue;
            }
            log::debug!(
                "forwarding {signal} from pid {} to pid {child}",
                info.ssi_pid
            );
            let _ = kill(child, signal);
        }
    }
}

/// Collects ended children without blocking; `Some` once `child` is among them.
fn collect(child: Pid, reap: Reap) -> Result<Option<ChildExit>, SysError> {
    let target = match reap {
        Reap::ChildOnly => Some(child),
        Reap::All => None,
    };
    loop {
        match waitpid(target, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => {
                return Ok(Some(ChildExit::Exited(code)));
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == child => {
                return Ok(Some(ChildExit::Signaled(signal)));
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(None),
            // An orphan that PID 1 inherited, or a stop/continue report: keep collecting.
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => {
                return Err(SysError {
                    call: "waitpid",
                    errno,
                });
            }
        }
    }
}

/// Collects `child` if it ends within `within` (polled): for a caller that saw a step fail in
/// a way that suggests the child is dying.
pub fn collect_within(child: Pid, within: Duration) -> Result<Option<ChildExit>, SysError> {
    let until = Instant::now() + within;
    loop {
        if let Some(exit) = collect(child, Reap::ChildOnly)? {
            return Ok(Some(exit));
        }
        if Instant::now() >= until {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits for `child` without forwarding anything.
pub fn wait_blocking(child: Pid) -> Result<ChildExit, SysError> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(ChildExit::Exited(code)),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(ChildExit::Signaled(signal)),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => {
                return Err(SysError {
                    call: "waitpid",
                    errno,
                });
            }
        }
    }
}
