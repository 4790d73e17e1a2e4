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

/// `nobody`/`nogroup` on Debian and most distributions (the conformance harness's sandboxes).
pub const OVERFLOW_ID: u32 = 65534;

/// The first transient uid and gid: a sandbox with no `--uid` and no `SUDO_UID` maps its root
/// to `TRANSIENT_ID_BASE + the supervisor's pid`, an id no other process or file of the host
/// uses (pids stay below 2^22, so the range is 1879048192–1883242495, 0x70000000–0x703FFFFF,
/// above systemd's container range 524288–1879048191, where its UIDS-GIDS document reserves
/// nothing). Not 65534: `nobody` is shared by many daemons and NFS, and a process of the same
/// uid could signal or ptrace the sandbox, or take what it hands out (its namespace files).
pub const TRANSIENT_ID_BASE: u32 = 0x7000_0000;

impl HostIdentity {
    /// Explicit values win; else the user who ran `sudo` (`SUDO_UID`/`SUDO_GID`), unless that
    /// is root (`sudo` from a root shell sets 0; the sandbox's root is host root only when asked
    /// with `--uid 0`); else the transient id of this supervisor ([`TRANSIENT_ID_BASE`]).
    pub fn choose(uid: Option<u32>, gid: Option<u32>, supervisor_pid: u32) -> Self {
        let from_env = |name| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|id| *id != 0)
        };
        let transient = TRANSIENT_ID_BASE.saturating_add(supervisor_pid);
        Self {
            uid: uid.or_else(|| from_env("SUDO_UID")).unwrap_or(transient),
            gid: gid.or_else(|| from_env("SUDO_GID")).unwrap_or(transient),
        }
    }

    /// What an explicitly privileged identity grants, one warning each: uid 0 is host root for
    /// every file, gid 0 and the other system groups (below 1000) give their file access
    /// (`shadow` reads password hashes, `disk` raw disks).
    pub fn warnings(&self, uid_given: bool, gid_given: bool) -> Vec<String> {
        let mut warnings = Vec::new();
        if uid_given && self.uid == 0 {
            warnings.push("--uid 0: the sandbox's root is host root: it can read and write every file host root can in its view of the file system, and what it creates belongs to host root".to_owned());
        }
        if gid_given && self.gid < 1000 {
            let name = group_name(self.gid)
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            warnings.push(format!(
                "--gid {}{name}: a system group; the sandbox can read and write every file that group can",
                self.gid
            ));
        }
        warnings
    }
}

/// The name of group `gid` in `/etc/group`, if it has one there.
fn group_name(gid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?.parse::<u32>().ok()?;
        (id == gid).then(|| name.to_owned())
    })
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
        let id = HostIdentity::choose(Some(1234), Some(5678), 42);
        assert_eq!(
            id,
            HostIdentity {
                uid: 1234,
                gid: 5678
            }
        );
    }

    #[test]
    fn privileged_explicit_ids_warn_and_transient_ids_follow_the_pid() {
        let root = HostIdentity { uid: 0, gid: 0 };
        let warnings = root.warnings(true, true);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("host root"));
        assert!(root.warnings(false, false).is_empty());
        let user = HostIdentity {
            uid: 1000,
            gid: 1000,
        };
        assert!(user.warnings(true, true).is_empty());
        let id = HostIdentity::choose(None, Some(7), 1234);
        if std::env::var_os("SUDO_UID").is_none() {
            assert_eq!(id.uid, TRANSIENT_ID_BASE + 1234);
        }
        assert_eq!(id.gid, 7);
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
