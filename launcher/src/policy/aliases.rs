//! Names other tools use for the kernel's enum values, so a user can write the name they know:
//!
//! - libbpf's `SEC()` section names (`tc`, `fentry`, `tcx/ingress`, ...), written here from
//!   libbpf's documented section conventions (`Documentation/bpf/libbpf/program_types.rst`):
//!   a section name fixes a program type and sometimes an expected attach type, so in a program
//!   set it means the program type and in an attach set the attach type. A section is an alias
//!   of a set only where it means exactly one value of it: `kprobe` has no attach type (libbpf
//!   leaves it 0, which is not "none" but `cgroup_inet_ingress`), `tcx` alone is two attach
//!   types. Such names are kept apart, to name the choices in the error instead.
//! - systemd's unit-file names (`BPFProgTypeXdp`): see [`super::export`], whose spelling rule
//!   is inverted by spelling every kernel name and comparing, so the two cannot drift apart.
//!
//! Kernel names always win: a section name that is also a kernel name of the set (`xdp`,
//! `perf_event`, `sk_msg` as a program type) is the kernel's value.

use super::DelegateKind;

/// Which tool a name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliasOrigin {
    /// libbpf's `SEC()` section name.
    Libbpf,
    /// systemd's `BPFDelegate*=` spelling.
    Systemd,
}

impl AliasOrigin {
    /// How a message names the tool.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Libbpf => "libbpf's section name",
            Self::Systemd => "systemd's name",
        }
    }
}

/// One libbpf section name: the program type it loads as and, when libbpf sets exactly one,
/// the expected attach type (kernel names without prefix).
struct Section {
    name: &'static str,
    prog: &'static str,
    attach: Option<&'static str>,
}

const fn sec(name: &'static str, prog: &'static str, attach: Option<&'static str>) -> Section {
    Section { name, prog, attach }
}

/// libbpf's section names (without the `/target` part that follows `+` sections), with the
/// sleepable `.s` variants. `tcx` and `netkit` alone are not sections but the shared prefix of
/// two, which users write for the program type.
const SECTIONS: &[Section] = &[
    sec("socket", "socket_filter", None),
    sec(
        "sk_reuseport/migrate",
        "sk_reuseport",
        Some("sk_reuseport_select_or_migrate"),
    ),
    sec("sk_reuseport", "sk_reuseport", Some("sk_reuseport_select")),
    sec("kprobe", "kprobe", None),
    sec("kretprobe", "kprobe", None),
    sec("uprobe", "kprobe", None),
    sec("uprobe.s", "kprobe", None),
    sec("uretprobe", "kprobe", None),
    sec("uretprobe.s", "kprobe", None),
    sec("kprobe.multi", "kprobe", Some("trace_kprobe_multi")),
    sec("kretprobe.multi", "kprobe", Some("trace_kprobe_multi")),
    sec("kprobe.session", "kprobe", Some("trace_kprobe_session")),
    sec("uprobe.multi", "kprobe", Some("trace_uprobe_multi")),
    sec("uretprobe.multi", "kprobe", Some("trace_uprobe_multi")),
    sec("uprobe.multi.s", "kprobe", Some("trace_uprobe_multi")),
    sec("uretprobe.multi.s", "kprobe", Some("trace_uprobe_multi")),
    sec("uprobe.session", "kprobe", Some("trace_uprobe_session")),
    sec("uprobe.session.s", "kprobe", Some("trace_uprobe_session")),
    sec("ksyscall", "kprobe", None),
    sec("kretsyscall", "kprobe", None),
    sec("usdt", "kprobe", None),
    sec("usdt.s", "kprobe", None),
    sec("tc/ingress", "sched_cls", Some("tcx_ingress")),
    sec("tc/egress", "sched_cls", Some("tcx_egress")),
    sec("tcx/ingress", "sched_cls", Some("tcx_ingress")),
    sec("tcx/egress", "sched_cls", Some("tcx_egress")),
    sec("tcx", "sched_cls", None),
    sec("tc", "sched_cls", None),
    sec("classifier", "sched_cls", None),
    sec("action", "sched_act", None),
    sec("netkit/primary", "sched_cls", Some("netkit_primary")),
    sec("netkit/peer", "sched_cls", Some("netkit_peer")),
    sec("netkit", "sched_cls", None),
    sec("tp", "tracepoint", None),
    sec("raw_tp", "raw_tracepoint", None),
    sec("raw_tracepoint.w", "raw_tracepoint_writable", None),
    sec("raw_tp.w", "raw_tracepoint_writable", None),
    sec("tp_btf", "tracing", Some("trace_raw_tp")),
    sec("fentry", "tracing", Some("trace_fentry")),
    sec("fmod_ret", "tracing", Some("modify_return")),
    sec("fexit", "tracing", Some("trace_fexit")),
    sec("fentry.s", "tracing", Some("trace_fentry")),
    sec("fmod_ret.s", "tracing", Some("modify_return")),
    sec("fexit.s", "tracing", Some("trace_fexit")),
    sec("freplace", "ext", None),
    sec("lsm", "lsm", Some("lsm_mac")),
    sec("lsm.s", "lsm", Some("lsm_mac")),
    sec("lsm_cgroup", "lsm", Some("lsm_cgroup")),
    sec("iter", "tracing", Some("trace_iter")),
    sec("iter.s", "tracing", Some("trace_iter")),
    sec("xdp.frags/devmap", "xdp", Some("xdp_devmap")),
    sec("xdp/devmap", "xdp", Some("xdp_devmap")),
    sec("xdp.frags/cpumap", "xdp", Some("xdp_cpumap")),
    sec("xdp/cpumap", "xdp", Some("xdp_cpumap")),
    sec("xdp.frags", "xdp", Some("xdp")),
    sec("sockops", "sock_ops", Some("cgroup_sock_ops")),
    sec(
        "sk_skb/stream_parser",
        "sk_skb",
        Some("sk_skb_stream_parser"),
    ),
    sec(
        "sk_skb/stream_verdict",
        "sk_skb",
        Some("sk_skb_stream_verdict"),
    ),
    sec("sk_skb/verdict", "sk_skb", Some("sk_skb_verdict")),
    sec("sk_msg", "sk_msg", Some("sk_msg_verdict")),
    sec(
        "cgroup_skb/ingress",
        "cgroup_skb",
        Some("cgroup_inet_ingress"),
    ),
    sec(
        "cgroup_skb/egress",
        "cgroup_skb",
        Some("cgroup_inet_egress"),
    ),
    sec("cgroup/skb", "cgroup_skb", None),
    sec(
        "cgroup/sock_create",
        "cgroup_sock",
        Some("cgroup_inet_sock_create"),
    ),
    sec(
        "cgroup/sock_release",
        "cgroup_sock",
        Some("cgroup_inet_sock_release"),
    ),
    sec(
        "cgroup/sock",
        "cgroup_sock",
        Some("cgroup_inet_sock_create"),
    ),
    sec(
        "cgroup/post_bind4",
        "cgroup_sock",
        Some("cgroup_inet4_post_bind"),
    ),
    sec(
        "cgroup/post_bind6",
        "cgroup_sock",
        Some("cgroup_inet6_post_bind"),
    ),
    sec(
        "cgroup/bind4",
        "cgroup_sock_addr",
        Some("cgroup_inet4_bind"),
    ),
    sec(
        "cgroup/bind6",
        "cgroup_sock_addr",
        Some("cgroup_inet6_bind"),
    ),
    sec(
        "cgroup/connect4",
        "cgroup_sock_addr",
        Some("cgroup_inet4_connect"),
    ),
    sec(
        "cgroup/connect6",
        "cgroup_sock_addr",
        Some("cgroup_inet6_connect"),
    ),
    sec(
        "cgroup/connect_unix",
        "cgroup_sock_addr",
        Some("cgroup_unix_connect"),
    ),
    sec(
        "cgroup/sendmsg4",
        "cgroup_sock_addr",
        Some("cgroup_udp4_sendmsg"),
    ),
    sec(
        "cgroup/sendmsg6",
        "cgroup_sock_addr",
        Some("cgroup_udp6_sendmsg"),
    ),
    sec(
        "cgroup/sendmsg_unix",
        "cgroup_sock_addr",
        Some("cgroup_unix_sendmsg"),
    ),
    sec(
        "cgroup/recvmsg4",
        "cgroup_sock_addr",
        Some("cgroup_udp4_recvmsg"),
    ),
    sec(
        "cgroup/recvmsg6",
        "cgroup_sock_addr",
        Some("cgroup_udp6_recvmsg"),
    ),
    sec(
        "cgroup/recvmsg_unix",
        "cgroup_sock_addr",
        Some("cgroup_unix_recvmsg"),
    ),
    sec(
        "cgroup/getpeername4",
        "cgroup_sock_addr",
        Some("cgroup_inet4_getpeername"),
    ),
    sec(
        "cgroup/getpeername6",
        "cgroup_sock_addr",
        Some("cgroup_inet6_getpeername"),
    ),
    sec(
        "cgroup/getpeername_unix",
        "cgroup_sock_addr",
        Some("cgroup_unix_getpeername"),
    ),
    sec(
        "cgroup/getsockname4",
        "cgroup_sock_addr",
        Some("cgroup_inet4_getsockname"),
    ),
    sec(
        "cgroup/getsockname6",
        "cgroup_sock_addr",
        Some("cgroup_inet6_getsockname"),
    ),
    sec(
        "cgroup/getsockname_unix",
        "cgroup_sock_addr",
        Some("cgroup_unix_getsockname"),
    ),
    sec("cgroup/sysctl", "cgroup_sysctl", Some("cgroup_sysctl")),
    sec(
        "cgroup/getsockopt",
        "cgroup_sockopt",
        Some("cgroup_getsockopt"),
    ),
    sec(
        "cgroup/setsockopt",
        "cgroup_sockopt",
        Some("cgroup_setsockopt"),
    ),
    sec("cgroup/dev", "cgroup_device", Some("cgroup_device")),
    sec("struct_ops.s", "struct_ops", None),
];

/// Shared prefixes of several sections, which in an attach set could mean any of their attach
/// types: refused with the choices rather than guessed.
const AMBIGUOUS_ATTACHS: &[(&str, &[&str])] = &[
    ("tcx", &["tcx_ingress", "tcx_egress"]),
    ("tc", &["tcx_ingress", "tcx_egress"]),
    ("netkit", &["netkit_primary", "netkit_peer"]),
    (
        "sk_skb",
        &[
            "sk_skb_stream_parser",
            "sk_skb_stream_verdict",
            "sk_skb_verdict",
        ],
    ),
    ("cgroup_skb", &["cgroup_inet_ingress", "cgroup_inet_egress"]),
];

/// The kernel name (lowercase, no prefix) a libbpf section name means in this set, if exactly
/// one. `name` is lowercase.
pub(super) fn libbpf(kind: DelegateKind, name: &str) -> Option<&'static str> {
    let section = SECTIONS.iter().find(|s| s.name == name)?;
    match kind {
        DelegateKind::Progs => Some(section.prog),
        DelegateKind::Attachs => section.attach,
        DelegateKind::Cmds | DelegateKind::Maps => None,
    }
}

/// Every libbpf name with a meaning in this set, for suggestions and tests.
pub(super) fn libbpf_names(kind: DelegateKind) -> impl Iterator<Item = &'static str> {
    SECTIONS
        .iter()
        .filter(move |s| libbpf(kind, s.name).is_some())
        .map(|s| s.name)
}

/// The attach types a libbpf prefix could mean when it means several (`tcx`), for the error.
pub(super) fn libbpf_choices(kind: DelegateKind, name: &str) -> &'static [&'static str] {
    if kind != DelegateKind::Attachs {
        return &[];
    }
    AMBIGUOUS_ATTACHS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(&[], |(_, choices)| choices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Delegation, EnumNames, Mask, PolicyError, export};

    fn both_tables() -> [EnumNames; 2] {
        [
            EnumNames::builtin(),
            EnumNames::for_running_kernel().clone(),
        ]
    }

    fn value(names: &EnumNames, kind: DelegateKind, kernel_name: &str) -> Mask {
        Mask::NONE.with(names.value_of(kind, kernel_name).expect(kernel_name))
    }

    #[test]
    fn every_libbpf_alias_means_a_value_of_the_table_and_agrees_with_kernel_names() {
        for names in both_tables() {
            for section in SECTIONS {
                for (kind, target) in [
                    (DelegateKind::Progs, Some(section.prog)),
                    (DelegateKind::Attachs, section.attach),
                ] {
                    let Some(target) = target else { continue };
                    let expected = value(&names, kind, target);
                    assert_eq!(
                        names.parse(kind, section.name),
                        Ok(expected),
                        "{kind} {}",
                        section.name
                    );
                    // A section that is also a kernel name must mean that same value, else the
                    // kernel's meaning would silently win over libbpf's.
                    if let Some(kernel) = names.value_of(kind, section.name) {
                        assert_eq!(Mask::NONE.with(kernel), expected, "{}", section.name);
                    }
                }
            }
            for (name, choices) in AMBIGUOUS_ATTACHS {
                assert_eq!(libbpf(DelegateKind::Attachs, name), None, "{name}");
                for choice in *choices {
                    value(&names, DelegateKind::Attachs, choice);
                }
            }
        }
    }

    #[test]
    fn the_names_libbpf_users_write_mean_the_kernel_values_of_each_set() {
        let n = EnumNames::builtin();
        let progs = [
            ("tc", "sched_cls"),
            ("tcx", "sched_cls"),
            ("classifier", "sched_cls"),
            ("tcx/ingress", "sched_cls"),
            ("action", "sched_act"),
            ("fentry", "tracing"),
            ("fexit", "tracing"),
            ("fmod_ret", "tracing"),
            ("tp_btf", "tracing"),
            ("iter", "tracing"),
            ("raw_tp", "raw_tracepoint"),
            ("tp", "tracepoint"),
            ("ksyscall", "kprobe"),
            ("kprobe.multi", "kprobe"),
            ("uprobe", "kprobe"),
            ("usdt", "kprobe"),
            ("lsm", "lsm"),
            ("freplace", "ext"),
            ("sk_skb/verdict", "sk_skb"),
            ("cgroup/connect4", "cgroup_sock_addr"),
            ("TC", "sched_cls"),
        ];
        for (name, kernel) in progs {
            let expected = value(&n, DelegateKind::Progs, kernel);
            assert_eq!(n.parse(DelegateKind::Progs, name), Ok(expected), "{name}");
        }
        let attachs = [
            ("fentry", "trace_fentry"),
            ("fexit", "trace_fexit"),
            ("fmod_ret", "modify_return"),
            ("tp_btf", "trace_raw_tp"),
            ("iter", "trace_iter"),
            ("tcx/ingress", "tcx_ingress"),
            ("tcx/egress", "tcx_egress"),
            ("lsm", "lsm_mac"),
            ("kprobe.multi", "trace_kprobe_multi"),
            ("sockops", "cgroup_sock_ops"),
        ];
        for (name, kernel) in attachs {
            let expected = value(&n, DelegateKind::Attachs, kernel);
            assert_eq!(n.parse(DelegateKind::Attachs, name), Ok(expected), "{name}");
        }
        let resolved = n.resolve(DelegateKind::Progs, "fentry").unwrap();
        assert_eq!(
            (resolved.kernel_name, resolved.alias),
            ("tracing", Some(AliasOrigin::Libbpf))
        );
        assert_eq!(n.resolve(DelegateKind::Progs, "xdp").unwrap().alias, None);
        // A list mixes the forms; the result is kernel values, rendered with kernel names.
        let mask = n
            .parse(DelegateKind::Progs, "tc:BPFProgTypeXdp,fentry")
            .unwrap();
        assert_eq!(n.render(DelegateKind::Progs, mask), "sched_cls:xdp:tracing");
    }

    #[test]
    fn libbpf_names_do_not_reach_sets_they_mean_nothing_in() {
        let n = EnumNames::builtin();
        for (kind, name) in [
            (DelegateKind::Attachs, "kprobe"),
            (DelegateKind::Attachs, "ksyscall"),
            (DelegateKind::Attachs, "freplace"),
            (DelegateKind::Cmds, "tc"),
            (DelegateKind::Maps, "fentry"),
        ] {
            assert!(
                matches!(n.parse(kind, name), Err(PolicyError::UnknownName { .. })),
                "{kind} {name}"
            );
        }
    }

    #[test]
    fn systemd_names_round_trip_for_every_kernel_value() {
        for names in both_tables() {
            let mut every = Delegation::default();
            for kind in DelegateKind::ALL {
                for (name, value) in names.entries(kind).filter(|(_, v)| *v < 64) {
                    let spelt = export::systemd_name(kind, name);
                    let expected = Ok(Mask::NONE.with(value));
                    assert_eq!(names.parse(kind, &spelt), expected, "{kind} {spelt}");
                    let lower = spelt.to_ascii_lowercase();
                    assert_eq!(names.parse(kind, &lower), expected, "{kind} {lower}");
                    let resolved = names.resolve(kind, &spelt).unwrap();
                    assert_eq!(resolved.alias, Some(AliasOrigin::Systemd));
                    assert_eq!(
                        export::systemd_name(kind, resolved.kernel_name),
                        spelt,
                        "{kind} {name}"
                    );
                }
                every.set(kind, names.known_mask(kind));
            }
            // The unit-file lines export writes read back as the same delegation.
            let mut back = Delegation::default();
            for line in export::systemd(&every, &names).iter().skip(1) {
                let (key, values) = line.split_once('=').unwrap();
                let kind = DelegateKind::ALL
                    .into_iter()
                    .find(|k| export::systemd_key(*k) == key)
                    .unwrap();
                back.set(kind, names.parse(kind, values).unwrap());
            }
            assert_eq!(back, every);
        }
    }

    #[test]
    fn unknown_names_still_get_did_you_mean_including_the_other_spellings() {
        let n = EnumNames::builtin();
        let suggestions = |kind, item| match n.parse(kind, item) {
            Err(PolicyError::UnknownName { suggestions, .. }) => suggestions,
            other => panic!("{kind} {item}: {other:?}"),
        };
        assert_eq!(suggestions(DelegateKind::Progs, "fentyr"), ["fentry"]);
        assert_eq!(suggestions(DelegateKind::Progs, "xdpp"), ["xdp"]);
        assert_eq!(
            suggestions(DelegateKind::Attachs, "tcx"),
            ["tcx_ingress", "tcx_egress"]
        );
        assert_eq!(
            suggestions(DelegateKind::Progs, "BPFProgTypeXdpp"),
            ["BPFProgTypeXdp"]
        );
        assert_eq!(
            suggestions(DelegateKind::Maps, "BPFMapTypeAray"),
            ["BPFMapTypeArray"]
        );
        let shown = n
            .parse(DelegateKind::Attachs, "tcx")
            .unwrap_err()
            .to_string();
        assert!(
            shown.contains("did you mean one of `tcx_ingress`, `tcx_egress`?"),
            "{shown}"
        );
    }

    #[test]
    fn aliases_mixed_with_numbers_are_still_refused() {
        let n = EnumNames::builtin();
        for text in ["tc:3", "3:tc", "BPFProgTypeXdp,0x8"] {
            assert!(
                matches!(
                    n.parse(DelegateKind::Progs, text),
                    Err(PolicyError::NumberMixedWithNames { .. })
                ),
                "{text}"
            );
        }
    }
}
