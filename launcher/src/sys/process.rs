//! `clone3` as a fork that also creates namespaces.
//!
//! `fork` followed by `unshare` cannot put the child itself into a new PID namespace (unshare
//! only moves the caller's future children), so the sandbox would need one more process to be
//! the namespace's init. Creating the child with `clone3(CLONE_NEWUSER | CLONE_NEWNS |
//! CLONE_NEWPID)` makes it PID 1 of a PID namespace owned by its own user namespace (the kernel
//! creates the user namespace first and the others under it, `copy_namespaces`), and lets the
//! parent write its id maps the moment the call returns.

use std::os::fd::{AsRawFd as _, BorrowedFd, OwnedFd};

use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, Pid};

use super::SysError;

/// `struct clone_args` from `<linux/sched.h>`, the size-88 version (`CLONE_ARGS_SIZE_VER2`,
/// 5.7) that ends with `cgroup`. Only the first 64 bytes (`CLONE_ARGS_SIZE_VER0`) are passed
/// unless a cgroup is asked for.
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
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_ARGS_SIZE_VER0: usize = 64;
/// `CLONE_INTO_CGROUP`: the child starts in the cgroup2 directory `clone_args.cgroup`.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

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
    // SAFETY: the caller's guarantees are the same.
    unsafe { fork_into_cgroup(namespaces, None, call) }.map(|(forked, _)| forked)
}

/// [`fork_into`], with the child born in the cgroup v2 directory `cgroup`
/// (`CLONE_INTO_CGROUP`): it is charged there from its first page, and no migration (which
/// takes the kernel's cgroup-wide write lock, ~0.2 ms here) is needed. The `bool` says whether
/// that happened: not when `cgroup` is `None`, nor under the `clone` fallback (which has no
/// such flag); the caller then moves the child by writing its pid to `cgroup.procs`.
///
/// # Safety
///
/// As for [`fork_into`].
pub unsafe fn fork_into_cgroup(
    namespaces: CloneFlags,
    cgroup: Option<BorrowedFd<'_>>,
    call: &'static str,
) -> Result<(ForkResult, bool), SysError> {
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
    let namespace_bits = u64::try_from(namespaces.bits()).expect("clone flags are non-negative");
    let mut args = CloneArgs {
        flags: namespace_bits,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    let mut size = CLONE_ARGS_SIZE_VER0;
    if let Some(cgroup) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = u64::try_from(cgroup.as_raw_fd()).expect("descriptors are non-negative");
        size = std::mem::size_of::<CloneArgs>();
    }
    // SAFETY: args is a valid clone_args of at least the size passed; with no stack and no
    // CLONE_VM the kernel gives the child a copy of this address space, as fork does.
    let mut ret = unsafe { libc::syscall(libc::SYS_clone3, &raw mut args, size) };
    let into_cgroup = cgroup.is_some() && ret >= 0;
    if ret < 0 && cgroup.is_some() && nix::errno::Errno::last() != nix::errno::Errno::ENOSYS {
        // A cgroup the kernel will not start a child in (removed meanwhile, not a leaf) must
        // not be reported as a namespace failure: fork without it, and let the caller's write
        // to `cgroup.procs` name the file and the errno. A real namespace failure fails again.
        args.flags = namespace_bits;
        args.cgroup = 0;
        // SAFETY: as above.
        ret = unsafe { libc::syscall(libc::SYS_clone3, &raw mut args, CLONE_ARGS_SIZE_VER0) };
    }
    // Container runtimes' seccomp profiles (Docker's default among them) answer clone3 with
    // ENOSYS so that callers fall back to clone, whose flags a filter can inspect.
    let ret = if ret < 0 && nix::errno::Errno::last() == nix::errno::Errno::ENOSYS {
        // SAFETY: as above; every pointer argument is null, so the architectures' different
        // argument orders of clone do not matter.
        unsafe {
            libc::syscall(
                libc::SYS_clone,
                namespace_bits | args.exit_signal,
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
        0 => Ok((ForkResult::Child, into_cgroup)),
        pid if pid > 0 => Ok((
            ForkResult::Parent {
                child: Pid::from_raw(i32::try_from(pid).expect("pids fit in pid_t")),
            },
            into_cgroup,
        )),
        _ => Err(SysError::last(call)),
    }
}

/// `_exit`: ends a forked helper at once, without the exit handlers or buffered output it
/// inherited from its parent (flushing a copy of the parent's stdout buffer would print it twice).
pub fn exit_immediately(code: i32) -> ! {
    // SAFETY: _exit takes no pointers and never returns.
    unsafe { libc::_exit(code) }
}

/// `process_vm_readv`: copies `buf.len()` bytes at `address` in process `pid` (a thread id of
/// this process's PID namespace) into `buf`; returns how many were copied (fewer when the range
/// crosses into unmapped memory). Needs ptrace-attach rights over the target.
pub fn read_memory(pid: Pid, address: u64, buf: &mut [u8]) -> Result<usize, SysError> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: address as usize as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the local iovec covers `buf`, which we own mutably; the remote one is only an
    // address in another process, which the kernel checks.
    let ret = unsafe {
        libc::process_vm_readv(pid.as_raw(), &raw const local, 1, &raw const remote, 1, 0)
    };
    if ret < 0 {
        Err(SysError::last("process_vm_readv"))
    } else {
        Ok(ret as usize)
    }
}

/// `process_vm_writev`: writes each `(address, bytes)` into process `pid`, in the order given
/// (a short count means the writes from that point on did not happen); returns the bytes
/// written. Pages the target cannot write (read-only mappings) fail with EFAULT.
pub fn write_memory(pid: Pid, writes: &[(u64, &[u8])]) -> Result<usize, SysError> {
    let local: Vec<libc::iovec> = writes
        .iter()
        .map(|(_, bytes)| libc::iovec {
            iov_base: bytes.as_ptr().cast_mut().cast(),
            iov_len: bytes.len(),
        })
        .collect();
    let remote: Vec<libc::iovec> = writes
        .iter()
        .map(|(address, bytes)| libc::iovec {
            iov_base: *address as usize as *mut libc::c_void,
            iov_len: bytes.len(),
        })
        .collect();
    // SAFETY: the local iovecs cover the borrowed slices, which the kernel only reads.
    let ret = unsafe {
        libc::process_vm_writev(
            pid.as_raw(),
            local.as_ptr(),
            local.len() as libc::c_ulong,
            remote.as_ptr(),
            remote.len() as libc::c_ulong,
            0,
        )
    };
    if ret < 0 {
        Err(SysError::last("process_vm_writev"))
    } else {
        Ok(ret as usize)
    }
}

/// `kcmp(pid1, pid2, KCMP_FILE, fd1, fd2)`: whether descriptor `fd1` of task `pid1` and
/// `fd2` of task `pid2` are the same open file. EBADF when either number is not open.
pub fn same_file(pid1: Pid, fd1: i32, pid2: Pid, fd2: i32) -> Result<bool, SysError> {
    const KCMP_FILE: libc::c_int = 0;
    // SAFETY: integer arguments only.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1.as_raw(),
            pid2.as_raw(),
            KCMP_FILE,
            fd1 as libc::c_ulong,
            fd2 as libc::c_ulong,
        )
    };
    if ret < 0 {
        Err(SysError::last("kcmp(KCMP_FILE)"))
    } else {
        Ok(ret == 0)
    }
}

/// `pidfd_open(tid, PIDFD_THREAD)` (Linux 6.9): a descriptor for one thread, named by its id in
/// this process's PID namespace.
pub fn pidfd_open_thread(tid: Pid) -> Result<OwnedFd, SysError> {
    // PIDFD_THREAD is O_EXCL.
    const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;
    // SAFETY: integer arguments only.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, tid.as_raw(), PIDFD_THREAD) };
    super::fd_result(ret, "pidfd_open(PIDFD_THREAD)")
}
