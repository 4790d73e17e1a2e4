//! BPF tokens: creating one from a delegated bpffs, and reading what it allows.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd as _, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::diagnosis::{Cause, Diagnosed, Step};
use crate::policy::{DelegateKind, Delegation, Mask};
use crate::sys::{self, Errno, SysError};

/// `statfs.f_type` of a bpffs instance (`BPF_FS_MAGIC`).
const BPF_FS_MAGIC: u32 = 0xcafe_4a11;

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
                source: diagnose_create_failure(source, root),
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

/// The likely cause of a `BPF_TOKEN_CREATE` failure. EINVAL means "not a bpffs root" (or an
/// old kernel); the descriptor's filesystem type tells which (`bpf_token_create` in
/// `kernel/bpf/token.c` checks the root before anything else about the bpffs).
fn diagnose_create_failure(source: SysError, root: BorrowedFd<'_>) -> Diagnosed {
    match (source.errno, nix::sys::statfs::fstatfs(root)) {
        (Errno::EINVAL, Ok(st)) if st.filesystem_type().0 as u32 != BPF_FS_MAGIC => {
            Diagnosed::with_cause(Cause::TokenNotBpffs, source)
                .detail(format!("filesystem magic {:#x}", st.filesystem_type().0))
        }
        _ => Diagnosed::new(Step::CreateToken, source),
    }
}

/// Why no token could be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("opening bpffs {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("creating a BPF token from {}: {source}", path.display())]
    Create { path: PathBuf, source: Diagnosed },
}

impl TokenError {
    /// The errno of the failed call, for callers that branch on it.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Self::Open { source, .. } => source.raw_os_error().map(Errno::from_raw),
            Self::Create { source, .. } => Some(source.errno()),
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
