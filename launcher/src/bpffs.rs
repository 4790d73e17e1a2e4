//! The delegated bpffs instance: opened by the sandbox, configured and created by the supervisor.
//!
//! The split is the kernel's, not ours: the bpffs belongs to the user namespace of the process
//! that called `fsopen`, so the sandbox must open it; non-zero `delegate_*` options and creating a
//! superblock for a non-initial user namespace need CAP_SYS_ADMIN in the initial namespace, so the
//! supervisor must configure and create it.

use std::ffi::CString;
use std::os::fd::{AsRawFd as _, BorrowedFd, OwnedFd};

use crate::diagnosis::{Diagnosed, Step};
use crate::policy::{DelegateKind, Delegation, EnumNames};
use crate::sys;

/// `fsopen("bpf")` in the sandbox (needs its own mount namespace).
pub fn open_context() -> Result<OwnedFd, BpffsError> {
    sys::mount::fsopen(c"bpf", "fsopen(\"bpf\")")
        .map_err(|source| BpffsError::Open(Diagnosed::new(Step::OpenBpffs, source)))
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
                source: Diagnosed::new(Step::DelegateBpffs, source)
                    .detail(format!("the running kernel is {}", kernel_release())),
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
    sys::mount::fsconfig_create(context)
        .map_err(|source| BpffsError::Create(Diagnosed::new(Step::CreateBpffs, source)))?;
    log::debug!(
        "fsconfig(fd {}, FSCONFIG_CMD_CREATE): superblock created",
        context.as_raw_fd()
    );
    Ok(())
}

/// `fsmount` of the created superblock in the sandbox: a detached mount, reachable only through
/// the returned descriptor (and `/proc/self/fd/N`), so nothing appears in any mount table.
pub fn mount(context: BorrowedFd<'_>) -> Result<OwnedFd, BpffsError> {
    sys::mount::fsmount(context)
        .map_err(|source| BpffsError::Mount(Diagnosed::new(Step::MountBpffs, source)))
}

#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    #[error("opening a bpffs context: {0}")]
    Open(Diagnosed),
    #[error("setting {}={value}: {source}", kind.option())]
    Configure {
        kind: DelegateKind,
        value: String,
        source: Diagnosed,
    },
    #[error("creating the bpffs superblock: {0}")]
    Create(Diagnosed),
    #[error("mounting the bpffs: {0}")]
    Mount(Diagnosed),
}

impl BpffsError {
    pub const fn diagnosed(&self) -> &Diagnosed {
        match self {
            Self::Open(d)
            | Self::Create(d)
            | Self::Mount(d)
            | Self::Configure { source: d, .. } => d,
        }
    }
}

/// `uname -r`, for messages.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname().map_or_else(
        |_| "unknown".to_owned(),
        |u| u.release().to_string_lossy().into_owned(),
    )
}
