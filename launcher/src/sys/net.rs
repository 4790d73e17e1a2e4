//! Interface ioctls.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use super::{Errno, SysError};

fn ifreq_for(name: &str) -> Result<libc::ifreq, SysError> {
    // SAFETY: ifreq is plain data; zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= req.ifr_name.len() || bytes.contains(&0) {
        return Err(SysError {
            call: "ioctl(SIOCGIFFLAGS)",
            errno: Errno::EINVAL,
        });
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

/// Sets `IFF_UP` on an interface of the caller's network namespace (needs CAP_NET_ADMIN there).
pub fn set_link_up(name: &str) -> Result<(), SysError> {
    // SAFETY: plain socket call.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(SysError::last("socket(AF_INET, SOCK_DGRAM)"));
    }
    // SAFETY: we own the new socket.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req = ifreq_for(name)?;
    // SAFETY: req is a valid ifreq with a NUL-terminated name.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(SysError::last("ioctl(SIOCGIFFLAGS)"));
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } < 0 {
        return Err(SysError::last("ioctl(SIOCSIFFLAGS)"));
    }
    Ok(())
}

/// Writes `value` to an existing `/proc/sys` file (a sysctl): `open(O_WRONLY | O_NOFOLLOW)`
/// without `O_CREAT` (so a missing setting is `ENOENT`), then one `write`.
pub fn write_sysctl(path: &std::ffi::CStr, value: &str) -> Result<(), SysError> {
    // SAFETY: `path` is NUL-terminated; the flags create nothing.
    let raw = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    if raw < 0 {
        return Err(SysError::last("open(O_WRONLY)"));
    }
    // SAFETY: we own the new descriptor.
    let file = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: writing a buffer we own.
    let written = unsafe { libc::write(file.as_raw_fd(), value.as_ptr().cast(), value.len()) };
    if written < 0 {
        return Err(SysError::last("write"));
    }
    if written as usize != value.len() {
        return Err(SysError {
            call: "write",
            errno: Errno::EIO,
        });
    }
    Ok(())
}
