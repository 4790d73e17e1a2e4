//! What a delegation lets the sandbox see or do beyond itself, and the check that refuses, before
//! anything is forked, program types that cannot load without CAP_PERFMON.
//!
//! The kernel's rule (`bpf_token_capable` and `bpf_ns_capable` in `kernel/bpf/token.c`): a
//! capability check made through a token passes when the caller has that capability **or
//! CAP_SYS_ADMIN** in the token's user namespace. The sandbox's root has every capability there
//! unless the command drops them; the launcher keeps CAP_BPF and CAP_NET_ADMIN and drops
//! CAP_PERFMON and CAP_SYS_ADMIN unless `--cap-add perfmon` / `--cap-add sys_admin` asks for them
//! ([`CapsKept`]).
//!
//! Each program type, map type, attach type and command has a [`RiskClass`] (what it reaches
//! outside the sandbox), the capabilities the kernel checks for it, and a short statement of
//! what it grants. Every statement comes from the kernel sources (Linux 6.18; the function is
//! named next to each table) or was measured on this project's test machine (the facts file,
//! `shared/BPF-TOKEN-FACTS.md`). Two measurements made for this module:
//! - a command run with only `cgroup_sysctl` delegated, with CAP_PERFMON and CAP_SYS_ADMIN
//!   dropped, opened a cgroup v2 mount it could see, attached a program to the host's root
//!   cgroup (`cgroup_bpf_link_attach` checks no capability) and counted the sysctl reads of host
//!   processes: cgroup program types reach every host process in a cgroup the sandbox can open;
//! - the same with CAP_SYS_ADMIN kept mounted its own cgroup v2 view (a new cgroup namespace is
//!   rooted at the command's own cgroup, the host's root on a machine without cgroup v2 in use)
//!   and did the same.

use std::fmt;

use serde::Serialize;

use super::{DelegateKind, Delegation, EnumNames, Mask, builtin};

/// What delegating an item lets the sandbox reach outside itself. Ordered from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RiskClass {
    /// Nothing: the kernel never consults the token for it, or never loads it.
    None,
    /// Effects confined to the sandbox's own objects: its interfaces, sockets, maps, programs.
    SandboxLocal,
    /// Sees host processes or kernel data, changes nothing.
    HostObservation,
    /// Acts on host processes or the whole kernel.
    HostWide,
    /// A value this build has no entry for (a newer kernel's): assumed host-wide.
    Unknown,
}

impl RiskClass {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::SandboxLocal => "sandbox-local",
            Self::HostObservation => "host-observation",
            Self::HostWide => "host-wide",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for RiskClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A capability the kernel checks (through the token) for an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Capability {
    #[serde(rename = "CAP_BPF")]
    Bpf,
    #[serde(rename = "CAP_NET_ADMIN")]
    NetAdmin,
    #[serde(rename = "CAP_PERFMON")]
    Perfmon,
    #[serde(rename = "CAP_SYS_ADMIN")]
    SysAdmin,
}

impl Capability {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Bpf => "CAP_BPF",
            Self::NetAdmin => "CAP_NET_ADMIN",
            Self::Perfmon => "CAP_PERFMON",
            Self::SysAdmin => "CAP_SYS_ADMIN",
        }
    }

    /// The flag that keeps it for the command, for the two it loses by default.
    pub const fn opt_in(self) -> Option<&'static str> {
        match self {
            Self::Perfmon => Some(PERFMON_FLAG),
            Self::SysAdmin => Some(SYS_ADMIN_FLAG),
            Self::Bpf | Self::NetAdmin => None,
        }
    }
}

/// The flag that keeps CAP_PERFMON for the command.
pub const PERFMON_FLAG: &str = "--cap-add perfmon";
/// The flag that keeps CAP_SYS_ADMIN for the command.
pub const SYS_ADMIN_FLAG: &str = "--cap-add sys_admin";

/// Which of the capabilities the command loses by default it keeps. CAP_BPF and CAP_NET_ADMIN
/// are always kept (the demo and the token need them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, Serialize)]
pub struct CapsKept {
    pub perfmon: bool,
    pub sys_admin: bool,
}

impl CapsKept {
    /// The default: both dropped.
    pub const DROPPED: Self = Self {
        perfmon: false,
        sys_admin: false,
    };

    /// Whether a check through the token passes (`bpf_ns_capable` in `kernel/bpf/token.c`: the
    /// capability itself, or CAP_SYS_ADMIN for any other).
    pub const fn has(self, cap: Capability) -> bool {
        match cap {
            Capability::Bpf | Capability::NetAdmin => true,
            Capability::Perfmon => self.perfmon || self.sys_admin,
            Capability::SysAdmin => self.sys_admin,
        }
    }
}

/// The whole delegation in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Nothing usable reaches beyond the sandbox.
    Confined,
    /// Something usable sees host processes or kernel data.
    HostObservation,
    /// Something usable acts on host processes or the whole kernel.
    HostWide,
    /// CAP_PERFMON (or CAP_SYS_ADMIN) is kept and a program type loads: every program can read
    /// kernel memory.
    KernelMemoryRead,
}

impl Verdict {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Confined => "confined",
            Self::HostObservation => "host-observation",
            Self::HostWide => "host-wide",
            Self::KernelMemoryRead => "kernel-memory-read",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What keeping CAP_PERFMON gives every delegated program: the verifier asks
/// `bpf_token_capable(token, CAP_PERFMON)` for the helpers of `bpf_base_func_proto`
/// (`kernel/bpf/helpers.c`) and for `bpf_allow_ptr_leaks`, `bpf_allow_uninit_stack`,
/// `bpf_bypass_spec_v1/v4` (`include/linux/bpf.h`), whatever the program type.
pub const PERFMON_GRANTS: &str = "every delegated program type may call bpf_probe_read_kernel, bpf_get_current_task and bpf_trace_printk, leak kernel pointers and runs without Spectre mitigations (an XDP program read /etc/shadow from the page cache this way)";

/// Helpers the verifier refuses in every program type unless CAP_PERFMON is kept: the
/// CAP_PERFMON group of `bpf_base_func_proto` (`kernel/bpf/helpers.c`) that every kernel with
/// tokens (6.9 on) has; 6.16 added more to it (`bpf_send_signal`, `bpf_get_current_comm`, ...).
pub const PERFMON_HELPERS: &[&str] = &[
    "bpf_trace_printk (bpf_printk)",
    "bpf_trace_vprintk",
    "bpf_get_current_task",
    "bpf_get_current_task_btf",
    "bpf_probe_read_kernel",
    "bpf_probe_read_kernel_str",
    "bpf_probe_read_user",
    "bpf_probe_read_user_str",
    "bpf_snprintf",
    "bpf_snprintf_btf",
    "bpf_task_pt_regs",
];

/// The program types `bpf_prog_load` refuses without CAP_PERFMON: exactly
/// `is_perfmon_prog_type` in `kernel/bpf/syscall.c`.
pub const PERFMON_PROG_TYPES: &[&str] = &[
    "kprobe",
    "tracepoint",
    "perf_event",
    "raw_tracepoint",
    "raw_tracepoint_writable",
    "tracing",
    "lsm",
    "struct_ops",
    "ext",
];

use Capability::{Bpf, NetAdmin, Perfmon, SysAdmin};
use RiskClass::{HostObservation, HostWide, None as Nothing, SandboxLocal};

/// One command, map type or program type.
struct Entry {
    name: &'static str,
    requires: &'static [Capability],
    class: RiskClass,
    grants: &'static str,
}

const fn entry(
    name: &'static str,
    requires: &'static [Capability],
    class: RiskClass,
    grants: &'static str,
) -> Entry {
    Entry {
        name,
        requires,
        class,
        grants,
    }
}

/// Commands. Only four consult the token (`bpf_token_allow_cmd` is called by `map_create`,
/// `bpf_prog_load`, `bpf_btf_load` and `bpf_btf_get_fd_by_id` in `kernel/bpf/syscall.c`);
/// every other command ignores it, so delegating one changes nothing.
const CMDS: &[Entry] = &[
    // The map type decides what is required (see MAPS).
    entry(
        "map_create",
        &[],
        SandboxLocal,
        "creates maps of the delegated types, the sandbox's own",
    ),
    // The program type decides what is required (see PROGS).
    entry(
        "prog_load",
        &[],
        SandboxLocal,
        "loads programs of the delegated types; on Linux 6.17 and later any of them can read kernel memory through the kfunc bpf_rdonly_cast(addr, 0) with CAP_BPF alone (token_userns_demo warns)",
    ),
    // bpf_btf_load: bpf_token_capable(token, CAP_BPF).
    entry(
        "btf_load",
        &[Bpf],
        SandboxLocal,
        "loads type information for its own objects",
    ),
    // bpf_btf_get_fd_by_id: bpf_token_capable(token, CAP_SYS_ADMIN), then btf_get_fd_by_id(id)
    // with no check on whose object the BTF belongs to.
    entry(
        "btf_get_fd_by_id",
        &[SysAdmin],
        HostObservation,
        "opens by id the BTF of any object loaded on the host: the kernel's and modules' types, other programs' and maps' types and function names",
    ),
];

/// The commands that take no token (`__sys_bpf` in `kernel/bpf/syscall.c` dispatches them to
/// functions that never call `bpf_token_allow_cmd`).
const CMDS_WITHOUT_TOKEN: &[&str] = &[
    "map_lookup_elem",
    "map_update_elem",
    "map_delete_elem",
    "map_get_next_key",
    "obj_pin",
    "obj_get",
    "prog_attach",
    "prog_detach",
    "prog_test_run",
    "prog_get_next_id",
    "map_get_next_id",
    "prog_get_fd_by_id",
    "map_get_fd_by_id",
    "obj_get_info_by_fd",
    "prog_query",
    "raw_tracepoint_open",
    "task_fd_query",
    "map_lookup_and_delete_elem",
    "map_freeze",
    "btf_get_next_id",
    "map_lookup_batch",
    "map_lookup_and_delete_batch",
    "map_update_batch",
    "map_delete_batch",
    "link_create",
    "link_update",
    "link_get_fd_by_id",
    "link_get_next_id",
    "enable_stats",
    "iter_create",
    "link_detach",
    "prog_bind_map",
    "token_create",
    "prog_stream_read_by_fd",
];

const NO_TOKEN: &str = "takes no token: delegating it changes nothing";

/// Map types, with the capability `map_create` (`kernel/bpf/syscall.c`) checks through the
/// token: none for the "unprivileged" group, CAP_BPF, or CAP_NET_ADMIN (sockmap, sockhash,
/// devmap, devmap_hash, xskmap). A map is the sandbox's own memory; what reaches further is the
/// program that uses it.
const MAPS: &[Entry] = &[
    // bpf_map_types[0] is NULL: map_create returns EINVAL.
    entry(
        "unspec",
        &[],
        Nothing,
        "no such map type: map_create refuses it",
    ),
    entry("hash", &[], SandboxLocal, "memory of its own"),
    entry("array", &[], SandboxLocal, "memory of its own"),
    entry(
        "prog_array",
        &[],
        SandboxLocal,
        "tail calls between its own programs",
    ),
    entry(
        "perf_event_array",
        &[],
        SandboxLocal,
        "output to perf events it opens",
    ),
    entry("percpu_hash", &[], SandboxLocal, "memory of its own"),
    entry("percpu_array", &[], SandboxLocal, "memory of its own"),
    entry(
        "stack_trace",
        &[Bpf],
        SandboxLocal,
        "stack traces its programs record",
    ),
    entry(
        "cgroup_array",
        &[],
        SandboxLocal,
        "references to cgroups it opens",
    ),
    entry("lru_hash", &[Bpf], SandboxLocal, "memory of its own"),
    entry("lru_percpu_hash", &[Bpf], SandboxLocal, "memory of its own"),
    entry("lpm_trie", &[Bpf], SandboxLocal, "memory of its own"),
    entry("array_of_maps", &[], SandboxLocal, "its own maps"),
    entry("hash_of_maps", &[], SandboxLocal, "its own maps"),
    // dev_map_update_elem looks interfaces up in the caller's network namespace.
    entry(
        "devmap",
        &[NetAdmin],
        SandboxLocal,
        "XDP redirection to interfaces of its network namespace",
    ),
    entry(
        "sockmap",
        &[NetAdmin],
        SandboxLocal,
        "sockets it adds, for sk_skb and sk_msg programs",
    ),
    entry(
        "cpumap",
        &[Bpf],
        SandboxLocal,
        "XDP redirection of its packets to kernel threads on host CPUs",
    ),
    entry(
        "xskmap",
        &[NetAdmin],
        SandboxLocal,
        "AF_XDP sockets it creates",
    ),
    entry(
        "sockhash",
        &[NetAdmin],
        SandboxLocal,
        "sockets it adds, for sk_skb and sk_msg programs",
    ),
    entry(
        "cgroup_storage",
        &[],
        SandboxLocal,
        "storage of its cgroup programs",
    ),
    entry(
        "reuseport_sockarray",
        &[Bpf],
        SandboxLocal,
        "its own SO_REUSEPORT sockets",
    ),
    entry(
        "percpu_cgroup_storage",
        &[],
        SandboxLocal,
        "storage of its cgroup programs",
    ),
    entry("queue", &[Bpf], SandboxLocal, "memory of its own"),
    entry("stack", &[Bpf], SandboxLocal, "memory of its own"),
    entry("sk_storage", &[Bpf], SandboxLocal, "per-socket storage"),
    entry(
        "devmap_hash",
        &[NetAdmin],
        SandboxLocal,
        "XDP redirection to interfaces of its network namespace",
    ),
    // Registering a struct_ops map needs struct_ops programs, which need CAP_PERFMON.
    entry(
        "struct_ops",
        &[Bpf],
        SandboxLocal,
        "a table of struct_ops programs (those need CAP_PERFMON)",
    ),
    entry(
        "ringbuf",
        &[],
        SandboxLocal,
        "a ring buffer shared with its user space",
    ),
    entry("inode_storage", &[Bpf], SandboxLocal, "per-inode storage"),
    entry("task_storage", &[Bpf], SandboxLocal, "per-task storage"),
    entry("bloom_filter", &[Bpf], SandboxLocal, "memory of its own"),
    entry(
        "user_ringbuf",
        &[],
        SandboxLocal,
        "a ring buffer its user space fills",
    ),
    entry("cgrp_storage", &[Bpf], SandboxLocal, "per-cgroup storage"),
    entry(
        "arena",
        &[Bpf],
        SandboxLocal,
        "memory shared by its programs and its user space",
    ),
];

/// The reach of every program type attached to a cgroup: `cgroup_bpf_link_attach` and
/// `cgroup_bpf_prog_attach` (`kernel/bpf/cgroup.c`) take any cgroup v2 directory fd and check no
/// capability, and the sandbox sees the host's mount table. Measured here with `cgroup_sysctl`.
macro_rules! cgroup_reach {
    () => {
        "every process in a cgroup v2 it can open, the host's root cgroup included"
    };
}
pub const CGROUP_REACH: &str = cgroup_reach!();

/// Why the cgroup program types stay inside the sandbox when the command keeps no
/// CAP_SYS_ADMIN: the sandbox covers its copies of the host's cgroup2 mounts with empty
/// read-only tmpfs before the command starts (`confine::hide_host_cgroups`), and without
/// CAP_SYS_ADMIN the command can neither unmount a cover nor mount a cgroup2 of its own.
pub const COVERED_CGROUPS: &str = "but the sandbox's copies of the host's cgroup2 mounts are covered, so it has no host cgroup to attach to unless it keeps CAP_SYS_ADMIN (--cap-add sys_admin)";

fn reaches_host_cgroups(entry: &Entry) -> bool {
    entry.grants.contains(CGROUP_REACH)
}

/// Which expected attach types a program type loads with: the token checks that attach type
/// too (`bpf_token_allow_prog_type` in `kernel/bpf/token.c`), after
/// `bpf_prog_load_fixup_attach_type` and against `bpf_prog_load_check_attach`
/// (`kernel/bpf/syscall.c`). `Any` is that function's default case; the verifier may refuse
/// some later, which only makes this an over-estimate of what loads.
#[derive(Debug, Clone, Copy)]
enum LoadsWith {
    Never,
    Any,
    Only(&'static [&'static str]),
}

struct ProgEntry {
    entry: Entry,
    loads_with: LoadsWith,
}

const fn prog(
    name: &'static str,
    requires: &'static [Capability],
    loads_with: LoadsWith,
    class: RiskClass,
    grants: &'static str,
) -> ProgEntry {
    ProgEntry {
        entry: entry(name, requires, class, grants),
        loads_with,
    }
}

const CGROUP_SOCK_ADDR_ATTACHS: &[&str] = &[
    "cgroup_inet4_bind",
    "cgroup_inet6_bind",
    "cgroup_inet4_connect",
    "cgroup_inet6_connect",
    "cgroup_unix_connect",
    "cgroup_inet4_getpeername",
    "cgroup_inet6_getpeername",
    "cgroup_unix_getpeername",
    "cgroup_inet4_getsockname",
    "cgroup_inet6_getsockname",
    "cgroup_unix_getsockname",
    "cgroup_udp4_sendmsg",
    "cgroup_udp6_sendmsg",
    "cgroup_unix_sendmsg",
    "cgroup_udp4_recvmsg",
    "cgroup_udp6_recvmsg",
    "cgroup_unix_recvmsg",
];

/// Program types. `requires` is what `bpf_prog_load` (`kernel/bpf/syscall.c`) checks through the
/// token: CAP_BPF for all but `socket_filter` and `cgroup_skb`; CAP_NET_ADMIN when
/// `is_net_admin_prog_type`; CAP_PERFMON when `is_perfmon_prog_type`.
const PROGS: &[ProgEntry] = &[
    // bpf_prog_types[0] is NULL: find_prog_type returns EINVAL.
    prog(
        "unspec",
        &[],
        LoadsWith::Never,
        Nothing,
        "no such program type: bpf_prog_load refuses it",
    ),
    prog(
        "socket_filter",
        &[],
        LoadsWith::Any,
        SandboxLocal,
        "filters packets of sockets it attaches it to",
    ),
    // Attachment through perf_event_open (CAP_PERFMON in the initial namespace: EACCES in the
    // sandbox) or kprobe_multi/uprobe_multi links; this kernel has no kprobes, uprobe_multi
    // links work with a token (facts file).
    prog(
        "kprobe",
        &[Bpf, Perfmon],
        LoadsWith::Any,
        HostWide,
        "kernel and user probes: uprobe_multi links work from the sandbox and run in host processes that execute the probed file",
    ),
    prog(
        "sched_cls",
        &[Bpf, NetAdmin],
        LoadsWith::Any,
        SandboxLocal,
        "tc, tcx and netkit programs on interfaces of its network namespace",
    ),
    prog(
        "sched_act",
        &[Bpf, NetAdmin],
        LoadsWith::Any,
        SandboxLocal,
        "tc actions in its network namespace",
    ),
    prog(
        "tracepoint",
        &[Bpf, Perfmon],
        LoadsWith::Any,
        HostObservation,
        "host tracepoint events; attaching goes through perf_event_open, which checks CAP_PERFMON in the initial user namespace (EACCES in the sandbox here)",
    ),
    prog(
        "xdp",
        &[Bpf, NetAdmin],
        LoadsWith::Any,
        SandboxLocal,
        "packets on interfaces of its network namespace",
    ),
    prog(
        "perf_event",
        &[Bpf, Perfmon],
        LoadsWith::Any,
        HostObservation,
        "perf event samples; attaching goes through perf_event_open, which checks CAP_PERFMON in the initial user namespace (EACCES in the sandbox here)",
    ),
    // Loads with no capability; bpf_prog_attach_check_attach_type asks CAP_NET_ADMIN (through
    // the token) to attach it.
    prog(
        "cgroup_skb",
        &[NetAdmin],
        LoadsWith::Only(&["cgroup_inet_ingress", "cgroup_inet_egress"]),
        HostWide,
        concat!("sees, counts and drops the packets of ", cgroup_reach!()),
    ),
    prog(
        "cgroup_sock",
        &[Bpf, NetAdmin],
        LoadsWith::Only(&[
            "cgroup_inet_sock_create",
            "cgroup_inet_sock_release",
            "cgroup_inet4_post_bind",
            "cgroup_inet6_post_bind",
        ]),
        HostWide,
        concat!(
            "allows or denies socket creation and bind of ",
            cgroup_reach!()
        ),
    ),
    prog(
        "lwt_in",
        &[Bpf, NetAdmin],
        LoadsWith::Any,
        SandboxLocal,
        "packets on routes of its network namespace",
    ),
    prog(
        "lwt_out",
        &[Bpf, NetAdmin],
        LoadsWith::Any,
        SandboxLocal,
        "packets on routes of its network namespace",
    ),
    prog(
        "lwt_xmit",
        &[Bpf, NetAdmin],
        LoadsWith::Any,
        SandboxLocal,
        "packets on routes of its network namespace",
    ),
    prog(
        "sock_ops",
        &[Bpf, NetAdmin],
        LoadsWith::Any,
        HostWide,
        concat!(
            "sets TCP options and callbacks of the sockets of ",
            cgroup_reach!()
        ),
    ),
    prog(
        "sk_skb",
        &[Bpf, NetAdmin],
        LoadsWith::Any,
        SandboxLocal,
        "stream data of sockets in its own sockmaps",
    ),
    prog(
        "cgroup_device",
        &[Bpf, NetAdmin],
        LoadsWith::Any,
        HostWide,
        concat!("allows or denies device access of ", cgroup_reach!()),
    ),
    prog(
        "sk_msg",
        &[Bpf, NetAdmin],
        LoadsWith::Any,
        SandboxLocal,
        "messages of sockets in its own sockmaps",
    ),
    // bpf_raw_tp_link_attach checks no capability (facts file: a raw_tp link needs nothing more).
    prog(
        "raw_tracepoint",
        &[Bpf, Perfmon],
        LoadsWith::Any,
        HostWide,
        "raw tracepoints of the whole kernel: attaching needs nothing more, it sees every host process, and bpf_send_signal from one killed a host root process",
    ),
    prog(
        "cgroup_sock_addr",
        &[Bpf, NetAdmin],
        LoadsWith::Only(CGROUP_SOCK_ADDR_ATTACHS),
        HostWide,
        concat!(
            "rewrites or denies the bind, connect and sendmsg addresses of ",
            cgroup_reach!()
        ),
    ),
    prog(
        "lwt_seg6local",
        &[Bpf, NetAdmin],
        LoadsWith::Any,
        SandboxLocal,
        "SRv6 routes of its network namespace",
    ),
    // lirc_prog_attach takes a /dev/lirc device fd.
    prog(
        "lirc_mode2",
        &[Bpf],
        LoadsWith::Any,
        HostWide,
        "decodes the infrared input of a /dev/lirc device it can open, a host device",
    ),
    prog(
        "sk_reuseport",
        &[Bpf],
        LoadsWith::Only(&["sk_reuseport_select", "sk_reuseport_select_or_migrate"]),
        SandboxLocal,
        "picks among its own SO_REUSEPORT sockets",
    ),
    // netns_bpf_link_create (kernel/bpf/net_namespace.c) takes a network namespace fd.
    prog(
        "flow_dissector",
        &[Bpf, NetAdmin],
        LoadsWith::Any,
        SandboxLocal,
        "packet dissection of a network namespace it has an fd of (its own)",
    ),
    prog(
        "cgroup_sysctl",
        &[Bpf, NetAdmin],
        LoadsWith::Any,
        HostWide,
        concat!(
            "reads, rewrites or denies sysctl access of ",
            cgroup_reach!()
        ),
    ),
    prog(
        "raw_tracepoint_writable",
        &[Bpf, Perfmon],
        LoadsWith::Any,
        HostWide,
        "raw tracepoints of the whole kernel, as raw_tracepoint, with write access to the tracepoint's buffer",
    ),
    prog(
        "cgroup_sockopt",
        &[Bpf, NetAdmin],
        LoadsWith::Only(&["cgroup_getsockopt", "cgroup_setsockopt"]),
        HostWide,
        concat!(
            "rewrites or denies getsockopt and setsockopt of ",
            cgroup_reach!()
        ),
    ),
    // Facts file: tp_btf and iterator links work with a token; fentry/fexit are refused here
    // even to host root.
    prog(
        "tracing",
        &[Bpf, Perfmon],
        LoadsWith::Any,
        HostWide,
        "tp_btf, iterators, fentry/fexit/fmod_ret: tp_btf and iterator links work from the sandbox and see every host task",
    ),
    // bpf_struct_ops_link_create registers the table for the whole kernel.
    prog(
        "struct_ops",
        &[Bpf, Perfmon],
        LoadsWith::Any,
        HostWide,
        "implements kernel callback tables registered for the whole kernel, such as a TCP congestion control",
    ),
    // Both lists of bpf_prog_load name it; bpf_prog_load_check_attach wants attach type 0.
    prog(
        "ext",
        &[Bpf, NetAdmin, Perfmon],
        LoadsWith::Only(&["cgroup_inet_ingress"]),
        SandboxLocal,
        "replaces functions of BPF programs it holds an fd of",
    ),
    prog(
        "lsm",
        &[Bpf, Perfmon],
        LoadsWith::Any,
        HostWide,
        "LSM hooks of the whole kernel or of a cgroup (refused here even to host root)",
    ),
    prog(
        "sk_lookup",
        &[Bpf],
        LoadsWith::Only(&["sk_lookup"]),
        SandboxLocal,
        "socket lookup of a network namespace it has an fd of (its own)",
    ),
    // syscall_prog_func_proto: bpf_sys_bpf only with CAP_PERFMON; it runs from BPF_PROG_RUN.
    prog(
        "syscall",
        &[Bpf],
        LoadsWith::Only(&["cgroup_inet_ingress"]),
        SandboxLocal,
        "runs only when it calls BPF_PROG_RUN, in its own context",
    ),
    prog(
        "netfilter",
        &[Bpf, NetAdmin],
        LoadsWith::Only(&["netfilter"]),
        SandboxLocal,
        "netfilter hooks of its network namespace",
    ),
];

/// Attach types: what each is for (`attach_type_to_prog_type` and
/// `bpf_prog_attach_check_attach_type` in `kernel/bpf/syscall.c`). At load an attach type is
/// only a label the token checks: what it lets through is the delegated program types that load
/// with it, so its class is theirs.
const ATTACHS: &[(&str, &str)] = &[
    (
        "cgroup_inet_ingress",
        "cgroup_skb ingress; also what programs loaded without an expected attach type are checked against",
    ),
    ("cgroup_inet_egress", "cgroup_skb egress"),
    ("cgroup_inet_sock_create", "cgroup_sock socket creation"),
    ("cgroup_sock_ops", "sock_ops on a cgroup"),
    ("sk_skb_stream_parser", "sk_skb on a sockmap"),
    ("sk_skb_stream_verdict", "sk_skb on a sockmap"),
    ("cgroup_device", "cgroup_device on a cgroup"),
    ("sk_msg_verdict", "sk_msg on a sockmap"),
    ("cgroup_inet4_bind", "cgroup_sock_addr bind"),
    ("cgroup_inet6_bind", "cgroup_sock_addr bind"),
    ("cgroup_inet4_connect", "cgroup_sock_addr connect"),
    ("cgroup_inet6_connect", "cgroup_sock_addr connect"),
    ("cgroup_inet4_post_bind", "cgroup_sock after bind"),
    ("cgroup_inet6_post_bind", "cgroup_sock after bind"),
    ("cgroup_udp4_sendmsg", "cgroup_sock_addr sendmsg"),
    ("cgroup_udp6_sendmsg", "cgroup_sock_addr sendmsg"),
    ("lirc_mode2", "lirc_mode2 on a /dev/lirc device"),
    ("flow_dissector", "flow_dissector on a network namespace"),
    ("cgroup_sysctl", "cgroup_sysctl on a cgroup"),
    ("cgroup_udp4_recvmsg", "cgroup_sock_addr recvmsg"),
    ("cgroup_udp6_recvmsg", "cgroup_sock_addr recvmsg"),
    ("cgroup_getsockopt", "cgroup_sockopt getsockopt"),
    ("cgroup_setsockopt", "cgroup_sockopt setsockopt"),
    ("trace_raw_tp", "tracing tp_btf: a raw tracepoint link"),
    ("trace_fentry", "tracing fentry on a kernel function"),
    ("trace_fexit", "tracing fexit on a kernel function"),
    (
        "modify_return",
        "tracing fmod_ret: changes a kernel function's return value",
    ),
    ("lsm_mac", "lsm on a kernel LSM hook"),
    ("trace_iter", "tracing iterator over kernel objects"),
    ("cgroup_inet4_getpeername", "cgroup_sock_addr getpeername"),
    ("cgroup_inet6_getpeername", "cgroup_sock_addr getpeername"),
    ("cgroup_inet4_getsockname", "cgroup_sock_addr getsockname"),
    ("cgroup_inet6_getsockname", "cgroup_sock_addr getsockname"),
    ("xdp_devmap", "xdp in a devmap entry"),
    ("cgroup_inet_sock_release", "cgroup_sock socket release"),
    ("xdp_cpumap", "xdp in a cpumap entry"),
    ("sk_lookup", "sk_lookup on a network namespace"),
    ("xdp", "xdp on an interface"),
    ("sk_skb_verdict", "sk_skb on a sockmap"),
    ("sk_reuseport_select", "sk_reuseport"),
    ("sk_reuseport_select_or_migrate", "sk_reuseport"),
    (
        "perf_event",
        "kprobe, tracepoint and perf_event programs on a perf event (perf_event_open: EACCES in the sandbox here)",
    ),
    (
        "trace_kprobe_multi",
        "kprobe_multi link on kernel functions (this kernel has no kprobes)",
    ),
    ("lsm_cgroup", "lsm on a cgroup"),
    ("struct_ops", "a struct_ops link"),
    ("netfilter", "a netfilter hook"),
    ("tcx_ingress", "sched_cls on an interface (tcx)"),
    ("tcx_egress", "sched_cls on an interface (tcx)"),
    (
        "trace_uprobe_multi",
        "uprobe_multi link on an executable file (works with a token here)",
    ),
    ("cgroup_unix_connect", "cgroup_sock_addr connect"),
    ("cgroup_unix_sendmsg", "cgroup_sock_addr sendmsg"),
    ("cgroup_unix_recvmsg", "cgroup_sock_addr recvmsg"),
    ("cgroup_unix_getpeername", "cgroup_sock_addr getpeername"),
    ("cgroup_unix_getsockname", "cgroup_sock_addr getsockname"),
    ("netkit_primary", "sched_cls on a netkit device"),
    ("netkit_peer", "sched_cls on a netkit device"),
    (
        "trace_kprobe_session",
        "kprobe session link on kernel functions (this kernel has no kprobes)",
    ),
    (
        "trace_uprobe_session",
        "uprobe session link on an executable file",
    ),
];

/// The value of a built-in name.
fn builtin_value(kind: DelegateKind, name: &str) -> Option<u32> {
    builtin::table(kind)
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
}

fn find<T>(
    kind: DelegateKind,
    value: u32,
    table: &[T],
    name: impl Fn(&T) -> &'static str,
) -> Option<&T> {
    table
        .iter()
        .find(|e| builtin_value(kind, name(e)) == Some(value))
}

fn cmd_entry(value: u32) -> Option<Entry> {
    if let Some(e) = find(DelegateKind::Cmds, value, CMDS, |e| e.name) {
        return Some(entry(e.name, e.requires, e.class, e.grants));
    }
    CMDS_WITHOUT_TOKEN
        .iter()
        .find(|n| builtin_value(DelegateKind::Cmds, n) == Some(value))
        .map(|n| entry(n, &[], Nothing, NO_TOKEN))
}

fn prog_entry(value: u32) -> Option<&'static ProgEntry> {
    find(DelegateKind::Progs, value, PROGS, |p| p.entry.name)
}

/// Whether a program type loads with an attach type (a program type this build does not know is
/// assumed to load with any).
fn loads_with(prog: u32, attach: u32) -> bool {
    match prog_entry(prog).map_or(LoadsWith::Any, |p| p.loads_with) {
        LoadsWith::Never => false,
        LoadsWith::Any => true,
        LoadsWith::Only(names) => names
            .iter()
            .any(|n| builtin_value(DelegateKind::Attachs, n) == Some(attach)),
    }
}

/// One delegated item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemRisk {
    /// The kernel's name (`any` for the whole set, `0x..` for a bit without a name).
    pub name: String,
    pub class: RiskClass,
    /// The capabilities the kernel checks through the token for it (and CAP_BPF for every map
    /// and program type when `kernel.unprivileged_bpf_disabled` is set).
    pub requires: Vec<Capability>,
    /// The flag the command needs for it, when it requires a capability dropped by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opt_in: Option<&'static str>,
    /// Whether it takes effect with this delegation and the capabilities kept.
    pub usable: bool,
    pub grants: String,
    /// Why it is not usable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// For `any`: the usable items it includes that reach beyond the sandbox.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub includes: Vec<String>,
}

/// Why a delegation is refused before anything is forked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error(
    "--delegate-progs: {} cannot load without CAP_PERFMON ({}), which the command does not keep; add {flag} ({grants}), or leave {} out of the delegation",
    prog_types.join(", "),
    reason,
    if prog_types.len() == 1 { "it" } else { "them" },
    grants = PERFMON_OPT_IN_GRANTS
)]
pub struct PerfmonRefusal {
    /// The delegated program types `is_perfmon_prog_type` names, in enum order.
    pub prog_types: Vec<String>,
    pub reason: &'static str,
    pub flag: &'static str,
}

const PERFMON_REFUSAL_REASON: &str = "bpf_prog_load: EPERM unless the loader has CAP_PERFMON or CAP_SYS_ADMIN in the token's user namespace";

/// What `--cap-add perfmon` grants, in the refusal's words.
const PERFMON_OPT_IN_GRANTS: &str = "it lets every delegated program read kernel memory and leak kernel pointers, and tracing programs see and signal every host process";

/// What a warning is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WarningKind {
    /// `any` includes program types that will not load without `--cap-add perfmon`.
    PerfmonTypesUnloadable,
    /// CAP_PERFMON (or CAP_SYS_ADMIN) is kept and a program type loads.
    KernelMemoryRead,
    /// A usable item acts on host processes or the whole kernel.
    HostWide,
    /// A usable item sees host processes or kernel data.
    HostObservation,
    /// A named item that cannot take effect (missing command, attach type or capability).
    Unusable,
    /// A value this build does not know (a newer kernel's).
    Unknown,
}

/// A warning the binary prints before it forks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RiskWarning {
    pub kind: WarningKind,
    /// The `delegate_*` option it is about, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub option: Option<&'static str>,
    pub items: Vec<String>,
    pub message: String,
}

impl fmt::Display for RiskWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The classification of a whole delegation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DelegationRisk {
    pub verdict: Verdict,
    pub caps_kept: CapsKept,
    pub delegate_cmds: Vec<ItemRisk>,
    pub delegate_maps: Vec<ItemRisk>,
    pub delegate_progs: Vec<ItemRisk>,
    pub delegate_attachs: Vec<ItemRisk>,
    /// Set when the delegation is refused before forking.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<PerfmonRefusal>,
    pub warnings: Vec<RiskWarning>,
    /// What keeping CAP_PERFMON gives, when it is kept and a program type loads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perfmon_grants: Option<&'static str>,
    /// Helpers refused in every program type without CAP_PERFMON, when it is not kept and a
    /// program type loads.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub helpers_needing_perfmon: &'static [&'static str],
}

impl DelegationRisk {
    pub fn items(&self, kind: DelegateKind) -> &[ItemRisk] {
        match kind {
            DelegateKind::Cmds => &self.delegate_cmds,
            DelegateKind::Maps => &self.delegate_maps,
            DelegateKind::Progs => &self.delegate_progs,
            DelegateKind::Attachs => &self.delegate_attachs,
        }
    }

    /// Short lines for people (`-v`, `--print-policy` text): the refusal, the warnings, and the
    /// verdict unless it is `confined`. Empty for a confined delegation with nothing to say.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.refusal.iter().map(ToString::to_string).collect();
        lines.extend(self.warnings.iter().map(|w| w.message.clone()));
        if self.verdict != Verdict::Confined {
            lines.push(format!("verdict: {}", self.verdict));
        }
        lines
    }
}

/// Whether a mask is everything the kernel knows: `any`, or every known bit (mountinfo then
/// shows `any` too, `bpf_show_options`).
fn is_whole_set(names: &EnumNames, kind: DelegateKind, mask: Mask) -> bool {
    let known = names.known_mask(kind).0;
    mask.is_any() || (known != 0 && mask.0 & known == known)
}

/// The values a mask stands for: its bits, or for the whole set every value the kernel knows.
fn values(names: &EnumNames, kind: DelegateKind, mask: Mask) -> Vec<u32> {
    if mask.is_any() {
        names.known_mask(kind).values().collect()
    } else {
        mask.values().collect()
    }
}

fn display_name(names: &EnumNames, kind: DelegateKind, value: u32) -> String {
    names
        .name_of(kind, value)
        .or_else(|| {
            builtin::table(kind)
                .iter()
                .find(|(_, v)| *v == value)
                .map(|(n, _)| *n)
        })
        .map_or_else(|| format!("{:#x}", 1u64 << value), ToOwned::to_owned)
}

struct Classifier<'a> {
    d: &'a Delegation,
    caps: CapsKept,
    names: &'a EnumNames,
}

impl Classifier<'_> {
    /// A program type's class for the capabilities kept (see [`COVERED_CGROUPS`]).
    fn class_of(&self, entry: &Entry) -> RiskClass {
        if reaches_host_cgroups(entry) && !self.caps.sys_admin {
            SandboxLocal
        } else {
            entry.class
        }
    }

    fn missing_cap(&self, requires: &[Capability]) -> Option<Capability> {
        requires.iter().copied().find(|c| !self.caps.has(*c))
    }

    fn cmd_delegated(&self, name: &str) -> bool {
        builtin_value(DelegateKind::Cmds, name).is_some_and(|v| self.d.cmds.contains(v))
    }

    fn attach_values(&self) -> Vec<u32> {
        values(self.names, DelegateKind::Attachs, self.d.attachs)
    }

    fn prog_values(&self) -> Vec<u32> {
        values(self.names, DelegateKind::Progs, self.d.progs)
    }

    /// Why a program type cannot load, if it cannot.
    fn prog_blocked(&self, value: u32) -> Option<String> {
        if !self.cmd_delegated("prog_load") {
            return Some("prog_load is not delegated".to_owned());
        }
        let entry = prog_entry(value);
        if let Some(cap) = entry.and_then(|p| self.missing_cap(p.entry.requires)) {
            return Some(missing_cap_note(cap));
        }
        if !self
            .attach_values()
            .into_iter()
            .any(|a| loads_with(value, a))
        {
            let wanted = match entry.map(|p| p.loads_with) {
                Some(LoadsWith::Only(list)) => format!(": it loads with {}", list.join(", ")),
                _ => String::new(),
            };
            return Some(format!(
                "no delegated attach type lets it load{wanted} (the token checks the expected attach type)"
            ));
        }
        None
    }

    fn item(&self, kind: DelegateKind, value: u32) -> ItemRisk {
        let name = display_name(self.names, kind, value);
        let unknown = || ItemRisk {
            name: name.clone(),
            class: RiskClass::Unknown,
            requires: Vec::new(),
            opt_in: None,
            usable: true,
            grants: format!(
                "a {} this build does not know (a newer kernel's): assume host-wide",
                kind.item()
            ),
            note: None,
            includes: Vec::new(),
        };
        let from_entry = |e: &Entry, note: Option<String>| ItemRisk {
            name: name.clone(),
            class: e.class,
            requires: e.requires.to_vec(),
            opt_in: e.requires.iter().find_map(|c| c.opt_in()),
            usable: note.is_none() && e.class != Nothing,
            grants: e.grants.to_owned(),
            note,
            includes: Vec::new(),
        };
        match kind {
            DelegateKind::Cmds => cmd_entry(value).map_or_else(unknown, |e| {
                from_entry(&e, self.missing_cap(e.requires).map(missing_cap_note))
            }),
            DelegateKind::Maps => find(kind, value, MAPS, |e| e.name).map_or_else(unknown, |e| {
                let note = if self.cmd_delegated("map_create") {
                    self.missing_cap(e.requires).map(missing_cap_note)
                } else {
                    Some("map_create is not delegated".to_owned())
                };
                from_entry(e, note)
            }),
            DelegateKind::Progs => {
                let note = self.prog_blocked(value);
                match prog_entry(value) {
                    Some(p) if reaches_host_cgroups(&p.entry) && !self.caps.sys_admin => ItemRisk {
                        class: SandboxLocal,
                        grants: format!("{}: {COVERED_CGROUPS}", p.entry.grants),
                        ..from_entry(&p.entry, note)
                    },
                    Some(p) => from_entry(&p.entry, note),
                    None => ItemRisk {
                        usable: note.is_none(),
                        note,
                        ..unknown()
                    },
                }
            }
            DelegateKind::Attachs => self.attach_item(value, name),
        }
    }

    /// An attach type takes the class of the delegated program types that load with it.
    fn attach_item(&self, value: u32, name: String) -> ItemRisk {
        let Some((_, what)) = find(DelegateKind::Attachs, value, ATTACHS, |(n, _)| n) else {
            return ItemRisk {
                name,
                class: RiskClass::Unknown,
                requires: Vec::new(),
                opt_in: None,
                usable: true,
                grants:
                    "an attach type this build does not know (a newer kernel's): assume host-wide"
                        .to_owned(),
                note: None,
                includes: Vec::new(),
            };
        };
        let loaders: Vec<u32> = self
            .prog_values()
            .into_iter()
            .filter(|p| loads_with(*p, value))
            .collect();
        let class = loaders
            .iter()
            .map(|p| prog_entry(*p).map_or(RiskClass::Unknown, |e| self.class_of(&e.entry)))
            .max()
            .unwrap_or(Nothing);
        let usable_loaders: Vec<String> = loaders
            .iter()
            .filter(|p| self.prog_blocked(**p).is_none())
            .map(|p| display_name(self.names, DelegateKind::Progs, *p))
            .collect();
        let note = if loaders.is_empty() {
            Some("no delegated program type loads with it".to_owned())
        } else if usable_loaders.is_empty() {
            Some("none of the delegated program types that load with it can load".to_owned())
        } else {
            None
        };
        let grants = if usable_loaders.is_empty() || usable_loaders.len() > 4 {
            (*what).to_owned()
        } else {
            format!("{what}; lets {} load", usable_loaders.join(", "))
        };
        ItemRisk {
            name,
            class,
            requires: Vec::new(),
            opt_in: None,
            usable: note.is_none(),
            grants,
            note,
            includes: Vec::new(),
        }
    }

    /// The single item that stands for a whole set.
    fn any_item(&self, kind: DelegateKind) -> ItemRisk {
        let all: Vec<ItemRisk> = values(self.names, kind, Mask::ANY)
            .into_iter()
            .map(|v| self.item(kind, v))
            .collect();
        let usable = all.iter().filter(|i| i.usable);
        let class = usable.clone().map(|i| i.class).max().unwrap_or(Nothing);
        // An attach type only repeats the class of the program types that load with it: the
        // list would name every attach type as soon as one such program type is delegated.
        let includes = usable
            .filter(|i| i.class > SandboxLocal && kind != DelegateKind::Attachs)
            .map(|i| i.name.clone())
            .collect();
        let grants = match kind {
            DelegateKind::Cmds => {
                "every command, now and in newer kernels; only map_create, prog_load, btf_load and btf_get_fd_by_id take a token"
            }
            DelegateKind::Maps => "every map type, now and in newer kernels",
            DelegateKind::Progs => "every program type, now and in newer kernels",
            DelegateKind::Attachs => "every attach type, now and in newer kernels",
        };
        let opt_in = all
            .iter()
            .filter(|i| !i.usable)
            .find_map(|i| i.opt_in)
            .filter(|_| kind != DelegateKind::Attachs);
        ItemRisk {
            name: "any".to_owned(),
            class,
            requires: Vec::new(),
            opt_in,
            usable: true,
            grants: grants.to_owned(),
            note: None,
            includes,
        }
    }

    fn set(&self, kind: DelegateKind) -> Vec<ItemRisk> {
        let mask = self.d.get(kind);
        if is_whole_set(self.names, kind, mask) {
            vec![self.any_item(kind)]
        } else {
            mask.values().map(|v| self.item(kind, v)).collect()
        }
    }
}

fn missing_cap_note(cap: Capability) -> String {
    match cap.opt_in() {
        Some(flag) => format!(
            "the kernel requires {} and the command does not keep it ({flag} keeps it)",
            cap.name()
        ),
        None => format!("the kernel requires {}", cap.name()),
    }
}

/// The delegated program types that need CAP_PERFMON, by name, when the delegation names them
/// (`any` is not refused, only warned about).
fn perfmon_types_named(d: &Delegation, names: &EnumNames) -> Vec<String> {
    if is_whole_set(names, DelegateKind::Progs, d.progs) {
        return Vec::new();
    }
    d.progs
        .values()
        .filter(|v| prog_entry(*v).is_some_and(|p| p.entry.requires.contains(&Capability::Perfmon)))
        .map(|v| display_name(names, DelegateKind::Progs, v))
        .collect()
}

/// Classifies a delegation for the capabilities the command keeps: the report `--print-policy
/// --json`, `--check --json`, `--json-status` and `-v` show.
pub fn assess(delegation: &Delegation, caps: CapsKept, names: &EnumNames) -> DelegationRisk {
    let c = Classifier {
        d: delegation,
        caps,
        names,
    };
    let [cmds, maps, progs, attachs] = DelegateKind::ALL.map(|k| c.set(k));
    let prog_loads = progs.iter().any(|i| {
        i.usable
            && (i.name != "any"
                || c.prog_values()
                    .into_iter()
                    .any(|v| c.prog_blocked(v).is_none()))
    });
    let perfmon = caps.has(Capability::Perfmon) && prog_loads;
    let widest = [&cmds, &maps, &progs]
        .into_iter()
        .flatten()
        .filter(|i| i.usable)
        .map(|i| i.class)
        .max()
        .unwrap_or(Nothing);
    let verdict = if perfmon {
        Verdict::KernelMemoryRead
    } else {
        match widest {
            RiskClass::None | RiskClass::SandboxLocal => Verdict::Confined,
            RiskClass::HostObservation => Verdict::HostObservation,
            RiskClass::HostWide | RiskClass::Unknown => Verdict::HostWide,
        }
    };
    let named = perfmon_types_named(delegation, names);
    let refusal = (!caps.has(Capability::Perfmon) && !named.is_empty()).then_some(PerfmonRefusal {
        prog_types: named,
        reason: PERFMON_REFUSAL_REASON,
        flag: PERFMON_FLAG,
    });
    let mut risk = DelegationRisk {
        verdict,
        caps_kept: caps,
        delegate_cmds: cmds,
        delegate_maps: maps,
        delegate_progs: progs,
        delegate_attachs: attachs,
        refusal,
        warnings: Vec::new(),
        perfmon_grants: perfmon.then_some(PERFMON_GRANTS),
        helpers_needing_perfmon: if prog_loads && !perfmon {
            PERFMON_HELPERS
        } else {
            &[]
        },
    };
    risk.warnings = warnings(&risk, delegation, names);
    risk
}

fn warnings(risk: &DelegationRisk, d: &Delegation, names: &EnumNames) -> Vec<RiskWarning> {
    let mut out = Vec::new();
    if is_whole_set(names, DelegateKind::Progs, d.progs) && !risk.caps_kept.has(Capability::Perfmon)
    {
        out.push(RiskWarning {
            kind: WarningKind::PerfmonTypesUnloadable,
            option: Some(DelegateKind::Progs.option()),
            items: PERFMON_PROG_TYPES.iter().map(|s| (*s).to_owned()).collect(),
            message: format!(
                "delegate_progs=any: {} will not load: they need CAP_PERFMON, which the command keeps only with {PERFMON_FLAG}",
                PERFMON_PROG_TYPES.join(", ")
            ),
        });
    }
    if let Some(grants) = risk.perfmon_grants {
        out.push(RiskWarning {
            kind: WarningKind::KernelMemoryRead,
            option: None,
            items: Vec::new(),
            message: format!(
                "the command keeps CAP_PERFMON{}: {grants}",
                if risk.caps_kept.perfmon {
                    ""
                } else {
                    " (through CAP_SYS_ADMIN)"
                }
            ),
        });
    }
    // Attach types only repeat the class of the program types that load with them.
    for kind in [DelegateKind::Cmds, DelegateKind::Maps, DelegateKind::Progs] {
        for item in risk.items(kind) {
            let about = |kind_: WarningKind, message: String| RiskWarning {
                kind: kind_,
                option: Some(kind.option()),
                items: vec![item.name.clone()],
                message,
            };
            if item.name == "any" {
                if !item.includes.is_empty() {
                    let w = match item.class {
                        HostObservation => WarningKind::HostObservation,
                        _ => WarningKind::HostWide,
                    };
                    out.push(RiskWarning {
                        items: item.includes.clone(),
                        ..about(
                            w,
                            format!(
                                "{}=any ({}): includes {}",
                                kind.option(),
                                item.class,
                                item.includes.join(", ")
                            ),
                        )
                    });
                }
                continue;
            }
            if item.usable {
                let w = match item.class {
                    HostObservation => WarningKind::HostObservation,
                    HostWide => WarningKind::HostWide,
                    RiskClass::Unknown => WarningKind::Unknown,
                    _ => continue,
                };
                out.push(about(
                    w,
                    format!(
                        "{} {} ({}): {}",
                        kind.option(),
                        item.name,
                        item.class,
                        item.grants
                    ),
                ));
            } else if let Some(note) = &item.note {
                // The refusal already names program types that need CAP_PERFMON.
                let refused = risk.refusal.as_ref().is_some_and(|r| {
                    kind == DelegateKind::Progs && r.prog_types.contains(&item.name)
                });
                if !refused && item.class != Nothing {
                    out.push(about(
                        WarningKind::Unusable,
                        format!("{} {}: not usable: {note}", kind.option(), item.name),
                    ));
                }
            }
        }
    }
    if !is_whole_set(names, DelegateKind::Attachs, d.attachs) {
        for item in &risk.delegate_attachs {
            if let (false, Some(note)) = (item.usable, &item.note) {
                out.push(RiskWarning {
                    kind: WarningKind::Unusable,
                    option: Some(DelegateKind::Attachs.option()),
                    items: vec![item.name.clone()],
                    message: format!("delegate_attachs {}: not usable: {note}", item.name),
                });
            }
        }
    }
    out
}

/// The check the binary makes before it forks: the refusal (program types named in the
/// delegation that cannot load without CAP_PERFMON, which the command does not keep), or the
/// warnings to print.
pub fn check(
    delegation: &Delegation,
    caps: CapsKept,
    names: &EnumNames,
) -> Result<Vec<RiskWarning>, PerfmonRefusal> {
    let risk = assess(delegation, caps, names);
    match risk.refusal {
        Some(refusal) => Err(refusal),
        None => Ok(risk.warnings),
    }
}

#[cfg(test)]
mod tests;
