//! BPF tokens: creating one from a delegated bpffs, and reading what it allows.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd as _, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::policy::{DelegateKind, Delegation, Mask};
use crate::sys::{self, Errno, SysError};

/// `statfs.f_type` of a bpffs instance (`BPF_FS_MAGIC`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// A BPF token: the right to run the delegated `bpf()` commands in the token's user namespace.
#[derive(Debug)]
pub struct Token {
    fd: OwnedFd,
}

impl AsFd for Token {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Token {
    /// Opens the bpffs root at `path` and creates a token from it.
    ///
    /// `path` may be a mount point or `/proc/self/fd/N` naming a detached mount from `fsmount`.
    pub fn from_bpffs_path(path: &Path) -> Result<Self, TokenError> {
        let dir = File::options()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| TokenError::Open {
                path: path.to_owned(),
                source,
            })?;
        Self::from_bpffs(dir.as_fd(), path)
    }

    /// Creates a token from an open bpffs root directory; `path` is only used in messages.
    pub fn from_bpffs(root: BorrowedFd<'_>, path: &Path) -> Result<Self, TokenError> {
        sys::bpf::token_create(root, 0)
            .map(|fd| Self { fd })
            .map_err(|source| TokenError::Create {
                path: path.to_owned(),
                source,
                cause: explain_create_failure(source.errno, root),
            })
    }

    /// What the token allows, from `/proc/self/fdinfo/<fd>` (masks copied at creation).
    pub fn allowed(&self) -> io::Result<Delegation> {
        let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", self.fd.as_raw_fd()))?;
        parse_token_fdinfo(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "no allowed_* lines in the token's fdinfo",
            )
        })
    }
}

/// Parses the `allowed_*` lines of a token's fdinfo (`0x...` or `any`).
pub fn parse_token_fdinfo(text: &str) -> Option<Delegation> {
    let mut delegation = Delegation::default();
    let mut seen = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let Some(kind) = DelegateKind::ALL
            .into_iter()
            .find(|k| k.fdinfo_key() == key.trim())
        else {
            continue;
        };
        let value = value.trim();
        let mask = if value == "any" {
            Mask::ANY
        } else {
            Mask(u64::from_str_radix(value.strip_prefix("0x")?, 16).ok()?)
        };
        delegation.set(kind, mask);
        seen += 1;
    }
    (seen == 4).then_some(delegation)
}

/// The likely cause of a `BPF_TOKEN_CREATE` failure, in the order the kernel checks
/// (`bpf_token_create` in `kernel/bpf/token.c`).
fn explain_create_failure(errno: Errno, root: BorrowedFd<'_>) -> String {
    match errno {
        Errno::EINVAL => match nix::sys::statfs::fstatfs(root) {
            Ok(st) if st.filesystem_type().0 != BPF_FS_MAGIC => format!(
                "this is not a bpffs (filesystem magic {:#x}); point at the root of a bpffs mounted with delegate_* options",
                st.filesystem_type().0
            ),
            Ok(_) => "this is a bpffs but not the root of its instance (a token is made from the mount's root directory), or the kernel predates BPF tokens (Linux 6.9)".to_owned(),
            Err(_) => "not the root of a bpffs instance, or the kernel predates BPF tokens (Linux 6.9)".to_owned(),
        },
        Errno::EPERM => "the bpffs belongs to another user namespace than the caller's, or the caller lacks CAP_BPF there; create the token inside the user namespace that mounted the bpffs (token_userns_demo does this)".to_owned(),
        Errno::EOPNOTSUPP => "the caller is in the initial user namespace: a host-owned bpffs never yields a token; use a bpffs mounted with delegate_* options inside a user namespace (run under token_userns_demo)".to_owned(),
        Errno::ENOENT => "the bpffs has no delegation (all four delegate_* options are empty); mount it with delegate_cmds, delegate_maps, delegate_progs and delegate_attachs".to_owned(),
        Errno::EBADF => "the descriptor is not open".to_owned(),
        Errno::ENOSYS => "the kernel has no bpf() system call".to_owned(),
        _ => "unexpected error from the kernel".to_owned(),
    }
}

/// Why no token could be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("opening bpffs {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("creating a BPF token from {}: {source}: {cause}", path.display())]
    Create {
        path: PathBuf,
        source: SysError,
        cause: String,
    },
}

impl TokenError {
    /// The errno of the failed call, for callers that branch on it.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Self::Open { source, .. } => source.raw_os_error().map(Errno::from_raw),
            Self::Create { source, .. } => Some(source.errno),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_masks_are_decoded() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1\nallowed_cmds:\t0x40021\nallowed_maps:\t0x4\nallowed_progs:\tany\nallowed_attachs:\t0x2000000000\n";
        let d = parse_token_fdinfo(text).unwrap();
        assert_eq!(d.cmds, Mask(0x40021));
        assert_eq!(d.maps, Mask(4));
        assert_eq!(d.progs, Mask::ANY);
        assert_eq!(d.attachs, Mask(1 << 37));
    }

    #[test]
    fn fdinfo_without_masks_is_not_a_token() {
        assert_eq!(parse_token_fdinfo("pos:\t0\nflags:\t02\n"), None);
        assert_eq!(
            parse_token_fdinfo(
                "allowed_cmds:\tzz\nallowed_maps:\t0\nallowed_progs:\t0\nallowed_attachs:\t0\n"
            ),
            None
        );
    }
}
