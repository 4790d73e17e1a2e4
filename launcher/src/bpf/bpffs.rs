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
use crate::sys::{self, Errno, SysError};

/// `fsopen("bpf")` in the sandbox (needs its own mount namespace).
pub fn open_context() -> Result<OwnedFd, BpffsError> {
    sys::mount::fsopen(c"bpf", "fsopen(\"bpf\")")
        .map_err(|source| BpffsError::Open(Diagnosed::new(Step::OpenBpffs, source)))
}

/// Checks that a descriptor received from the sandbox is a bpf filesystem context before the
/// supervisor configures and creates it with its host privileges: a context of another type
/// (a disk filesystem whose `source` the sandbox set, say) would get a superblock created by
/// host root, which the sandbox could then mount. Not reachable while the sandbox runs only
/// our code at that point; the supervisor must not depend on that.
///
/// A context names its type only in its log: bpffs logs `e bpf: Bad value for 'uid'` for a
/// `uid` option given without a value (`FSCONFIG_SET_FLAG`), and changes nothing. Messages of other types carry
/// their own names (`e tmpfs: ...`), and no message of the sandbox's making can start that
/// way. Whatever the log held before is read and discarded first.
pub fn check_is_bpf_context(context: BorrowedFd<'_>) -> Result<(), BpffsError> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", context.as_raw_fd()))
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_default();
    if link != "anon_inode:[fscontext]" {
        return Err(BpffsError::NotBpfContext {
            what: format!("not a filesystem context ({link})"),
        });
    }
    let drain = |context| -> Result<Vec<String>, BpffsError> {
        let mut messages = Vec::new();
        // The log keeps at most 8 messages.
        for _ in 0..16 {
            match sys::mount::read_context_message(context).map_err(BpffsError::Probe)? {
                Some(message) => messages.push(message),
                None => break,
            }
        }
        Ok(messages)
    };
    drain(context)?;
    match sys::mount::fsconfig_set_flag(context, c"uid") {
        Err(SysError {
            errno: Errno::EINVAL,
            ..
        }) => {}
        other => {
            return Err(BpffsError::NotBpfContext {
                what: format!("it took a `uid` flag without a value ({other:?})"),
            });
        }
    }
    let messages = drain(context)?;
    if messages.iter().any(|m| m.starts_with("e bpf: ")) {
        log::debug!("fd {} is a bpf filesystem context", context.as_raw_fd());
        return Ok(());
    }
    Err(BpffsError::NotBpfContext {
        what: format!("its log says {messages:?}"),
    })
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
    #[error(
        "the descriptor the sandbox sent is not a bpf filesystem context ({what}); refusing to create a superblock from it"
    )]
    NotBpfContext { what: String },
    #[error("checking the filesystem context's type: {0}")]
    Probe(SysError),
}

impl BpffsError {
    /// The failed call with its diagnosis, if the failure was a diagnosed call.
    pub const fn diagnosed(&self) -> Option<&Diagnosed> {
        match self {
            Self::Open(d)
            | Self::Create(d)
            | Self::Mount(d)
            | Self::Configure { source: d, .. } => Some(d),
            Self::NotBpfContext { .. } | Self::Probe(_) => None,
        }
    }

    /// The table's diagnosis of the failed call, if there is one.
    pub fn diagnosis(&self) -> Option<&'static crate::diagnosis::Diagnosis> {
        self.diagnosed().and_then(|d| d.diagnosis)
    }
}

/// `uname -r`, for messages.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname().map_or_else(
        |_| "unknown".to_owned(),
        |u| u.release().to_string_lossy().into_owned(),
    )
}
