//! The delegated bpffs instance: opened by the sandbox, configured and created by the supervisor.
//!
//! The split is the kernel's, not ours: the bpffs belongs to the user namespace of the process
//! that called `fsopen`, so the sandbox must open it; non-zero `delegate_*` options and creating a
//! superblock for a non-initial user namespace need CAP_SYS_ADMIN in the initial namespace, so the
//! supervisor must configure and create it.

use std::ffi::CString;
use std::os::fd::{AsRawFd as _, BorrowedFd, OwnedFd};

use crate::policy::{DelegateKind, Delegation, EnumNames};
use crate::sys::{self, Errno, SysError};

/// `fsopen("bpf")` in the sandbox (needs its own mount namespace).
pub fn open_context() -> Result<OwnedFd, BpffsError> {
    sys::mount::fsopen(c"bpf", "fsopen(\"bpf\")").map_err(|source| BpffsError::Open { source })
}

/// Sets the delegation on a context and creates the superblock (the supervisor's part).
///
/// The masks go to the kernel as numbers ([`Delegation::fsconfig_masks`]); `-v` shows them
/// with the running kernel's names too.
pub fn delegate_and_create(
    context: BorrowedFd<'_>,
    delegation: &Delegation,
) -> Result<(), BpffsError> {
    for (kind, value) in delegation.fsconfig_masks() {
        let key = CString::new(kind.option()).expect("option names have no NUL");
        let c_value = CString::new(value.clone()).expect("numbers have no NUL");
        sys::mount::fsconfig_set_string(context, &key, &c_value).map_err(|source| {
            BpffsError::Configure {
                kind,
                value: value.clone(),
                source,
            }
        })?;
        if log::log_enabled!(log::Level::Debug) {
            let names = EnumNames::for_running_kernel();
            log::debug!(
                "fsconfig(fd {}, FSCONFIG_SET_STRING, {}, {value}): {}",
                context.as_raw_fd(),
                kind.option(),
                names.render(kind, delegation.get(kind))
            );
        }
    }
    sys::mount::fsconfig_create(context).map_err(|source| BpffsError::Create { source })?;
    log::debug!(
        "fsconfig(fd {}, FSCONFIG_CMD_CREATE): superblock created",
        context.as_raw_fd()
    );
    Ok(())
}

/// `fsmount` of the created superblock in the sandbox: a detached mount, reachable only through
/// the returned descriptor (and `/proc/self/fd/N`), so nothing appears in any mount table.
pub fn mount(context: BorrowedFd<'_>) -> Result<OwnedFd, BpffsError> {
    sys::mount::fsmount(context).map_err(|source| BpffsError::Mount { source })
}

#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    #[error("opening a bpffs context: {source}: {}", open_hint(source.errno))]
    Open { source: SysError },
    #[error("setting {}={value}: {source}: {}", kind.option(), configure_hint(source.errno))]
    Configure {
        kind: DelegateKind,
        value: String,
        source: SysError,
    },
    #[error("creating the bpffs superblock: {source}: {}", create_hint(source.errno))]
    Create { source: SysError },
    #[error("mounting the bpffs: {source}: {}", mount_hint(source.errno))]
    Mount { source: SysError },
}

fn open_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::EPERM => {
            "fsopen needs CAP_SYS_ADMIN over the caller's mount namespace: unshare a mount namespace inside the user namespace first"
        }
        Errno::ENODEV => "the kernel has no bpf filesystem (CONFIG_BPF_SYSCALL)",
        Errno::ENOSYS => "the kernel predates the new mount API (Linux 5.2)",
        _ => "unexpected error from the kernel",
    }
}

fn configure_hint(errno: Errno) -> String {
    match errno {
        Errno::EINVAL => format!(
            "this kernel ({}) does not know the option (BPF token delegation needs Linux 6.9 or later)",
            kernel_release()
        ),
        Errno::EPERM => "non-zero delegate_* options need CAP_SYS_ADMIN in the initial user namespace (run the supervisor as root)".to_owned(),
        _ => "unexpected error from the kernel".to_owned(),
    }
}

fn create_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::EPERM => {
            "creating a bpffs for another user namespace needs CAP_SYS_ADMIN in the initial user namespace; some distribution 6.8 kernels refuse it altogether (use Linux 6.9+)"
        }
        Errno::EBUSY => "the context was already used to create a superblock",
        _ => "unexpected error from the kernel",
    }
}

fn mount_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::EPERM => "fsmount needs CAP_SYS_ADMIN in the mount namespace's user namespace",
        Errno::EBUSY => "the superblock was not created (FSCONFIG_CMD_CREATE missing)",
        _ => "unexpected error from the kernel",
    }
}

/// `uname -r`, for messages.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname().map_or_else(
        |_| "unknown".to_owned(),
        |u| u.release().to_string_lossy().into_owned(),
    )
}
