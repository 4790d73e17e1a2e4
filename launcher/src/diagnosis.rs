//! Why a system call failed, and what to do about it: one table for every error path.
//!
//! The kernel's answers are terse (`EPERM`, `EINVAL`) and the same errno means different things
//! at different steps: `EPERM` from `fsopen` is a missing mount namespace, from
//! `FSCONFIG_CMD_CREATE` a missing host privilege or a distribution kernel, from `PROG_LOAD` a
//! delegation bit. Each row of [`TABLE`] names the step, the call and the errno, and gives the
//! likely cause and the fix, so every message says the same thing for the same failure, and
//! `token_userns_demo --check` reuses the rows for its own findings.
//!
//! Where one (step, errno) has several causes the caller knows more (the filesystem type of the
//! descriptor, the token's masks) and picks the row with [`Diagnosed::with_cause`].

use std::fmt;

use crate::sys::{Errno, SysError};

/// The steps of a run in which a system call can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `clone3`/`clone`/`unshare` with `CLONE_NEWUSER` (and the mount and PID namespaces).
    CreateNamespaces,
    /// `unshare(CLONE_NEWNET)` in the sandbox.
    CreateNetworkNamespace,
    /// `fsopen("bpf")` in the sandbox.
    OpenBpffs,
    /// `fsconfig(FSCONFIG_SET_STRING, delegate_*)` in the supervisor.
    DelegateBpffs,
    /// `fsconfig(FSCONFIG_CMD_CREATE)` in the supervisor.
    CreateBpffs,
    /// `fsmount` in the sandbox.
    MountBpffs,
    /// `bpf(BPF_TOKEN_CREATE)`.
    CreateToken,
    /// `bpf(BPF_BTF_LOAD / BPF_MAP_CREATE / BPF_PROG_LOAD)` with the token.
    Load,
    /// `bpf(BPF_LINK_CREATE)` of an XDP program.
    AttachXdp,
    /// `RTM_NEWLINK` of the veth pair in the supervisor.
    CreateVeth,
    /// `bpf()` itself, probed by `--check`.
    BpfSyscall,
    /// Reading `/sys/kernel/btf/vmlinux`.
    KernelBtf,
}

impl Step {
    /// The call as a user would search for it.
    pub const fn call(self) -> &'static str {
        match self {
            Self::CreateNamespaces => "clone3(CLONE_NEWUSER | CLONE_NEWNS)",
            Self::CreateNetworkNamespace => "unshare(CLONE_NEWNET)",
            Self::OpenBpffs => "fsopen(\"bpf\")",
            Self::DelegateBpffs => "fsconfig(FSCONFIG_SET_STRING, delegate_*)",
            Self::CreateBpffs => "fsconfig(FSCONFIG_CMD_CREATE)",
            Self::MountBpffs => "fsmount",
            Self::CreateToken => "bpf(BPF_TOKEN_CREATE)",
            Self::Load => "bpf(BPF_BTF_LOAD | BPF_MAP_CREATE | BPF_PROG_LOAD)",
            Self::AttachXdp => "bpf(BPF_LINK_CREATE)",
            Self::CreateVeth => "netlink RTM_NEWLINK (veth)",
            Self::BpfSyscall => "bpf()",
            Self::KernelBtf => "open(/sys/kernel/btf/vmlinux)",
        }
    }
}

/// The rows of [`TABLE`], by name: tests and callers refer to a diagnosis by its cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    UserNamespacesRestricted,
    UserNamespaceLimit,
    UserNamespaceNesting,
    NamespacesNotBuilt,
    ProcessLimit,
    NetworkNamespaceLimit,
    FsopenNeedsMountNamespace,
    NoBpffs,
    NoMountApi,
    DelegationUnsupported,
    DelegationNeedsHostRoot,
    BpffsCreationRefused,
    FsmountRefused,
    TokenNotBpffs,
    TokenNotBpffsRoot,
    TokenOtherNamespace,
    TokenInitialNamespace,
    TokenNoDelegation,
    TokenPathDescriptor,
    TokenMissingDelegation,
    TokenCallerLacksCapability,
    LoadWithoutToken,
    VerifierRejected,
    LoadOutOfMemory,
    XdpAlreadyAttached,
    XdpAttachNeedsNetAdmin,
    VethNameTaken,
    NoVethDriver,
    VethNeedsNetAdmin,
    NoBpfSyscall,
    KernelWithoutTokens,
    NoKernelBtf,
}

/// One row: at `step`, `errno` most likely means `cause`; `fix` says what to change.
#[derive(Debug, PartialEq, Eq)]
pub struct Diagnosis {
    pub id: Cause,
    pub step: Step,
    pub errno: Errno,
    pub cause: &'static str,
    pub fix: &'static str,
}

impl Diagnosis {
    /// A short stable name for scripts (`--check --json`), e.g. `user-namespace-limit`.
    pub fn key(&self) -> String {
        let mut key = String::new();
        for (i, c) in format!("{:?}", self.id).chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                key.push('-');
            }
            key.push(c.to_ascii_lowercase());
        }
        key
    }
}

macro_rules! row {
    ($id:ident, $step:ident, $errno:ident, $cause:expr, $fix:expr $(,)?) => {
        Diagnosis {
            id: Cause::$id,
            step: Step::$step,
            errno: Errno::$errno,
            cause: $cause,
            fix: $fix,
        }
    };
}

/// Every known failure. The first row for a (step, errno) is the default; the others are chosen
/// by callers that can tell them apart.
pub static TABLE: &[Diagnosis] = &[
    row!(
        UserNamespacesRestricted,
        CreateNamespaces,
        EPERM,
        "the kernel refused to create a user namespace: user namespaces are restricted on this machine, or a seccomp filter of the calling container blocks them",
        "allow them: `sysctl kernel.apparmor_restrict_unprivileged_userns=0` (Ubuntu 23.10+), `sysctl kernel.unprivileged_userns_clone=1` (older Debian kernels), or allow clone3/unshare in the container's seccomp profile",
    ),
    row!(
        UserNamespaceLimit,
        CreateNamespaces,
        ENOSPC,
        "the user namespace limit is zero or reached",
        "raise it: `sysctl user.max_user_namespaces=15000` (and check user.max_mnt_namespaces, user.max_pid_namespaces)",
    ),
    row!(
        UserNamespaceNesting,
        CreateNamespaces,
        EUSERS,
        "user namespaces are nested too deeply (the kernel allows 32 levels)",
        "run the supervisor from a shallower user namespace, ideally the host's",
    ),
    row!(
        NamespacesNotBuilt,
        CreateNamespaces,
        EINVAL,
        "the kernel lacks user, mount or PID namespaces (CONFIG_USER_NS, CONFIG_PID_NS)",
        "use a kernel built with CONFIG_USER_NS, CONFIG_PID_NS and CONFIG_NET_NS",
    ),
    row!(
        ProcessLimit,
        CreateNamespaces,
        EAGAIN,
        "the process limit is reached: the caller's RLIMIT_NPROC (`ulimit -u`) or its cgroup's pids.max allows no more processes",
        "end some processes or raise the limit (`ulimit -u`, pids.max of the cgroup the supervisor runs in)",
    ),
    row!(
        NetworkNamespaceLimit,
        CreateNetworkNamespace,
        ENOSPC,
        "the network namespace limit is zero or reached",
        "raise it: `sysctl user.max_net_namespaces=15000`",
    ),
    row!(
        FsopenNeedsMountNamespace,
        OpenBpffs,
        EPERM,
        "fsopen needs CAP_SYS_ADMIN over the caller's mount namespace, which a user namespace only has over a mount namespace it created",
        "unshare a mount namespace inside the user namespace before fsopen (token_userns_demo does)",
    ),
    row!(
        NoBpffs,
        OpenBpffs,
        ENODEV,
        "the kernel has no bpf filesystem",
        "use a kernel built with CONFIG_BPF_SYSCALL",
    ),
    row!(
        NoMountApi,
        OpenBpffs,
        ENOSYS,
        "the kernel predates the new mount API (fsopen, Linux 5.2)",
        "use Linux 6.9 or later (BPF tokens need it anyway)",
    ),
    row!(
        DelegationUnsupported,
        DelegateBpffs,
        EINVAL,
        "the kernel does not know the delegate_* options: BPF token delegation needs Linux 6.9 or later",
        "boot a Linux 6.9+ kernel (`uname -r` shows the running one)",
    ),
    row!(
        DelegationNeedsHostRoot,
        DelegateBpffs,
        EPERM,
        "non-zero delegate_* options need CAP_SYS_ADMIN in the initial user namespace",
        "run the supervisor as root on the host (sudo token_userns_demo); the sandbox itself can never delegate",
    ),
    row!(
        BpffsCreationRefused,
        CreateBpffs,
        EPERM,
        "the kernel refused to create a bpffs owned by the sandbox's user namespace: the caller lacks CAP_SYS_ADMIN in the initial user namespace, or the kernel does not allow bpffs in user namespaces (some distribution 6.8 kernels, e.g. Ubuntu's)",
        "run the supervisor as root on the host, on Linux 6.9 or later",
    ),
    row!(
        FsmountRefused,
        MountBpffs,
        EPERM,
        "fsmount needs CAP_SYS_ADMIN in the user namespace that owns the caller's mount namespace",
        "mount the bpffs from the process that created the user and mount namespaces (token_userns_demo does)",
    ),
    row!(
        TokenNotBpffsRoot,
        CreateToken,
        EINVAL,
        "the path is a bpffs but not the root of its instance (a token is made from the mount's root directory), or the kernel predates BPF tokens (Linux 6.9)",
        "point at the directory the bpffs is mounted on",
    ),
    row!(
        TokenNotBpffs,
        CreateToken,
        EINVAL,
        "the path is not on a bpffs",
        "point at the root of a bpffs mounted with delegate_* options",
    ),
    row!(
        TokenOtherNamespace,
        CreateToken,
        EPERM,
        "the bpffs belongs to another user namespace than the caller's, or the caller lacks CAP_BPF there",
        "create the token inside the user namespace that opened the bpffs, as its root (token_userns_demo runs the command there)",
    ),
    row!(
        TokenInitialNamespace,
        CreateToken,
        EOPNOTSUPP,
        "the caller is in the initial user namespace: a host-owned bpffs never yields a token",
        "use a bpffs mounted with delegate_* options inside a user namespace (run under token_userns_demo)",
    ),
    row!(
        TokenNoDelegation,
        CreateToken,
        ENOENT,
        "the bpffs has no delegation (all four delegate_* options are empty)",
        "mount it with delegate_cmds, delegate_maps, delegate_progs and delegate_attachs",
    ),
    row!(
        TokenPathDescriptor,
        CreateToken,
        EBADF,
        "the descriptor is no open file to the kernel: an O_PATH descriptor, such as the one fsmount returns, counts as none",
        "open the bpffs root as a directory (for a detached mount, open /proc/self/fd/N)",
    ),
    row!(
        TokenMissingDelegation,
        Load,
        EPERM,
        "the token does not cover this call (the kernel then ignores the token and the call fails the host's capability check)",
        "delegate what is missing (token_userns_demo --policy-from OBJECT computes the least privilege of an object)",
    ),
    row!(
        TokenCallerLacksCapability,
        Load,
        EPERM,
        "the token covers this call, so the caller lacks a capability in the token's user namespace (CAP_BPF; network programs also CAP_NET_ADMIN, tracing ones CAP_PERFMON)",
        "keep those capabilities in the sandbox until the object is loaded",
    ),
    row!(
        LoadWithoutToken,
        Load,
        EPERM,
        "no token was given and the caller lacks CAP_BPF (and the program type's other capabilities) in the initial user namespace",
        "pass a token (token_trace -t BPFFS) or run as root",
    ),
    row!(
        VerifierRejected,
        Load,
        EACCES,
        "the verifier rejected the program",
        "read the verifier log below and fix the program",
    ),
    row!(
        LoadOutOfMemory,
        Load,
        ENOMEM,
        "the kernel could not charge the memory (memory cgroup limit; RLIMIT_MEMLOCK on kernels before 5.11)",
        "raise the memory cgroup's limit, or `ulimit -l unlimited` on old kernels",
    ),
    row!(
        XdpAlreadyAttached,
        AttachXdp,
        EBUSY,
        "another XDP program is already attached to this interface",
        "detach it first (`ip link set dev IFACE xdp off`) or use another interface",
    ),
    row!(
        XdpAlreadyAttached,
        AttachXdp,
        EEXIST,
        "another XDP program is already attached to this interface",
        "detach it first (`ip link set dev IFACE xdp off`) or use another interface",
    ),
    row!(
        XdpAttachNeedsNetAdmin,
        AttachXdp,
        EPERM,
        "the caller lacks CAP_NET_ADMIN in the interface's network namespace",
        "attach to an interface of the sandbox's own network namespace (lo, or --veth)",
    ),
    row!(
        VethNameTaken,
        CreateVeth,
        EEXIST,
        "an interface with the host end's name (tkn<supervisor pid>, not the --veth name) already exists on the host: left by a killed run of a supervisor that had this pid, or made by a supervisor with the same pid in another PID namespace",
        "remove it with `ip link del tkn<pid>` (the host end named above) once no sandbox uses it, then run again",
    ),
    row!(
        NoVethDriver,
        CreateVeth,
        EOPNOTSUPP,
        "the kernel has no veth driver",
        "`modprobe veth`, or use a kernel built with CONFIG_VETH",
    ),
    row!(
        VethNeedsNetAdmin,
        CreateVeth,
        EPERM,
        "creating interfaces on the host needs CAP_NET_ADMIN",
        "run the supervisor as root",
    ),
    row!(
        NoBpfSyscall,
        BpfSyscall,
        ENOSYS,
        "the kernel has no bpf() system call",
        "use a kernel built with CONFIG_BPF_SYSCALL",
    ),
    row!(
        KernelWithoutTokens,
        BpfSyscall,
        EINVAL,
        "the kernel does not know BPF_TOKEN_CREATE: BPF tokens need Linux 6.9 or later",
        "boot a Linux 6.9+ kernel",
    ),
    row!(
        NoKernelBtf,
        KernelBtf,
        ENOENT,
        "the kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing); it resolves delegate_* names and CO-RE relocations with it",
        "use a kernel built with CONFIG_DEBUG_INFO_BTF",
    ),
];

/// Every cause, for tests that check each is produced somewhere.
pub const ALL_CAUSES: [Cause; 32] = [
    Cause::UserNamespacesRestricted,
    Cause::UserNamespaceLimit,
    Cause::UserNamespaceNesting,
    Cause::NamespacesNotBuilt,
    Cause::ProcessLimit,
    Cause::NetworkNamespaceLimit,
    Cause::FsopenNeedsMountNamespace,
    Cause::NoBpffs,
    Cause::NoMountApi,
    Cause::DelegationUnsupported,
    Cause::DelegationNeedsHostRoot,
    Cause::BpffsCreationRefused,
    Cause::FsmountRefused,
    Cause::TokenNotBpffs,
    Cause::TokenNotBpffsRoot,
    Cause::TokenOtherNamespace,
    Cause::TokenInitialNamespace,
    Cause::TokenNoDelegation,
    Cause::TokenPathDescriptor,
    Cause::TokenMissingDelegation,
    Cause::TokenCallerLacksCapability,
    Cause::LoadWithoutToken,
    Cause::VerifierRejected,
    Cause::LoadOutOfMemory,
    Cause::XdpAlreadyAttached,
    Cause::XdpAttachNeedsNetAdmin,
    Cause::VethNameTaken,
    Cause::NoVethDriver,
    Cause::VethNeedsNetAdmin,
    Cause::NoBpfSyscall,
    Cause::KernelWithoutTokens,
    Cause::NoKernelBtf,
];

/// The default row for a failure at `step` with `errno`.
pub fn lookup(step: Step, errno: Errno) -> Option<&'static Diagnosis> {
    TABLE.iter().find(|d| d.step == step && d.errno == errno)
}

/// The row of a cause (its first, where one cause has several errnos).
pub fn row(cause: Cause) -> &'static Diagnosis {
    TABLE
        .iter()
        .find(|d| d.id == cause)
        .expect("every cause has a row")
}

/// The row whose cause text appears in `text`: how `--check` names the cause of a failure the
/// sandbox reported as a message.
pub fn find_in(text: &str) -> Option<&'static Diagnosis> {
    TABLE.iter().find(|d| text.contains(d.cause))
}

/// A failed call with its diagnosis: `CALL failed: ERRNO (text): CAUSE[: DETAIL]; fix: FIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosed {
    pub source: SysError,
    pub diagnosis: Option<&'static Diagnosis>,
    /// What only the caller knows, e.g. which delegation bit is missing.
    pub detail: Option<Box<str>>,
}

impl Diagnosed {
    /// The default diagnosis of `source` at `step`.
    pub fn new(step: Step, source: SysError) -> Self {
        Self {
            source,
            diagnosis: lookup(step, source.errno),
            detail: None,
        }
    }

    /// A failure at a step the table has no rows for.
    pub const fn unexplained(source: SysError) -> Self {
        Self {
            source,
            diagnosis: None,
            detail: None,
        }
    }

    /// A diagnosis the caller chose because it knows more than the errno.
    pub fn with_cause(cause: Cause, source: SysError) -> Self {
        let diagnosis = TABLE
            .iter()
            .find(|d| d.id == cause && d.errno == source.errno)
            .unwrap_or_else(|| row(cause));
        Self {
            source,
            diagnosis: Some(diagnosis),
            detail: None,
        }
    }

    #[must_use]
    pub fn detail(mut self, detail: String) -> Self {
        self.detail = Some(detail.into_boxed_str());
        self
    }

    pub fn cause(&self) -> Option<Cause> {
        self.diagnosis.map(|d| d.id)
    }

    pub const fn errno(&self) -> Errno {
        self.source.errno
    }
}

impl fmt::Display for Diagnosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.source)?;
        match self.diagnosis {
            Some(d) => {
                f.write_str(d.cause)?;
                if let Some(detail) = &self.detail {
                    write!(f, ": {detail}")?;
                }
                write!(f, "; fix: {}", d.fix)
            }
            None => {
                f.write_str("unexpected error from the kernel at this step")?;
                if let Some(detail) = &self.detail {
                    write!(f, ": {detail}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Diagnosed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_has_a_row_and_all_causes_are_listed() {
        for cause in ALL_CAUSES {
            assert_eq!(row(cause).id, cause);
        }
        for d in TABLE {
            assert!(
                ALL_CAUSES.contains(&d.id),
                "{:?} missing in ALL_CAUSES",
                d.id
            );
        }
    }

    #[test]
    fn cause_texts_are_unique_so_find_in_is_exact() {
        for d in TABLE {
            let same: Vec<_> = TABLE.iter().filter(|o| o.cause == d.cause).collect();
            assert!(
                same.iter().all(|o| o.id == d.id),
                "{:?} shares its text",
                d.id
            );
            assert_eq!(find_in(&format!("x: {}; fix", d.cause)).unwrap().id, d.id);
        }
    }

    #[test]
    fn the_message_names_call_errno_cause_and_fix() {
        let d = Diagnosed::new(
            Step::CreateNamespaces,
            SysError {
                call: "clone3(CLONE_NEWUSER | CLONE_NEWNS)",
                errno: Errno::ENOSPC,
            },
        );
        assert_eq!(d.cause(), Some(Cause::UserNamespaceLimit));
        assert_eq!(
            d.to_string(),
            "clone3(CLONE_NEWUSER | CLONE_NEWNS) failed: ENOSPC (No space left on device): the user namespace limit is zero or reached; fix: raise it: `sysctl user.max_user_namespaces=15000` (and check user.max_mnt_namespaces, user.max_pid_namespaces)"
        );
    }

    #[test]
    fn an_unknown_errno_says_so_and_keeps_the_detail() {
        let d = Diagnosed::new(
            Step::OpenBpffs,
            SysError {
                call: "fsopen(\"bpf\")",
                errno: Errno::EIO,
            },
        )
        .detail("context".to_owned());
        assert_eq!(d.cause(), None);
        assert!(
            d.to_string()
                .ends_with("unexpected error from the kernel at this step: context"),
            "{d}"
        );
    }

    #[test]
    fn a_chosen_cause_keeps_its_errno_row() {
        let source = SysError {
            call: "bpf(BPF_LINK_CREATE)",
            errno: Errno::EEXIST,
        };
        let d = Diagnosed::with_cause(Cause::XdpAlreadyAttached, source);
        assert_eq!(d.diagnosis.unwrap().errno, Errno::EEXIST);
        assert_eq!(row(Cause::UserNamespaceLimit).key(), "user-namespace-limit");
    }
}
