//! The sandbox's user namespace: who its root is on the host, and how it gets there.

use std::fmt;
use std::io::{self, Write as _};

use nix::unistd::{Gid, Pid, Uid};

use crate::diagnosis::Diagnosed;
use crate::sys::SysError;

/// The host identity the sandbox's uid 0 and gid 0 map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostIdentity {
    pub uid: u32,
    pub gid: u32,
}

/// `nobody`/`nogroup` on Debian and most distributions.
pub const OVERFLOW_ID: u32 = 65534;

impl HostIdentity {
    /// The user who ran `sudo` (`SUDO_UID`/`SUDO_GID`), else 65534; explicit values win.
    pub fn choose(uid: Option<u32>, gid: Option<u32>) -> Self {
        let from_env = |name| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
        Self {
            uid: uid.or_else(|| from_env("SUDO_UID")).unwrap_or(OVERFLOW_ID),
            gid: gid.or_else(|| from_env("SUDO_GID")).unwrap_or(OVERFLOW_ID),
        }
    }
}

impl fmt::Display for HostIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "uid {} gid {}", self.uid, self.gid)
    }
}

/// Whether the caller may supervise: CAP_SYS_ADMIN in the initial user namespace, which the
/// kernel requires for non-zero `delegate_*` options and for creating the sandbox's superblock.
pub fn check_supervisor_privilege() -> Result<(), UserNsError> {
    if !in_initial_user_namespace() {
        return Err(UserNsError::NotInitialNamespace);
    }
    match caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_ADMIN,
    ) {
        Ok(true) => Ok(()),
        Ok(false) => Err(UserNsError::NoSysAdmin),
        Err(e) => Err(UserNsError::Capabilities(e.to_string())),
    }
}

/// The initial user namespace has the fixed inode number `PROC_USER_INIT_INO`.
pub fn in_initial_user_namespace() -> bool {
    const PROC_USER_INIT_INO: u64 = 0xEFFF_FFFD;
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self/ns/user").is_ok_and(|m| m.ino() == PROC_USER_INIT_INO)
}

/// Drops the calling process's supplementary groups (the supervisor's, before it creates the
/// sandbox).
///
/// The sandbox inherits its creator's groups through `clone3` and cannot drop them itself:
/// inside its user namespace `setgroups` is denied (we write `setgroups=deny`, so the sandbox
/// cannot drop groups to get around group-deny permissions either). Groups kept from the host
/// would still grant host group access to files. The supervisor, as root, needs none of them.
pub fn drop_supplementary_groups() -> Result<(), UserNsError> {
    nix::unistd::setgroups(&[]).map_err(|errno| UserNsError::Sys {
        step: "dropping supplementary groups",
        source: SysError {
            call: "setgroups",
            errno,
        },
    })
}

/// Writes `uid_map`, `setgroups` and `gid_map` of `pid` (called by the parent).
///
/// Order matters: `setgroups` must be `deny` before `gid_map` is written (the kernel refuses the
/// write to `setgroups` once a gid map exists), and each map can be written once only.
pub fn write_id_maps(pid: Pid, identity: HostIdentity) -> Result<(), UserNsError> {
    let write = |file: &'static str, content: String| -> Result<(), UserNsError> {
        let path = format!("/proc/{pid}/{file}");
        let result = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(content.as_bytes()));
        result.map_err(|source| UserNsError::WriteMap {
            file,
            content: content.trim_end().to_owned(),
            source,
        })?;
        log::debug!("wrote {path}: {}", content.trim_end());
        Ok(())
    };
    write("uid_map", format!("0 {} 1\n", identity.uid))?;
    write("setgroups", "deny\n".to_owned())?;
    write("gid_map", format!("0 {} 1\n", identity.gid))?;
    Ok(())
}

/// Becomes uid 0 / gid 0 inside the namespace (the mapped host identity outside).
///
/// Until now the process kept host uid 0 as its credentials, unmapped inside the namespace.
/// Switching to the namespace's root makes files it creates belong to the mapped host user, and
/// (since the new euid is the namespace's root) the kernel sets the effective capabilities to the
/// full permitted set of the namespace.
pub fn become_namespace_root() -> Result<(), UserNsError> {
    let root_gid = Gid::from_raw(0);
    let root_uid = Uid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid).map_err(|errno| UserNsError::Sys {
        step: "becoming gid 0 in the user namespace",
        source: SysError {
            call: "setresgid",
            errno,
        },
    })?;
    nix::unistd::setresuid(root_uid, root_uid, root_uid).map_err(|errno| UserNsError::Sys {
        step: "becoming uid 0 in the user namespace",
        source: SysError {
            call: "setresuid",
            errno,
        },
    })?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum UserNsError {
    #[error(
        "not running in the initial user namespace: the supervisor needs CAP_SYS_ADMIN in the initial user namespace to delegate a bpffs; run it as root on the host (sudo token_userns_demo)"
    )]
    NotInitialNamespace,
    #[error("missing CAP_SYS_ADMIN: delegating a bpffs needs root on the host; run it with sudo")]
    NoSysAdmin,
    #[error("reading capabilities: {0}")]
    Capabilities(String),
    #[error("creating the sandbox's user namespace: {0}")]
    Create(Diagnosed),
    #[error("writing {file} ({content:?}): {source}")]
    WriteMap {
        file: &'static str,
        content: String,
        source: io::Error,
    },
    #[error("{step}: {source}")]
    Sys {
        step: &'static str,
        source: SysError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnosis::Step;
    use crate::sys::Errno;

    #[test]
    fn explicit_ids_win() {
        let id = HostIdentity::choose(Some(1234), Some(5678));
        assert_eq!(
            id,
            HostIdentity {
                uid: 1234,
                gid: 5678
            }
        );
    }

    #[test]
    fn unshare_errors_name_the_sysctl() {
        let create = |errno| {
            UserNsError::Create(Diagnosed::new(
                Step::CreateNamespaces,
                SysError {
                    call: "clone3(CLONE_NEWUSER | CLONE_NEWNS)",
                    errno,
                },
            ))
        };
        let text = create(Errno::ENOSPC).to_string();
        assert!(
            text.contains("clone3(CLONE_NEWUSER | CLONE_NEWNS) failed: ENOSPC"),
            "{text}"
        );
        assert!(text.contains("user.max_user_namespaces"), "{text}");
        let text = create(Errno::EPERM).to_string();
        assert!(
            text.contains("apparmor_restrict_unprivileged_userns"),
            "{text}"
        );
    }
}
