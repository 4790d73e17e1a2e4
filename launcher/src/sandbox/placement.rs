//! Which CPUs the supervisor and the sandbox run on while the sandbox is set up.
//!
//! A launch is a ping-pong between two processes that wake each other a dozen times. Left to
//! itself, the scheduler moves both across CPUs as they wake, and every CPU a process has run
//! on must be interrupted to flush its TLB when that process unmaps memory or exits
//! (`flush_tlb_mm_range` from `exit_mmap`). On a virtual machine, the usual CI runner, each such
//! IPI is a VM exit on both sides and waits for the other vCPU: perf showed the supervisor and
//! the sandbox spinning in `smp_call_function_many_cond` at exit for up to several ms.
//!
//! So the supervisor stays on the CPU it started on, and moves the sandbox to another allowed CPU
//! as soon as `clone3` returns, while the child still waits in the supervisor's run queue: the
//! kernel just requeues it and wakes the other CPU, and the child starts there in parallel with
//! the supervisor writing its id maps. (The child moving itself first had to wait for the
//! supervisor to block, then for the migration: its first step came ~0.9 ms after `clone3`
//! instead of ~0.2 ms.) Each process then runs on one CPU, and the two work in parallel: the
//! supervisor's `fsconfig` calls (each one a walk of the kernel's BTF) overlap the sandbox's
//! `unshare(CLONE_NEWNET)`. Measured on the 2-vCPU development VM, 400 interleaved launches of
//! `-- /bin/true` each, in one run: 5.72 ms median, against 5.95 ms with the child moving itself
//! and 6.20 ms without placement. While the host took ~25% of the VM's time (steal), it made no
//! difference either way (600 runs: 10.08 ms against 9.99 ms without).
//!
//! The command gets the caller's original affinity back ([`Placement::release`]) before it
//! starts. The supervisor stays pinned: after the setup it only sleeps until a signal or the
//! sandbox's exit, and moving it would bring the exit-time flush back. Everything here is best
//! effort: a launch never fails because a CPU could not be chosen.

use nix::sched::{CpuSet, sched_getaffinity, sched_getcpu, sched_setaffinity};
use nix::unistd::Pid;

/// The two CPUs chosen for a launch, and the caller's affinity to give back to the command.
#[derive(Debug, Clone)]
pub struct Placement {
    original: CpuSet,
    supervisor: usize,
    sandbox: usize,
}

impl Placement {
    /// The CPU the caller runs on for the supervisor and the next allowed one for the sandbox;
    /// `None` when the caller may only use one CPU (nothing to separate) or the affinity
    /// cannot be read.
    pub fn choose() -> Option<Self> {
        let original = sched_getaffinity(Pid::from_raw(0)).ok()?;
        let current = sched_getcpu().ok()?;
        let allowed: Vec<usize> = (0..CpuSet::count())
            .filter(|&cpu| original.is_set(cpu).unwrap_or(false))
            .collect();
        let sandbox = next_cpu(&allowed, current)?;
        Some(Self {
            original,
            supervisor: current,
            sandbox,
        })
    }

    pub fn supervisor_cpu(&self) -> usize {
        self.supervisor
    }

    pub fn sandbox_cpu(&self) -> usize {
        self.sandbox
    }

    /// Keeps the calling process (the supervisor) on its CPU.
    pub fn pin_supervisor(&self) {
        pin_process(Pid::from_raw(0), self.supervisor);
    }

    /// Moves the sandbox child to its own CPU; called by the supervisor right after `clone3`.
    pub fn move_sandbox(&self, child: Pid) {
        pin_process(child, self.sandbox);
    }

    /// Gives the calling process the caller's original affinity back, so that the command the
    /// sandbox starts next inherits it.
    pub fn release(&self) {
        if let Err(errno) = sched_setaffinity(Pid::from_raw(0), &self.original) {
            log::debug!("sched_setaffinity (the caller's CPUs back) failed: {errno}");
        }
    }
}

/// The first allowed CPU after `current`, wrapping around; `None` if `current` is the only one
/// or is not allowed at all (the affinity changed under us: leave things alone).
fn next_cpu(allowed: &[usize], current: usize) -> Option<usize> {
    if !allowed.contains(&current) {
        return None;
    }
    allowed
        .iter()
        .copied()
        .find(|&cpu| cpu > current)
        .or_else(|| allowed.first().copied())
        .filter(|&cpu| cpu != current)
}

/// Restricts `pid` (0: the caller) to `cpu`.
fn pin_process(pid: Pid, cpu: usize) {
    let mut set = CpuSet::new();
    if set.set(cpu).is_err() {
        return;
    }
    if let Err(errno) = sched_setaffinity(pid, &set) {
        log::debug!("sched_setaffinity({pid}, CPU {cpu}) failed: {errno}");
    }
}

#[cfg(test)]
mod tests {
    use super::next_cpu;

    #[test]
    fn next_cpu_is_the_following_allowed_one() {
        assert_eq!(next_cpu(&[0, 1], 0), Some(1));
        assert_eq!(next_cpu(&[0, 2, 5], 2), Some(5));
    }

    #[test]
    fn next_cpu_wraps_around() {
        assert_eq!(next_cpu(&[0, 1], 1), Some(0));
        assert_eq!(next_cpu(&[3, 7, 9], 9), Some(3));
    }

    #[test]
    fn next_cpu_needs_a_second_allowed_cpu() {
        assert_eq!(next_cpu(&[4], 4), None);
        assert_eq!(next_cpu(&[], 0), None);
    }

    #[test]
    fn next_cpu_leaves_a_caller_outside_its_own_mask_alone() {
        assert_eq!(next_cpu(&[0, 1], 3), None);
    }
}
