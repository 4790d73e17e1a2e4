//! Raw system calls, one thin wrapper per command.
//!
//! Everything that takes a pointer or a raw number lives here; the rest of the crate sees
//! `BorrowedFd` in and `OwnedFd` out, and a [`SysError`] that names the call and the errno.

pub mod bpf;
pub mod cgroup;
pub mod file;
pub mod mount;
pub mod net;
pub mod netlink;
pub mod process;
pub mod seccomp;

use std::fmt;
use std::os::fd::{FromRawFd as _, OwnedFd};

pub use nix::errno::Errno;

/// A failed system call: which call, and the errno the kernel returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{call} failed: {}", ErrnoName(*errno))]
pub struct SysError {
    /// The call as a user would search for it, e.g. `bpf(BPF_TOKEN_CREATE)` or `fsopen("bpf")`.
    pub call: &'static str,
    pub errno: Errno,
}

impl SysError {
    pub(crate) fn last(call: &'static str) -> Self {
        Self {
            call,
            errno: Errno::last(),
        }
    }
}

/// Formats an errno as `EPERM (Operation not permitted)`: the symbolic name is what people
/// search for, the description is what they understand.
pub struct ErrnoName(pub Errno);

impl fmt::Display for ErrnoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({})", self.0, self.0.desc())
    }
}

/// Turns the return value of a call that creates a file descriptor into an `OwnedFd`.
pub(crate) fn fd_result(ret: libc::c_long, call: &'static str) -> Result<OwnedFd, SysError> {
    if ret < 0 {
        return Err(SysError::last(call));
    }
    let raw = libc::c_int::try_from(ret).map_err(|_| SysError {
        call,
        errno: Errno::EOVERFLOW,
    })?;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

pub(crate) fn unit_result(ret: libc::c_long, call: &'static str) -> Result<(), SysError> {
    if ret < 0 {
        Err(SysError::last(call))
    } else {
        Ok(())
    }
}
