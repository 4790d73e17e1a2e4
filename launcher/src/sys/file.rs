//! Read-only file mappings, and lock files.

use std::fs::File;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

use super::SysError;

/// A private, read-only mapping of a whole file. Used for `/sys/kernel/btf/vmlinux`: sysfs
/// hands out at most a page per `read`, so reading its 5 MB costs over a thousand calls, while
/// the kernel lets it be mapped (read-only and private only, since Linux 6.16).
///
/// The file must not shrink while mapped (that would fault on access): only map files that do
/// not change, like the kernel's BTF.
pub struct ReadOnlyMap {
    ptr: NonNull<std::ffi::c_void>,
    len: usize,
}

impl ReadOnlyMap {
    pub fn of(file: &File, len: NonZeroUsize) -> Result<Self, SysError> {
        // SAFETY: a fresh mapping chosen by the kernel; nothing else refers to that memory.
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ,
                MapFlags::MAP_PRIVATE,
                file,
                0,
            )
        }
        .map_err(|errno| SysError {
            call: "mmap(PROT_READ, MAP_PRIVATE)",
            errno,
        })?;
        Ok(Self {
            ptr,
            len: len.get(),
        })
    }

    pub const fn bytes(&self) -> &[u8] {
        // SAFETY: `len` readable bytes are mapped at `ptr` until drop.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>(), self.len) }
    }
}

impl Drop for ReadOnlyMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping this value owns; no slice outlives `self`.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

/// Opens a lock file, creating it (mode 0600, so only root can open and hold its locks) if it
/// does not exist: `open(O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC)`.
pub fn open_lock_file(path: &std::ffi::CStr) -> Result<std::os::fd::OwnedFd, SysError> {
    // SAFETY: `path` is NUL-terminated.
    let raw = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    super::fd_result(libc::c_long::from(raw), "open(O_RDWR | O_CREAT)")
}

/// Tries to take a write lock on byte `offset` of `file` without waiting (`fcntl(F_OFD_SETLK)`):
/// `Ok(false)` when another open file description holds it.
///
/// An open-file-description lock belongs to the open file, not to the process: a forked child's
/// copy of the descriptor shares it, closing the child's copy does not release it, and it ends
/// when the last descriptor of that open file is closed.
pub fn try_lock_byte(file: std::os::fd::BorrowedFd<'_>, offset: u64) -> Result<bool, SysError> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: flock is plain data; zero is a valid value (l_pid must be 0 for OFD locks).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = libc::off_t::try_from(offset).map_err(|_| SysError {
        call: "fcntl(F_OFD_SETLK)",
        errno: super::Errno::EOVERFLOW,
    })?;
    lock.l_len = 1;
    // SAFETY: a valid flock for the duration of the call.
    let ret = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if ret == 0 {
        return Ok(true);
    }
    match super::Errno::last() {
        super::Errno::EAGAIN | super::Errno::EACCES => Ok(false),
        errno => Err(SysError {
            call: "fcntl(F_OFD_SETLK)",
            errno,
        }),
    }
}
