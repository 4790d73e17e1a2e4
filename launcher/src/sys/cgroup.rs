//! The calls behind the sandbox's cgroups that the standard library does not offer: advisory
//! locks on cgroup directories, the filesystem type of a directory, and closing every other
//! descriptor in a helper process.

use std::os::fd::{AsRawFd as _, BorrowedFd};

use super::{Errno, SysError, unit_result};

/// `statfs.f_type` of the cgroup v2 filesystem (`CGROUP2_SUPER_MAGIC`).
pub const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// `statfs.f_type` of a cgroup v1 hierarchy (`CGROUP_SUPER_MAGIC`).
pub const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;

/// `flock(fd, LOCK_EX | LOCK_NB)`: `Ok(true)` when taken, `Ok(false)` when another open file
/// description holds it. The lock belongs to the open file description, so it lasts until the
/// last descriptor sharing it (copies made by `fork` included) is closed: that is how a run
/// tells a live sandbox's cgroup from one whose supervisor died.
pub fn try_lock_exclusive(fd: BorrowedFd<'_>) -> Result<bool, SysError> {
    // SAFETY: flock on a descriptor the caller keeps open; no memory is passed.
    let ret = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if ret == 0 {
        return Ok(true);
    }
    match Errno::last() {
        Errno::EWOULDBLOCK => Ok(false),
        errno => Err(SysError {
            call: "flock(LOCK_EX | LOCK_NB)",
            errno,
        }),
    }
}

/// `flock(fd, LOCK_EX)`, waiting for another holder to let go.
pub fn lock_exclusive(fd: BorrowedFd<'_>) -> Result<(), SysError> {
    loop {
        // SAFETY: as above.
        let ret = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) };
        match unit_result(ret.into(), "flock(LOCK_EX)") {
            Err(SysError {
                errno: Errno::EINTR,
                ..
            }) => {}
            other => return other,
        }
    }
}

/// The filesystem type (`statfs.f_type`) of an open file.
pub fn filesystem_type(fd: BorrowedFd<'_>) -> Result<i64, SysError> {
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: buf is a writable statfs the kernel fills in.
    let ret = unsafe { libc::fstatfs(fd.as_raw_fd(), buf.as_mut_ptr()) };
    unit_result(ret.into(), "fstatfs")?;
    // SAFETY: fstatfs succeeded, so the structure is initialised.
    #[allow(clippy::unnecessary_cast)]
    Ok(unsafe { buf.assume_init() }.f_type as i64)
}

/// Closes every descriptor of this process except 0, 1, 2 and `keep` (`close_range`, 5.9).
/// For a helper process right after `fork`: it must not keep the caller's pipes, sockets or
/// status descriptor open (a reader waiting for their end would wait for the helper too).
pub fn close_all_except(keep: &[BorrowedFd<'_>]) -> Result<(), SysError> {
    let mut kept: Vec<u32> = keep
        .iter()
        .filter_map(|fd| u32::try_from(fd.as_raw_fd()).ok())
        .filter(|&fd| fd > 2)
        .collect();
    kept.sort_unstable();
    let mut first = 3u32;
    for fd in kept.into_iter().chain(std::iter::once(u32::MAX)) {
        if fd > first {
            // SAFETY: closing descriptors this process owns; none is referenced as an object
            // the caller still uses (the caller keeps only `keep`).
            let ret = unsafe { libc::syscall(libc::SYS_close_range, first, fd - 1, 0u32) };
            unit_result(ret, "close_range")?;
        }
        first = fd.saturating_add(1);
    }
    Ok(())
}
