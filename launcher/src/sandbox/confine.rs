//! What the command in the sandbox may not do even though it is root of its user namespace:
//! the capabilities it loses, and the system calls a seccomp filter refuses it. The same filter
//! hands the `bpf()` calls that take a token to the sandbox's gateway ([`crate::sandbox::gateway`]).
//!
//! Why capabilities matter with a token: the kernel's `bpf_token_capable(token, cap)` is true
//! when the loader has `cap` **or CAP_SYS_ADMIN** in the token's user namespace, and the
//! verifier asks it for CAP_PERFMON before it allows `bpf_probe_read_kernel`,
//! `bpf_get_current_task`, `bpf_trace_printk`, pointer leaks and programs without Spectre
//! mitigations, in every program type, and before `BPF_PROG_LOAD` accepts a tracing program
//! type at all. Root of the sandbox's user namespace has every capability there, so with any
//! delegated program type it could read kernel memory (verified on 6.18: an XDP program loaded
//! with the default delegation read `/etc/shadow` from the page cache). Without CAP_PERFMON and
//! CAP_SYS_ADMIN the same program is refused by the verifier, while CAP_BPF and CAP_NET_ADMIN
//! are all that XDP, TC, socket and cgroup programs and the token itself need.
//!
//! Where the drop happens: the sandbox process (PID 1 of the command's PID namespace) keeps its
//! own capabilities (its setup is done, and it only waits and forwards signals) and removes the
//! dropped ones from its bounding, inheritable and ambient sets just before it starts the
//! command. At `execve` root's new permitted set is bounding | inheritable (`cap_bprm_creds_
//! from_file`), so the command starts without them and nothing it execs (setuid or
//! file-capability binaries included) can bring them back. Capabilities a nested user namespace
//! gives the command count only in that namespace, never in the token's.
//!
//! The sandbox process also makes itself non-dumpable, so the command (which keeps
//! CAP_SYS_PTRACE in the namespace) cannot ptrace it, read its memory or take its descriptors
//! to borrow the capabilities it kept: a non-dumpable process can only be traced with
//! CAP_SYS_PTRACE in the user namespace of its memory, which for a process created by `clone3`
//! from the host supervisor is the initial one.

use std::collections::BTreeSet;
use std::fmt;

use caps::{CapSet, Capability};

use crate::sys::Errno;
use crate::sys::SysError;
use crate::sys::seccomp::{self, Label, Program, RET_ALLOW, RET_KILL_PROCESS, ret_errno};

/// The capabilities the command loses unless `--cap-add` keeps them.
pub const DROPPED_BY_DEFAULT: [Capability; 2] =
    [Capability::CAP_PERFMON, Capability::CAP_SYS_ADMIN];

/// Which of root's capabilities the command keeps inside its user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityChoice {
    dropped: BTreeSet<CapabilityName>,
    /// Default-dropped capabilities given back with `--cap-add`.
    restored: BTreeSet<CapabilityName>,
}

/// A capability, ordered by number so sets print in the kernel's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapabilityName(pub Capability);

impl PartialOrd for CapabilityName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for CapabilityName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.index().cmp(&other.0.index())
    }
}

impl fmt::Display for CapabilityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `CAP_PERFMON` → `perfmon`, the spelling --cap-add takes.
        let name = self.0.to_string();
        f.write_str(&name.trim_start_matches("CAP_").to_ascii_lowercase())
    }
}

impl Default for CapabilityChoice {
    fn default() -> Self {
        Self {
            dropped: DROPPED_BY_DEFAULT.into_iter().map(CapabilityName).collect(),
            restored: BTreeSet::new(),
        }
    }
}

impl CapabilityChoice {
    /// The default drop, plus `drop` (names or `all`), minus `add`. A capability named in both
    /// is a contradiction the user must resolve.
    pub fn from_flags(add: &[String], drop: &[String]) -> Result<Self, ConfineError> {
        let mut choice = Self::default();
        let mut dropped_explicitly = BTreeSet::new();
        for name in drop {
            if name.eq_ignore_ascii_case("all") {
                dropped_explicitly.extend(caps::all().into_iter().map(CapabilityName));
            } else {
                dropped_explicitly.insert(parse_capability(name)?);
            }
        }
        let mut added = BTreeSet::new();
        for name in add {
            if name.eq_ignore_ascii_case("all") {
                return Err(ConfineError::AddAll);
            }
            let cap = parse_capability(name)?;
            if dropped_explicitly.contains(&cap)
                && !drop.iter().any(|d| d.eq_ignore_ascii_case("all"))
            {
                return Err(ConfineError::AddedAndDropped(cap));
            }
            added.insert(cap);
        }
        choice.dropped.extend(dropped_explicitly);
        for cap in &added {
            if choice.dropped.remove(cap) && DROPPED_BY_DEFAULT.contains(&cap.0) {
                choice.restored.insert(*cap);
            }
        }
        Ok(choice)
    }

    pub fn dropped(&self) -> impl Iterator<Item = Capability> + '_ {
        self.dropped.iter().map(|c| c.0)
    }

    pub fn keeps(&self, cap: Capability) -> bool {
        !self.dropped.contains(&CapabilityName(cap))
    }

    /// Whether the command can pass the kernel's CAP_PERFMON check through the token:
    /// `bpf_token_capable` accepts CAP_PERFMON or CAP_SYS_ADMIN.
    pub fn keeps_perfmon_rights(&self) -> bool {
        self.keeps(Capability::CAP_PERFMON) || self.keeps(Capability::CAP_SYS_ADMIN)
    }

    /// One warning per default-dropped capability that `--cap-add` gave back, saying what it
    /// grants.
    pub fn warnings(&self) -> Vec<String> {
        self.restored
            .iter()
            .map(|cap| match cap.0 {
                Capability::CAP_PERFMON => "--cap-add perfmon: the command keeps CAP_PERFMON, so through the token it can load programs that read kernel memory (bpf_probe_read_kernel), leak kernel pointers, run without Spectre mitigations, and load the tracing program types (kprobe, tracepoint, raw_tracepoint, tracing, perf_event, lsm, struct_ops, ext) delegated to it, which see every host process; run only commands you trust with this".to_owned(),
                Capability::CAP_SYS_ADMIN => "--cap-add sys_admin: the command keeps CAP_SYS_ADMIN, which the kernel accepts in place of CAP_PERFMON for the token: it can load programs that read kernel memory, leak kernel pointers and trace every host process (as with --cap-add perfmon), and mount file systems inside the sandbox; run only commands you trust with this".to_owned(),
                other => format!("--cap-add {}: the command keeps {other}", CapabilityName(other)),
            })
            .collect()
    }

    /// What the token's capability checks will see: the classification's input.
    pub fn caps_kept(&self) -> crate::policy::risk::CapsKept {
        crate::policy::risk::CapsKept {
            perfmon: self.keeps(Capability::CAP_PERFMON),
            sys_admin: self.keeps(Capability::CAP_SYS_ADMIN),
        }
    }

    /// Names of the dropped capabilities, for `-v` and `--json-status`.
    pub fn dropped_names(&self) -> Vec<String> {
        self.dropped.iter().map(ToString::to_string).collect()
    }
}

fn parse_capability(name: &str) -> Result<CapabilityName, ConfineError> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    full.parse::<Capability>()
        .map(CapabilityName)
        .map_err(|_| ConfineError::UnknownCapability(name.to_owned()))
}

/// In the sandbox process, just before it starts the command: the command will start without
/// the dropped capabilities (see the module documentation for why the bounding and
/// inheritable sets are where this is done).
///
/// The bounding set is changed first: dropping from it needs CAP_SETPCAP, which may itself be
/// among the dropped ones but is only removed from the bounding set, never from this process's
/// effective set.
pub fn drop_for_exec(choice: &CapabilityChoice) -> Result<(), ConfineError> {
    let step = |call| {
        move |error: caps::errors::CapsError| ConfineError::Capabilities {
            call,
            error: error.to_string(),
        }
    };
    for cap in choice.dropped() {
        caps::drop(None, CapSet::Bounding, cap).map_err(step("prctl(PR_CAPBSET_DROP)"))?;
        caps::drop(None, CapSet::Inheritable, cap).map_err(step("capset(inheritable)"))?;
    }
    // Ambient capabilities survive exec as they are; none are wanted.
    caps::clear(None, CapSet::Ambient).map_err(step("prctl(PR_CAP_AMBIENT_CLEAR_ALL)"))?;
    Ok(())
}

/// For code that runs in the sandbox process itself (the demo): drops the capabilities from
/// every set at once.
pub fn drop_now(choice: &CapabilityChoice) -> Result<(), ConfineError> {
    drop_for_exec(choice)?;
    let step = |call| {
        move |error: caps::errors::CapsError| ConfineError::Capabilities {
            call,
            error: error.to_string(),
        }
    };
    for cap in choice.dropped() {
        caps::drop(None, CapSet::Effective, cap).map_err(step("capset(effective)"))?;
        caps::drop(None, CapSet::Permitted, cap).map_err(step("capset(permitted)"))?;
    }
    Ok(())
}

/// `prctl(PR_SET_DUMPABLE, 0)` for the sandbox process (see the module documentation).
pub fn make_undumpable() -> Result<(), ConfineError> {
    nix::sys::prctl::set_dumpable(false).map_err(|errno| {
        ConfineError::Sys(SysError {
            call: "prctl(PR_SET_DUMPABLE, 0)",
            errno,
        })
    })
}

/// Covers every cgroup v2 mount of the sandbox's mount table with an empty read-only tmpfs,
/// before the command starts; returns the paths covered.
///
/// `cgroup_bpf_link_attach` and `cgroup_bpf_prog_attach` take any cgroup v2 directory
/// descriptor and check no capability: with a cgroup program type delegated, a sandbox that can
/// open the host's cgroup2 mount (its mount table is a copy of the host's) attaches to the
/// host's root cgroup and sees or changes the traffic, sockets, sysctl reads and device access
/// of every host process (measured on 6.18 with `cgroup_sysctl`). Covered, no host cgroup is
/// reachable: without CAP_SYS_ADMIN the command can neither unmount the cover nor mount a
/// cgroup2 of its own. cgroup v1 hierarchies stay: BPF programs attach to v2 cgroups only.
pub fn hide_host_cgroups() -> Result<Vec<std::path::PathBuf>, ConfineError> {
    let mounts = crate::mountinfo::read(None).map_err(ConfineError::MountTable)?;
    let mut targets: Vec<_> = mounts
        .into_iter()
        .filter(|m| m.fs_type == "cgroup2")
        .map(|m| m.mount_point)
        .collect();
    // Deepest first, so a cover never hides a mount point still to be covered.
    targets.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    targets.dedup();
    for target in &targets {
        crate::sys::mount::cover_with_empty_tmpfs(target).map_err(|source| {
            ConfineError::HideCgroups {
                path: target.clone(),
                source,
            }
        })?;
    }
    Ok(targets)
}

/// Terminal ioctls the command must not make: `TIOCSTI` pushes characters into the terminal's
/// input queue, so a command sharing the caller's terminal could type commands into the shell
/// that started it once it exits (bubblewrap's CVE-2017-5226; `dev.tty.legacy_tiocsti` is 1
/// on most distributions). `TIOCLINUX` subcommand 2/3 (set and paste the selection) does the
/// same on a virtual console.
pub const DENIED_IOCTLS: [(u32, &str); 2] =
    [(libc::TIOCSTI as u32, "TIOCSTI"), (0x541C, "TIOCLINUX")];

/// Syscall numbers of `ioctl` for the native ABI and the compat ABI the kernel also runs.
#[cfg(target_arch = "x86_64")]
mod abi {
    pub const NATIVE_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
    pub const NATIVE_IOCTL: &[u32] = &[16];
    /// x32 programs run under AUDIT_ARCH_X86_64 with bit 30 set in the syscall number; their
    /// ioctl is `16 | X32` or the x32-only 514 (`compat_sys_ioctl`).
    pub const X32_IOCTL: &[u32] = &[0x4000_0000 | 16, 0x4000_0000 | 514];
    pub const COMPAT_ARCH: u32 = 0x4000_0003; // AUDIT_ARCH_I386
    pub const COMPAT_IOCTL: &[u32] = &[54];
    pub const NATIVE_BPF: &[u32] = &[321];
    /// x32 shares the native `sys_bpf` (its attr has no pointers of native width).
    pub const X32_BPF: &[u32] = &[0x4000_0000 | 321];
    pub const COMPAT_BPF: &[u32] = &[357];
    /// `add_key`, `request_key`, `keyctl` (x32 shares them: "common" in the syscall table).
    pub const NATIVE_KEYS: &[u32] = &[
        248,
        249,
        250,
        0x4000_0000 | 248,
        0x4000_0000 | 249,
        0x4000_0000 | 250,
    ];
    pub const COMPAT_KEYS: &[u32] = &[286, 287, 288];
    /// `clone3` (the same number on every ABI).
    pub const NATIVE_CLONE3: &[u32] = &[435, 0x4000_0000 | 435];
    pub const COMPAT_CLONE3: &[u32] = &[435];
    /// `unshare` and `clone`, whose first argument holds the namespace flags.
    pub const NATIVE_NS_FLAGS: &[u32] = &[272, 56, 0x4000_0000 | 272, 0x4000_0000 | 56];
    pub const COMPAT_NS_FLAGS: &[u32] = &[310, 120];
    /// `perf_event_open` ("common": x32 shares it).
    pub const NATIVE_PERF: &[u32] = &[298, 0x4000_0000 | 298];
    pub const COMPAT_PERF: &[u32] = &[336];
}

#[cfg(target_arch = "aarch64")]
mod abi {
    pub const NATIVE_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
    pub const NATIVE_IOCTL: &[u32] = &[29];
    pub const X32_IOCTL: &[u32] = &[];
    pub const COMPAT_ARCH: u32 = 0x4000_0028; // AUDIT_ARCH_ARM
    pub const COMPAT_IOCTL: &[u32] = &[54];
    pub const NATIVE_BPF: &[u32] = &[280];
    pub const X32_BPF: &[u32] = &[];
    pub const COMPAT_BPF: &[u32] = &[386];
    pub const NATIVE_KEYS: &[u32] = &[217, 218, 219];
    pub const COMPAT_KEYS: &[u32] = &[309, 310, 311];
    pub const NATIVE_CLONE3: &[u32] = &[435];
    pub const COMPAT_CLONE3: &[u32] = &[435];
    pub const NATIVE_NS_FLAGS: &[u32] = &[97, 220];
    pub const COMPAT_NS_FLAGS: &[u32] = &[337, 120];
    pub const NATIVE_PERF: &[u32] = &[241];
    pub const COMPAT_PERF: &[u32] = &[364];
}

/// Whether a notified call (its `arch` and `nr`) is `perf_event_open`, which the filter
/// notifies with the gateway only to explain what a token never grants.
pub fn is_perf_event_open(arch: u32, nr: i32) -> bool {
    let numbers = match arch {
        abi::NATIVE_ARCH => abi::NATIVE_PERF,
        abi::COMPAT_ARCH => abi::COMPAT_PERF,
        _ => return false,
    };
    numbers.contains(&(nr as u32))
}

/// The `bpf()` commands the gateway sees ([`crate::sandbox::gateway`]): those that take a token.
pub const NOTIFIED_BPF_COMMANDS: [u32; 3] = [0, 5, 18];

/// The command's seccomp filter, for the native ABI, x32 and the 32-bit compat ABI: `ioctl` with
/// a [`DENIED_IOCTLS`] request fails with EPERM; so do `add_key`, `request_key` and `keyctl`
/// (the kernel's keyrings are not namespaced: the command would possess the caller's session
/// keyring, read its keys and plant keys that outlive the sandbox), and `unshare`/`clone` with
/// [`DENIED_NAMESPACE_FLAGS`]; `clone3` gets ENOSYS; with `gateway`, `bpf()` with a command
/// in [`NOTIFIED_BPF_COMMANDS`] (`BPF_MAP_CREATE`, `BPF_PROG_LOAD`, `BPF_BTF_LOAD`) waits for
/// the gateway's answer (`SECCOMP_RET_USER_NOTIF`) on the same ABIs, and so does every
/// `perf_event_open` (the gateway only looks at it, to explain the tracepoint, kprobe and
/// uprobe events no token grants, and lets it run as it is); everything else is allowed.
///
/// The ioctl request and the bpf command are compared on their low 32 bits only, as the kernel
/// reads them (`unsigned int cmd` in `tty_ioctl`, `int cmd` in `sys_bpf`): a filter comparing
/// 64 bits would let `TIOCSTI | 1 << 32` through.
pub fn command_filter(gateway: bool) -> Vec<seccomp::Instruction> {
    let mut p = Program::new();
    let native = p.label();
    let not_native = p.label();
    let compat = p.label();
    let foreign = p.label();
    let check_request = p.label();
    let deny = p.label();
    let check_bpf = p.label();
    let notify = p.label();
    let check_ns_flags = p.label();
    let no_such_call = p.label();
    // Numbers only the gateway's filter sends anywhere: without it they are allowed.
    let bpf_numbers = |numbers: &'static [u32]| if gateway { numbers } else { &[] };
    // Each ABI's syscall numbers and where they go.
    let dispatch = |p: &mut Program, table: &[(&[u32], Label)]| {
        for (numbers, target) in table {
            for nr in *numbers {
                let next = p.label();
                p.jump_eq(*nr, *target, next);
                p.bind(next);
            }
        }
        p.ret(RET_ALLOW);
    };

    p.load(seccomp::DATA_ARCH);
    p.jump_eq(abi::NATIVE_ARCH, native, not_native);

    p.bind(native);
    p.load(seccomp::DATA_NR);
    dispatch(
        &mut p,
        &[
            (abi::NATIVE_IOCTL, check_request),
            (abi::X32_IOCTL, check_request),
            (bpf_numbers(abi::NATIVE_BPF), check_bpf),
            (bpf_numbers(abi::X32_BPF), check_bpf),
            (bpf_numbers(abi::NATIVE_PERF), notify),
            (abi::NATIVE_KEYS, deny),
            (abi::NATIVE_CLONE3, no_such_call),
            (abi::NATIVE_NS_FLAGS, check_ns_flags),
        ],
    );

    p.bind(not_native);
    p.jump_eq(abi::COMPAT_ARCH, compat, foreign);
    p.bind(compat);
    p.load(seccomp::DATA_NR);
    dispatch(
        &mut p,
        &[
            (abi::COMPAT_IOCTL, check_request),
            (bpf_numbers(abi::COMPAT_BPF), check_bpf),
            (bpf_numbers(abi::COMPAT_PERF), notify),
            (abi::COMPAT_KEYS, deny),
            (abi::COMPAT_CLONE3, no_such_call),
            (abi::COMPAT_NS_FLAGS, check_ns_flags),
        ],
    );
    // No other ABI exists on these kernels; a syscall claiming one is not ours to allow.
    p.bind(foreign);
    p.ret(RET_KILL_PROCESS);

    p.bind(check_request);
    p.load(seccomp::data_arg_low(1));
    for (request, _) in DENIED_IOCTLS {
        let next = p.label();
        p.jump_eq(request, deny, next);
        p.bind(next);
    }
    p.ret(RET_ALLOW);
    p.bind(deny);
    p.ret(ret_errno(Errno::EPERM));

    p.bind(check_bpf);
    if gateway {
        p.load(seccomp::data_arg_low(0));
        for cmd in NOTIFIED_BPF_COMMANDS {
            let next = p.label();
            p.jump_eq(cmd, notify, next);
            p.bind(next);
        }
    }
    p.ret(RET_ALLOW);
    p.bind(notify);
    p.ret(seccomp::RET_USER_NOTIF);

    // unshare() and clone() with CLONE_NEWCGROUP: see [`DENIED_NAMESPACE_FLAGS`].
    p.bind(check_ns_flags);
    p.load(seccomp::data_arg_low(0));
    let allowed = p.label();
    let refused = p.label();
    p.jump_set(DENIED_NAMESPACE_FLAGS, refused, allowed);
    p.bind(allowed);
    p.ret(RET_ALLOW);
    p.bind(refused);
    p.ret(ret_errno(Errno::EPERM));
    // clone3 passes its flags in memory a filter cannot read: the caller gets ENOSYS and its C
    // library falls back to clone(), whose flags the filter sees (as in Docker's profile).
    p.bind(no_such_call);
    p.ret(ret_errno(Errno::ENOSYS));
    p.finish()
}

/// Namespace flags the command may not use: `CLONE_NEWCGROUP`. A cgroup namespace of its own
/// (made in a nested user namespace) is rooted at the sandbox's cgroup, which is the host's
/// root cgroup unless limits gave it one, and lets it mount that cgroup2 and attach cgroup BPF
/// programs to every host process, around the covers of [`hide_host_cgroups`] (found by a red
/// team on 6.18). Without one, mounting cgroup2 needs CAP_SYS_ADMIN in the user namespace that
/// owns the host's cgroup namespace, the initial one.
pub const DENIED_NAMESPACE_FLAGS: u32 = libc::CLONE_NEWCGROUP as u32;

/// In the sandbox process, before it starts the command (which inherits the filter): no new
/// privileges from exec, then the filter.
pub fn install_command_filter() -> Result<(), ConfineError> {
    seccomp::set_no_new_privs().map_err(ConfineError::Sys)?;
    seccomp::install_filter(&command_filter(false)).map_err(ConfineError::Sys)
}

/// [`install_command_filter`] with the gateway's notifications: returns the listener. From
/// this call on, a `bpf()` call of a notified command made by this process itself would wait
/// for an answer only this process can give: the caller (PID 1) must make none.
pub fn install_command_filter_with_gateway() -> Result<std::os::fd::OwnedFd, ConfineError> {
    seccomp::set_no_new_privs().map_err(ConfineError::Sys)?;
    seccomp::install_filter_with_listener(&command_filter(true)).map_err(|source| {
        match source.errno {
            Errno::EINVAL => ConfineError::GatewayUnsupported(source),
            Errno::EBUSY => ConfineError::GatewayListenerTaken(source),
            _ => ConfineError::Sys(source),
        }
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error(
        "unknown capability {0:?}: use a name from capabilities(7), with or without CAP_ (e.g. perfmon, sys_admin, net_admin)"
    )]
    UnknownCapability(String),
    #[error("--cap-add and --cap-drop both name {0}: keep one")]
    AddedAndDropped(CapabilityName),
    #[error("--cap-add all is not offered: name each capability the command must keep")]
    AddAll,
    #[error("dropping the command's capabilities: {call} failed: {error}")]
    Capabilities { call: &'static str, error: String },
    #[error("confining the command: {0}")]
    Sys(SysError),
    #[error(
        "the bpf() gateway cannot start: {0}: this kernel does not know SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19)"
    )]
    GatewayUnsupported(SysError),
    #[error(
        "the bpf() gateway cannot start: {0}: a seccomp filter with a listener already confines the supervisor (a container runtime's notifier), and a process's filters can have only one"
    )]
    GatewayListenerTaken(SysError),
    #[error("reading the sandbox's mount table: {0}")]
    MountTable(std::io::Error),
    #[error("hiding the host's cgroup2 mount at {}: {source}", path.display())]
    HideCgroups {
        path: std::path::PathBuf,
        source: SysError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::seccomp::{SeccompData, evaluate};

    fn names(choice: &CapabilityChoice) -> Vec<String> {
        choice.dropped_names()
    }

    #[test]
    fn perfmon_and_sys_admin_are_dropped_by_default() {
        let choice = CapabilityChoice::default();
        assert_eq!(names(&choice), ["sys_admin", "perfmon"]);
        assert!(!choice.keeps_perfmon_rights());
        assert!(choice.keeps(Capability::CAP_BPF));
        assert!(choice.keeps(Capability::CAP_NET_ADMIN));
        assert!(choice.warnings().is_empty());
    }

    #[test]
    fn cap_add_restores_with_a_warning_naming_kernel_memory() {
        let choice = CapabilityChoice::from_flags(&["PerfMon".into()], &[]).unwrap();
        assert_eq!(names(&choice), ["sys_admin"]);
        assert!(choice.keeps_perfmon_rights());
        let warnings = choice.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("kernel memory"), "{warnings:?}");
        // CAP_SYS_ADMIN alone passes the token's CAP_PERFMON check too.
        let choice = CapabilityChoice::from_flags(&["CAP_SYS_ADMIN".into()], &[]).unwrap();
        assert!(choice.keeps_perfmon_rights());
        assert!(choice.warnings()[0].contains("kernel memory"));
    }

    #[test]
    fn cap_drop_adds_to_the_default_and_all_drops_everything_not_added() {
        let choice = CapabilityChoice::from_flags(&[], &["net_raw".into()]).unwrap();
        assert_eq!(names(&choice), ["net_raw", "sys_admin", "perfmon"]);
        let choice =
            CapabilityChoice::from_flags(&["bpf".into(), "net_admin".into()], &["ALL".into()])
                .unwrap();
        assert!(choice.keeps(Capability::CAP_BPF));
        assert!(choice.keeps(Capability::CAP_NET_ADMIN));
        assert!(!choice.keeps(Capability::CAP_SYS_PTRACE));
        assert!(!choice.keeps_perfmon_rights());
    }

    #[test]
    fn bad_capability_flags_are_refused() {
        assert!(matches!(
            CapabilityChoice::from_flags(&["perfmonn".into()], &[]),
            Err(ConfineError::UnknownCapability(_))
        ));
        assert!(matches!(
            CapabilityChoice::from_flags(&["bpf".into()], &["cap_bpf".into()]),
            Err(ConfineError::AddedAndDropped(_))
        ));
        assert!(matches!(
            CapabilityChoice::from_flags(&["all".into()], &[]),
            Err(ConfineError::AddAll)
        ));
    }

    /// The ioctl rules hold with and without the gateway's rule.
    fn decide(arch: u32, nr: u32, request: u64) -> u32 {
        let args = [0, request, 0, 0, 0, 0];
        let without = decide_with(false, arch, nr, args);
        assert_eq!(without, decide_with(true, arch, nr, args), "nr {nr}");
        without
    }

    fn decide_with(gateway: bool, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        evaluate(
            &command_filter(gateway),
            &SeccompData {
                nr: nr as i32,
                arch,
                args,
                ..SeccompData::default()
            },
        )
    }

    #[test]
    fn tiocsti_and_tioclinux_are_refused_on_every_abi() {
        let eperm = ret_errno(Errno::EPERM);
        for (request, name) in DENIED_IOCTLS {
            let request = u64::from(request);
            for nr in abi::NATIVE_IOCTL.iter().chain(abi::X32_IOCTL) {
                assert_eq!(
                    decide(abi::NATIVE_ARCH, *nr, request),
                    eperm,
                    "{name} nr {nr}"
                );
                // The kernel reads the request as a 32-bit int: high bits must not hide it.
                assert_eq!(
                    decide(abi::NATIVE_ARCH, *nr, request | 1 << 32),
                    eperm,
                    "{name} with high bits"
                );
            }
            for nr in abi::COMPAT_IOCTL {
                assert_eq!(
                    decide(abi::COMPAT_ARCH, *nr, request),
                    eperm,
                    "{name} compat"
                );
            }
        }
    }

    #[test]
    fn keyrings_new_cgroup_namespaces_and_clone3_are_refused_on_every_abi() {
        let eperm = ret_errno(Errno::EPERM);
        let enosys = ret_errno(Errno::ENOSYS);
        let run = |arch, nr: u32, arg0: u64| {
            evaluate(
                &command_filter(false),
                &SeccompData {
                    nr: nr as i32,
                    arch,
                    args: [arg0, 0, 0, 0, 0, 0],
                    ..SeccompData::default()
                },
            )
        };
        for (arch, keys, clone3, ns) in [
            (
                abi::NATIVE_ARCH,
                abi::NATIVE_KEYS,
                abi::NATIVE_CLONE3,
                abi::NATIVE_NS_FLAGS,
            ),
            (
                abi::COMPAT_ARCH,
                abi::COMPAT_KEYS,
                abi::COMPAT_CLONE3,
                abi::COMPAT_NS_FLAGS,
            ),
        ] {
            for nr in keys {
                assert_eq!(run(arch, *nr, 0), eperm, "keyring call {nr}");
            }
            for nr in clone3 {
                assert_eq!(run(arch, *nr, 0), enosys, "clone3 {nr}");
            }
            let newcgroup = libc::CLONE_NEWCGROUP as u64;
            let others = (libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::SIGCHLD) as u64;
            for nr in ns {
                assert_eq!(
                    run(arch, *nr, newcgroup),
                    eperm,
                    "{nr} with CLONE_NEWCGROUP"
                );
                assert_eq!(
                    run(arch, *nr, others | newcgroup),
                    eperm,
                    "{nr} with it among others"
                );
                // The kernel reads the flags as an int: high bits must not hide the bit.
                assert_eq!(run(arch, *nr, newcgroup | 1 << 40), eperm);
                assert_eq!(run(arch, *nr, others), RET_ALLOW, "{nr} without it");
            }
        }
    }

    #[test]
    fn other_ioctls_and_syscalls_are_allowed() {
        let nr = abi::NATIVE_IOCTL[0];
        assert_eq!(decide(abi::NATIVE_ARCH, nr, libc::TCGETS as u64), RET_ALLOW);
        assert_eq!(
            decide(abi::NATIVE_ARCH, nr, libc::TIOCSPGRP as u64),
            RET_ALLOW
        );
        // TIOCSTI's number as the request of another syscall is not an ioctl.
        assert_eq!(
            decide(abi::NATIVE_ARCH, 1, u64::from(DENIED_IOCTLS[0].0)),
            RET_ALLOW
        );
        assert_eq!(decide(abi::COMPAT_ARCH, 4, 0), RET_ALLOW);
        assert_eq!(decide(0x1234, 0, 0), RET_KILL_PROCESS);
    }

    #[test]
    fn token_taking_bpf_commands_and_perf_event_open_go_to_the_gateway_on_every_abi() {
        let notify = seccomp::RET_USER_NOTIF;
        let abis = [
            (abi::NATIVE_ARCH, abi::NATIVE_BPF),
            (abi::NATIVE_ARCH, abi::X32_BPF),
            (abi::COMPAT_ARCH, abi::COMPAT_BPF),
        ];
        for (arch, numbers) in abis {
            for &nr in numbers {
                for cmd in NOTIFIED_BPF_COMMANDS {
                    let cmd = u64::from(cmd);
                    assert_eq!(decide_with(true, arch, nr, [cmd, 0, 0, 0, 0, 0]), notify);
                    // `int cmd`: high bits must not hide the command.
                    assert_eq!(
                        decide_with(true, arch, nr, [cmd | 7 << 32, 0, 0, 0, 0, 0]),
                        notify
                    );
                    assert_eq!(
                        decide_with(false, arch, nr, [cmd, 0, 0, 0, 0, 0]),
                        RET_ALLOW,
                        "without the gateway bpf() is not stopped"
                    );
                }
                // Lookups, attach, BPF_TOKEN_CREATE (the gateway's own token): never stopped.
                for cmd in [1u64, 2, 8, 28, 36] {
                    assert_eq!(
                        decide_with(true, arch, nr, [cmd, 0, 0, 0, 0, 0]),
                        RET_ALLOW,
                        "cmd {cmd}"
                    );
                }
            }
        }
        // perf_event_open: every call goes to the gateway, whatever its arguments; nothing
        // without it; the ABIs' numbers are not mixed up.
        for (arch, numbers) in [
            (abi::NATIVE_ARCH, abi::NATIVE_PERF),
            (abi::COMPAT_ARCH, abi::COMPAT_PERF),
        ] {
            for &nr in numbers {
                for args in [[0; 6], [0x7fff_0000, 0, u64::MAX, u64::MAX, 8, 0]] {
                    assert_eq!(decide_with(true, arch, nr, args), notify, "nr {nr}");
                    assert_eq!(decide_with(false, arch, nr, args), RET_ALLOW, "nr {nr}");
                }
                assert!(is_perf_event_open(arch, nr as i32));
            }
        }
        assert!(!is_perf_event_open(
            abi::NATIVE_ARCH,
            abi::NATIVE_BPF[0] as i32
        ));
        assert!(!is_perf_event_open(
            abi::COMPAT_ARCH,
            abi::NATIVE_PERF[0] as i32
        ));
        assert!(!is_perf_event_open(0x1234, abi::NATIVE_PERF[0] as i32));
        assert_eq!(
            decide_with(true, abi::COMPAT_ARCH, abi::NATIVE_PERF[0], [0; 6]),
            RET_ALLOW
        );
        // The bpf number of the other ABI is another syscall there.
        assert_eq!(
            decide_with(true, abi::COMPAT_ARCH, abi::NATIVE_BPF[0], [0; 6]),
            RET_ALLOW
        );
    }
}
