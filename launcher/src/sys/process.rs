//! `clone3` as a fork that also creates namespaces.
//!
//! `fork` followed by `unshare` cannot put the child itself into a new PID namespace (unshare
//! only moves the caller's future children), so the sandbox would need one more process to be
//! the namespace's init. Creating the child with `clone3(CLONE_NEWUSER | CLONE_NEWNS |
//! CLONE_NEWPID)` makes it PID 1 of a PID namespace owned by its own user namespace (the kernel
//! creates the user namespace first and the others under it, `copy_namespaces`), and lets the
//! parent write its id maps the moment the call returns.

use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, Pid};

use super::SysError;

/// `struct clone_args` from `<linux/sched.h>`, the size-64 version (`CLONE_ARGS_SIZE_VER0`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

/// `clone3` without `CLONE_VM` and without a stack: like `fork`, it returns twice, with the
/// child running on a copy of the caller's memory, plus the namespaces in `namespaces`.
/// The child's exit is reported to the parent with `SIGCHLD`, as for `fork`. Falls back to
/// `clone` where `clone3` is filtered out.
///
/// # Safety
///
/// As for `fork`: the caller must be single-threaded, or the child may only call
/// async-signal-safe functions. Unlike glibc's `fork`, no `pthread_atfork` handlers run; the
/// callers here register none.
pub unsafe fn fork_into(
    namespaces: CloneFlags,
    call: &'static str,
) -> Result<ForkResult, SysError> {
    // Namespace flags only: anything sharing memory, files or signal handlers would break the
    // fork semantics callers rely on.
    let all_namespaces = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWCGROUP;
    assert!(
        all_namespaces.contains(namespaces),
        "fork_into takes namespace flags only"
    );
    let mut args = CloneArgs {
        flags: u64::try_from(namespaces.bits()).expect("clone flags are non-negative"),
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    // SAFETY: args is a valid clone_args of the size passed; with no stack and no CLONE_VM the
    // kernel gives the child a copy of this address space, as fork does.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &raw mut args,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    // Container runtimes' seccomp profiles (Docker's default among them) answer clone3 with
    // ENOSYS so that callers fall back to clone, whose flags a filter can inspect.
    let ret = if ret < 0 && nix::errno::Errno::last() == nix::errno::Errno::ENOSYS {
        // SAFETY: as above; every pointer argument is null, so the architectures' different
        // argument orders of clone do not matter.
        unsafe {
            libc::syscall(
                libc::SYS_clone,
                args.flags | args.exit_signal,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        }
    } else {
        ret
    };
    match ret {
        0 => Ok(ForkResult::Child),
        pid if pid > 0 => Ok(ForkResult::Parent {
            child: Pid::from_raw(i32::try_from(pid).expect("pids fit in pid_t")),
        }),
        _ => Err(SysError::last(call)),
    }
}
