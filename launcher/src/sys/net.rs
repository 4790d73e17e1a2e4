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
