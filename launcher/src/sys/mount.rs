//! The new mount API (`fsopen`, `fsconfig`, `fsmount`, `fspick`, `move_mount`).
//!
//! libc exposes the syscall numbers but no wrappers, and the bpffs delegation only works through
//! this API: the superblock must be created by a different process (the privileged parent) than
//! the one that opened the context (the child inside the user namespace).

use std::ffi::CStr;
use std::os::fd::{AsRawFd as _, BorrowedFd, OwnedFd};

use super::{SysError, fd_result, unit_result};

const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
const FSPICK_CLOEXEC: libc::c_uint = 0x1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSCONFIG_CMD_RECONFIGURE: libc::c_uint = 7;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// `fsopen(fstype, FSOPEN_CLOEXEC)`: a filesystem context owned by the caller's user namespace.
pub fn fsopen(fstype: &CStr, call: &'static str) -> Result<OwnedFd, SysError> {
    // SAFETY: fstype is a valid NUL-terminated string.
    let ret = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) };
    fd_result(ret, call)
}

/// `fsconfig(fs, FSCONFIG_SET_STRING, key, value, 0)`.
pub fn fsconfig_set_string(fs: BorrowedFd<'_>, key: &CStr, value: &CStr) -> Result<(), SysError> {
    // SAFETY: key and value are valid NUL-terminated strings; fs is an open descriptor.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    };
    unit_result(ret, "fsconfig(FSCONFIG_SET_STRING)")
}

/// `fsconfig(fs, FSCONFIG_SET_FLAG, key, NULL, 0)`.
pub fn fsconfig_set_flag(fs: BorrowedFd<'_>, key: &CStr) -> Result<(), SysError> {
    // SAFETY: key is a valid NUL-terminated string; fs is an open descriptor.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_FLAG,
            key.as_ptr(),
            std::ptr::null::<u8>(),
            0,
        )
    };
    unit_result(ret, "fsconfig(FSCONFIG_SET_FLAG)")
}

fn fsconfig_cmd(fs: BorrowedFd<'_>, cmd: libc::c_uint, call: &'static str) -> Result<(), SysError> {
    // SAFETY: commands take no pointers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            cmd,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
            0,
        )
    };
    unit_result(ret, call)
}

/// One message of a filesystem context's log (`read` on the context descriptor), or `None`
/// when the log is empty (ENODATA).
pub fn read_context_message(fs: BorrowedFd<'_>) -> Result<Option<String>, SysError> {
    let mut buf = [0u8; 512];
    match nix::unistd::read(fs, &mut buf) {
        Ok(n) => Ok(Some(String::from_utf8_lossy(&buf[..n]).into_owned())),
        Err(super::Errno::ENODATA) => Ok(None),
        Err(errno) => Err(SysError {
            call: "read(fscontext)",
            errno,
        }),
    }
}

/// `fsconfig(fs, FSCONFIG_CMD_CREATE)`: creates the superblock from the configured context.
pub fn fsconfig_create(fs: BorrowedFd<'_>) -> Result<(), SysError> {
    fsconfig_cmd(fs, FSCONFIG_CMD_CREATE, "fsconfig(FSCONFIG_CMD_CREATE)")
}

/// `fsconfig(fs, FSCONFIG_CMD_RECONFIGURE)`: applies options to an existing superblock.
pub fn fsconfig_reconfigure(fs: BorrowedFd<'_>) -> Result<(), SysError> {
    fsconfig_cmd(
        fs,
        FSCONFIG_CMD_RECONFIGURE,
        "fsconfig(FSCONFIG_CMD_RECONFIGURE)",
    )
}

/// `fsmount(fs, FSMOUNT_CLOEXEC, 0)`: a detached mount of the created superblock.
pub fn fsmount(fs: BorrowedFd<'_>) -> Result<OwnedFd, SysError> {
    // SAFETY: no pointers.
    let ret = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
    fd_result(ret, "fsmount")
}

/// `fspick(dirfd, "", FSPICK_CLOEXEC | FSPICK_EMPTY_PATH)`: a context for an existing mount.
pub fn fspick(mount: BorrowedFd<'_>) -> Result<OwnedFd, SysError> {
    const FSPICK_EMPTY_PATH: libc::c_uint = 0x8;
    // SAFETY: the path is a valid empty string.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fspick,
            mount.as_raw_fd(),
            c"".as_ptr(),
            FSPICK_CLOEXEC | FSPICK_EMPTY_PATH,
        )
    };
    fd_result(ret, "fspick")
}

/// `move_mount(mount, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)`: attaches a detached mount.
pub fn move_mount_to(mount: BorrowedFd<'_>, target: &CStr) -> Result<(), SysError> {
    // SAFETY: both paths are valid NUL-terminated strings.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    unit_result(ret, "move_mount")
}

/// `mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)`: a new mount namespace starts with the
/// propagation of the one it was copied from; this stops its mounts from reaching the original.
pub fn make_tree_private() -> Result<(), SysError> {
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|errno| SysError {
        call: "mount(\"/\", MS_REC | MS_PRIVATE)",
        errno,
    })
}

/// `mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0555")`:
/// an empty read-only directory over `target`, hiding what is mounted there.
pub fn cover_with_empty_tmpfs(target: &std::path::Path) -> Result<(), SysError> {
    use nix::mount::MsFlags;
    nix::mount::mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0555"),
    )
    .map_err(|errno| SysError {
        call: "mount(tmpfs, MS_RDONLY)",
        errno,
    })
}
