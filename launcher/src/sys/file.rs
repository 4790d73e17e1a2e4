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

/// Reads a file named on the command line, which the supervisor (root) must not trust: only a
/// regular file, not through a symbolic link at its last component, at most `max_len` bytes.
///
/// Opened with `O_NONBLOCK` so that a FIFO cannot hang the open, and checked with `fstat` on
/// the open descriptor (not the path, which could change in between). Symbolic links are
/// refused because root would follow a link the file's owner planted to a file only root may
/// read (`/etc/shadow`), and parse errors quote positions in what was read.
pub fn read_untrusted_file(
    path: &std::path::Path,
    max_len: u64,
) -> Result<Vec<u8>, InputFileError> {
    use std::io::Read as _;
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let error = |kind| InputFileError {
        path: path.to_owned(),
        kind,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => error(InputFileErrorKind::SymbolicLink),
            _ => error(InputFileErrorKind::Open(e)),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| error(InputFileErrorKind::Open(e)))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(error(InputFileErrorKind::NotRegular(what)));
    }
    if meta.len() > max_len {
        return Err(error(InputFileErrorKind::TooLarge {
            len: meta.len(),
            max_len,
        }));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // Bounded even if the file grows after the fstat.
    file.take(max_len + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| error(InputFileErrorKind::Open(e)))?;
    if bytes.len() as u64 > max_len {
        return Err(error(InputFileErrorKind::TooLarge {
            len: bytes.len() as u64,
            max_len,
        }));
    }
    Ok(bytes)
}

/// Why [`read_untrusted_file`] refused a file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct InputFileError {
    pub path: std::path::PathBuf,
    pub kind: InputFileErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum InputFileErrorKind {
    #[error("{0}")]
    Open(std::io::Error),
    #[error(
        "is a symbolic link: name the file itself (the supervisor runs as root and does not follow links a file's owner could plant)"
    )]
    SymbolicLink,
    #[error("is {0}: a regular file is expected")]
    NotRegular(&'static str),
    #[error("is {len} bytes, more than the {max_len} accepted")]
    TooLarge { len: u64, max_len: u64 },
}

/// Closes every descriptor above 2 except those in `keep` and `also_keep`, with `close_range`
/// over the gaps (Linux 5.9; one call per gap however many descriptors are open).
pub fn close_descriptors_except(keep: &[i32], also_keep: Option<i32>) -> Result<(), SysError> {
    let mut kept: Vec<u32> = keep
        .iter()
        .copied()
        .chain(also_keep)
        .filter(|fd| *fd > 2)
        .filter_map(|fd| u32::try_from(fd).ok())
        .collect();
    kept.sort_unstable();
    kept.dedup();
    let mut first = 3u32;
    for fd in kept.into_iter().chain([u32::MAX]) {
        if fd > first {
            let last = fd - 1;
            // SAFETY: closes descriptors no Rust object of this process owns at start-up (only
            // the caller's inherited ones are open then); plain integer arguments.
            let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
            super::unit_result(ret, "close_range")?;
        }
        first = fd.saturating_add(1);
    }
    Ok(())
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
