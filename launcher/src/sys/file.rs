//! Read-only file mappings.

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
