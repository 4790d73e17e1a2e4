use std::collections::BTreeSet;

use super::*;

fn names() -> EnumNames {
    EnumNames::builtin()
}

fn parse(cmds: &str, maps: &str, progs: &str, attachs: &str) -> Delegation {
    let n = names();
    Delegation {
        cmds: n.parse(DelegateKind::Cmds, cmds).unwrap(),
        maps: n.parse(DelegateKind::Maps, maps).unwrap(),
        progs: n.parse(DelegateKind::Progs, progs).unwrap(),
        attachs: n.parse(DelegateKind::Attachs, attachs).unwrap(),
    }
}

/// The demo's default policy.
fn default_policy() -> Delegation {
    parse("map_create:prog_load:btf_load", "array", "xdp", "xdp")
}

const PERFMON: CapsKept = CapsKept {
    perfmon: true,
    sys_admin: false,
};

fn item<'a>(risk: &'a DelegationRisk, kind: DelegateKind, name: &str) -> &'a ItemRisk {
    risk.items(kind)
        .iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("{kind} {name} missing from {risk:#?}"))
}

/// The values of a built-in enum, aliases folded.
fn builtin_values(kind: DelegateKind) -> BTreeSet<u32> {
    builtin::table(kind).iter().map(|(_, v)| *v).collect()
}

#[test]
fn every_builtin_value_has_exactly_one_entry() {
    let count = |kind: DelegateKind, value: u32| -> usize {
        let by_value = |name: &str| builtin_value(kind, name) == Some(value);
        match kind {
            DelegateKind::Cmds => {
                CMDS.iter().filter(|e| by_value(e.name)).count()
                    + CMDS_WITHOUT_TOKEN.iter().filter(|n| by_value(n)).count()
            }
            DelegateKind::Maps => MAPS.iter().filter(|e| by_value(e.name)).count(),
            DelegateKind::Progs => PROGS.iter().filter(|p| by_value(p.entry.name)).count(),
            DelegateKind::Attachs => ATTACHS.iter().filter(|(n, _)| by_value(n)).count(),
        }
    };
    for kind in DelegateKind::ALL {
        for value in builtin_values(kind) {
            let name = display_name(&names(), kind, value);
            assert_eq!(
                count(kind, value),
                1,
                "{kind} {name} ({value}): a kernel value needs exactly one entry in policy/risk.rs"
            );
        }
    }
}

#[test]
fn every_table_name_is_a_kernel_name() {
    let all: Vec<(DelegateKind, &str)> = CMDS
        .iter()
        .map(|e| (DelegateKind::Cmds, e.name))
        .chain(CMDS_WITHOUT_TOKEN.iter().map(|n| (DelegateKind::Cmds, *n)))
        .chain(MAPS.iter().map(|e| (DelegateKind::Maps, e.name)))
        .chain(PROGS.iter().map(|p| (DelegateKind::Progs, p.entry.name)))
        .chain(ATTACHS.iter().map(|(n, _)| (DelegateKind::Attachs, *n)))
        .chain(PERFMON_PROG_TYPES.iter().map(|n| (DelegateKind::Progs, *n)))
        .chain(
            PROGS
                .iter()
                .filter_map(|p| match p.loads_with {
                    LoadsWith::Only(list) => Some(list),
                    _ => None,
                })
                .flatten()
                .map(|n| (DelegateKind::Attachs, *n)),
        )
        .collect();
    for (kind, name) in all {
        assert!(builtin_value(kind, name).is_some(), "{kind} {name}");
    }
}

#[test]
fn every_kernel_program_type_is_classified_beyond_nothing_but_unspec() {
    // A new program type must be given a class by hand: `unknown` is for newer kernels only.
    let d = Delegation {
        progs: Mask::ANY,
        ..parse("any", "none", "none", "any")
    };
    let c = Classifier {
        d: &d,
        caps: PERFMON,
        names: &names(),
    };
    for value in builtin_values(DelegateKind::Progs) {
        let item = c.item(DelegateKind::Progs, value);
        assert_ne!(item.class, RiskClass::Unknown, "{}", item.name);
        assert_eq!(
            item.class == Nothing,
            item.name == "unspec",
            "{}",
            item.name
        );
        assert!(!item.grants.is_empty());
    }
}

#[test]
fn every_value_of_this_kernels_enums_is_classified() {
    // The running kernel's BTF, not the built-in table: a type added by a newer kernel fails
    // here first (the built-in table is checked against it in policy::tests).
    let kernel = EnumNames::for_running_kernel();
    assert!(
        matches!(kernel.source(), crate::policy::NameSource::KernelBtf(_)),
        "{}",
        kernel.source()
    );
    let d = parse("any", "any", "any", "any");
    let c = Classifier {
        d: &d,
        caps: PERFMON,
        names: kernel,
    };
    for kind in DelegateKind::ALL {
        for (name, value) in kernel.entries(kind) {
            let item = c.item(kind, value);
            assert_ne!(item.class, RiskClass::Unknown, "{kind} {name} ({value})");
        }
    }
}

#[test]
fn the_perfmon_set_is_the_kernels_is_perfmon_prog_type() {
    // kernel/bpf/syscall.c, is_perfmon_prog_type (6.18).
    let kernel: BTreeSet<&str> = [
        "kprobe",
        "tracepoint",
        "perf_event",
        "raw_tracepoint",
        "raw_tracepoint_writable",
        "tracing",
        "lsm",
        "struct_ops",
        "ext",
    ]
    .into();
    let ours: BTreeSet<&str> = PROGS
        .iter()
        .filter(|p| p.entry.requires.contains(&Capability::Perfmon))
        .map(|p| p.entry.name)
        .collect();
    assert_eq!(ours, kernel);
    assert_eq!(
        PERFMON_PROG_TYPES.iter().copied().collect::<BTreeSet<_>>(),
        kernel
    );
}

#[test]
fn the_net_admin_set_is_the_kernels_is_net_admin_prog_type_plus_cgroup_skb_attach() {
    // kernel/bpf/syscall.c, is_net_admin_prog_type (6.18), and cgroup_skb's attach check in
    // bpf_prog_attach_check_attach_type.
    let kernel: BTreeSet<&str> = [
        "sched_cls",
        "sched_act",
        "xdp",
        "lwt_in",
        "lwt_out",
        "lwt_xmit",
        "lwt_seg6local",
        "sk_skb",
        "sk_msg",
        "flow_dissector",
        "cgroup_device",
        "cgroup_sock",
        "cgroup_sock_addr",
        "cgroup_sockopt",
        "cgroup_sysctl",
        "sock_ops",
        "ext",
        "netfilter",
        "cgroup_skb",
    ]
    .into();
    let ours: BTreeSet<&str> = PROGS
        .iter()
        .filter(|p| p.entry.requires.contains(&Capability::NetAdmin))
        .map(|p| p.entry.name)
        .collect();
    assert_eq!(ours, kernel);
    // bpf_prog_load: CAP_BPF for everything but these two.
    let without_bpf: BTreeSet<&str> = PROGS
        .iter()
        .filter(|p| !p.entry.requires.contains(&Capability::Bpf))
        .map(|p| p.entry.name)
        .collect();
    assert_eq!(
        without_bpf,
        ["unspec", "socket_filter", "cgroup_skb"].into()
    );
}

#[test]
fn map_capabilities_are_map_creates() {
    // kernel/bpf/syscall.c, map_create's switch (6.18).
    let net_admin: BTreeSet<&str> = MAPS
        .iter()
        .filter(|e| e.requires.contains(&Capability::NetAdmin))
        .map(|e| e.name)
        .collect();
    assert_eq!(
        net_admin,
        ["sockmap", "sockhash", "devmap", "devmap_hash", "xskmap"].into()
    );
    let unprivileged: BTreeSet<&str> = MAPS
        .iter()
        .filter(|e| e.requires.is_empty())
        .map(|e| e.name)
        .collect();
    assert_eq!(
        unprivileged,
        [
            "unspec",
            "array",
            "percpu_array",
            "prog_array",
            "perf_event_array",
            "cgroup_array",
            "array_of_maps",
            "hash",
            "percpu_hash",
            "hash_of_maps",
            "ringbuf",
            "user_ringbuf",
            "cgroup_storage",
            "percpu_cgroup_storage",
        ]
        .into()
    );
    assert!(MAPS.iter().all(|e| e.class <= SandboxLocal));
}

#[test]
fn only_four_commands_take_a_token() {
    let token_cmds: BTreeSet<&str> = CMDS.iter().map(|e| e.name).collect();
    assert_eq!(
        token_cmds,
        ["map_create", "prog_load", "btf_load", "btf_get_fd_by_id"].into()
    );
    let risk = assess(
        &parse("any", "none", "none", "none"),
        CapsKept::DROPPED,
        &names(),
    );
    let any = item(&risk, DelegateKind::Cmds, "any");
    assert!(any.includes.is_empty(), "{any:?}");
    assert_eq!(any.opt_in, Some(SYS_ADMIN_FLAG));
    let risk = assess(
        &parse(
            "obj_pin:link_create:btf_get_fd_by_id",
            "none",
            "none",
            "none",
        ),
        CapsKept::DROPPED,
        &names(),
    );
    assert_eq!(
        item(&risk, DelegateKind::Cmds, "link_create").class,
        Nothing
    );
    let btf = item(&risk, DelegateKind::Cmds, "btf_get_fd_by_id");
    assert_eq!(
        (btf.class, btf.usable, btf.opt_in),
        (HostObservation, false, Some(SYS_ADMIN_FLAG))
    );
    assert_eq!(risk.verdict, Verdict::Confined);
    let kept = assess(
        &parse("btf_get_fd_by_id", "none", "none", "none"),
        CapsKept {
            perfmon: false,
            sys_admin: true,
        },
        &names(),
    );
    assert_eq!(kept.verdict, Verdict::HostObservation);
}

#[test]
fn the_default_demo_policy_is_confined_and_says_nothing() {
    let risk = assess(&default_policy(), CapsKept::DROPPED, &names());
    assert_eq!(risk.verdict, Verdict::Confined);
    for kind in DelegateKind::ALL {
        for i in risk.items(kind) {
            assert_eq!(i.class, SandboxLocal, "{i:?}");
            assert!(i.usable, "{i:?}");
        }
    }
    assert!(risk.warnings.is_empty(), "{:?}", risk.warnings);
    assert!(risk.refusal.is_none());
    assert!(risk.lines().is_empty());
    assert_eq!(risk.helpers_needing_perfmon, PERFMON_HELPERS);
    assert_eq!(
        item(&risk, DelegateKind::Attachs, "xdp").grants,
        "xdp on an interface; lets xdp load"
    );
    assert_eq!(
        check(&default_policy(), CapsKept::DROPPED, &names()),
        Ok(Vec::new())
    );
}

#[test]
fn the_default_policy_with_perfmon_kept_reads_kernel_memory() {
    for caps in [
        PERFMON,
        CapsKept {
            perfmon: false,
            sys_admin: true,
        },
    ] {
        let risk = assess(&default_policy(), caps, &names());
        assert_eq!(risk.verdict, Verdict::KernelMemoryRead, "{caps:?}");
        assert_eq!(risk.perfmon_grants, Some(PERFMON_GRANTS));
        assert!(risk.helpers_needing_perfmon.is_empty());
        assert_eq!(risk.warnings.len(), 1, "{:?}", risk.warnings);
        assert_eq!(risk.warnings[0].kind, WarningKind::KernelMemoryRead);
        assert!(
            risk.warnings[0].message.contains("bpf_probe_read_kernel"),
            "{}",
            risk.warnings[0]
        );
    }
}

#[test]
fn raw_tracepoint_is_refused_without_the_opt_in_and_allowed_with_it() {
    let d = parse(
        "prog_load",
        "none",
        "xdp:raw_tracepoint",
        "trace_raw_tp:xdp",
    );
    let refusal = check(&d, CapsKept::DROPPED, &names()).unwrap_err();
    assert_eq!(refusal.prog_types, ["raw_tracepoint"]);
    assert_eq!(refusal.flag, "--cap-add perfmon");
    let text = refusal.to_string();
    for part in [
        "--delegate-progs: raw_tracepoint cannot load without CAP_PERFMON",
        "(bpf_prog_load: EPERM unless the loader has CAP_PERFMON or CAP_SYS_ADMIN in the token's user namespace)",
        "which the command does not keep; add --cap-add perfmon (",
        "read kernel memory",
        "leave it out of the delegation",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
    let warnings = check(&d, PERFMON, &names()).unwrap();
    let kinds: Vec<WarningKind> = warnings.iter().map(|w| w.kind).collect();
    assert_eq!(
        kinds,
        [WarningKind::KernelMemoryRead, WarningKind::HostWide],
        "{warnings:?}"
    );
    assert!(
        warnings[1]
            .message
            .starts_with("delegate_progs raw_tracepoint (host-wide): ")
    );
    // CAP_SYS_ADMIN passes the kernel's CAP_PERFMON checks too (bpf_ns_capable).
    let sys_admin = CapsKept {
        perfmon: false,
        sys_admin: true,
    };
    assert!(check(&d, sys_admin, &names()).is_ok());
}

#[test]
fn every_perfmon_type_is_refused_by_name_in_enum_order() {
    let d = parse(
        "prog_load",
        "none",
        "ext:lsm:kprobe:xdp:struct_ops:tracing:raw_tracepoint_writable:tracepoint:perf_event:raw_tracepoint",
        "any",
    );
    let refusal = check(&d, CapsKept::DROPPED, &names()).unwrap_err();
    assert_eq!(
        refusal.prog_types,
        [
            "kprobe",
            "tracepoint",
            "perf_event",
            "raw_tracepoint",
            "raw_tracepoint_writable",
            "tracing",
            "struct_ops",
            "ext",
            "lsm"
        ]
    );
    assert!(refusal.to_string().contains("leave them out"), "{refusal}");
}

#[test]
fn any_gives_a_warning_not_a_refusal() {
    let d = parse("any", "any", "any", "any");
    let warnings = check(&d, CapsKept::DROPPED, &names()).unwrap();
    let w = &warnings[0];
    assert_eq!(w.kind, WarningKind::PerfmonTypesUnloadable);
    assert_eq!(w.items, PERFMON_PROG_TYPES);
    assert!(
        w.message
            .starts_with("delegate_progs=any: kprobe, tracepoint,")
            && w.message.contains("--cap-add perfmon"),
        "{w}"
    );
    let risk = assess(&d, CapsKept::DROPPED, &names());
    let any = item(&risk, DelegateKind::Progs, "any");
    assert_eq!(any.class, HostWide);
    assert_eq!(any.opt_in, Some(PERFMON_FLAG));
    // The cgroup types stay inside (their host cgroups are covered): lirc_mode2 drives a host
    // device.
    assert_eq!(any.includes, ["lirc_mode2"], "{any:?}");
    assert!(
        !any.includes.contains(&"raw_tracepoint".to_owned()),
        "{any:?}"
    );
    assert_eq!(risk.verdict, Verdict::HostWide);
    assert_eq!(risk.delegate_attachs.len(), 1);
    assert_eq!(risk.delegate_attachs[0].class, HostWide);
    assert!(risk.delegate_attachs[0].includes.is_empty());
    let kept = assess(&d, PERFMON, &names());
    assert_eq!(kept.verdict, Verdict::KernelMemoryRead);
    assert!(
        item(&kept, DelegateKind::Progs, "any")
            .includes
            .contains(&"raw_tracepoint".to_owned())
    );
    assert!(check(&d, PERFMON, &names()).is_ok());
}

#[test]
fn every_known_bit_counts_as_any() {
    let n = names();
    let mut d = parse("any", "none", "none", "any");
    d.progs = n.known_mask(DelegateKind::Progs);
    assert!(check(&d, CapsKept::DROPPED, &n).is_ok());
    let risk = assess(&d, CapsKept::DROPPED, &n);
    assert_eq!(risk.delegate_progs.len(), 1);
    assert_eq!(risk.delegate_progs[0].name, "any");
}

#[test]
fn cgroup_program_types_reach_host_cgroups_only_when_sys_admin_is_kept() {
    let d = parse(
        "map_create:prog_load",
        "array",
        "cgroup_sysctl:cgroup_skb",
        "cgroup_sysctl:cgroup_inet_egress",
    );
    // By default the sandbox's copies of the host's cgroup2 mounts are covered and the
    // command cannot uncover them.
    let risk = assess(&d, CapsKept::DROPPED, &names());
    let sysctl = item(&risk, DelegateKind::Progs, "cgroup_sysctl");
    assert!(sysctl.usable);
    assert_eq!(sysctl.class, SandboxLocal, "{sysctl:?}");
    assert!(sysctl.grants.contains(COVERED_CGROUPS), "{sysctl:?}");
    assert_eq!(
        item(&risk, DelegateKind::Attachs, "cgroup_inet_egress").class,
        SandboxLocal
    );
    assert_eq!(risk.verdict, Verdict::Confined, "{risk:#?}");
    // With CAP_SYS_ADMIN the command can unmount the covers or mount a cgroup2 of its own.
    let sys_admin = CapsKept {
        perfmon: false,
        sys_admin: true,
    };
    let risk = assess(&d, sys_admin, &names());
    let sysctl = item(&risk, DelegateKind::Progs, "cgroup_sysctl");
    assert_eq!(sysctl.class, HostWide);
    assert!(sysctl.grants.contains(CGROUP_REACH), "{sysctl:?}");
    assert_eq!(
        item(&risk, DelegateKind::Attachs, "cgroup_inet_egress").class,
        HostWide
    );
    let hosts: Vec<&str> = risk
        .warnings
        .iter()
        .filter(|w| w.kind == WarningKind::HostWide)
        .flat_map(|w| w.items.iter().map(String::as_str))
        .collect();
    assert_eq!(hosts, ["cgroup_skb", "cgroup_sysctl"]);
}

#[test]
fn the_libbpf_probe_policy_is_confined() {
    // libbpf probes with a socket_filter loaded with attach type 0 and an array map.
    let d = parse(
        "map_create:prog_load:btf_load",
        "array",
        "socket_filter:xdp",
        "cgroup_inet_ingress:xdp",
    );
    let risk = assess(&d, CapsKept::DROPPED, &names());
    assert_eq!(risk.verdict, Verdict::Confined, "{risk:#?}");
    let ingress = item(&risk, DelegateKind::Attachs, "cgroup_inet_ingress");
    assert_eq!(ingress.class, SandboxLocal);
    assert!(
        ingress.grants.ends_with("lets socket_filter, xdp load"),
        "{ingress:?}"
    );
    assert!(risk.warnings.is_empty(), "{:?}", risk.warnings);
}

#[test]
fn items_that_cannot_take_effect_say_why() {
    let d = parse("prog_load", "array", "cgroup_skb:xdp", "xdp:trace_iter");
    let risk = assess(&d, CapsKept::DROPPED, &names());
    let skb = item(&risk, DelegateKind::Progs, "cgroup_skb");
    assert!(!skb.usable);
    assert_eq!(
        skb.note.as_deref(),
        Some(
            "no delegated attach type lets it load: it loads with cgroup_inet_ingress, cgroup_inet_egress (the token checks the expected attach type)"
        )
    );
    assert_eq!(
        item(&risk, DelegateKind::Maps, "array").note.as_deref(),
        Some("map_create is not delegated")
    );
    // trace_iter only labels an XDP program here: xdp's class.
    assert_eq!(
        item(&risk, DelegateKind::Attachs, "trace_iter").class,
        SandboxLocal
    );
    assert_eq!(risk.verdict, Verdict::Confined);
    let unusable: Vec<&str> = risk
        .warnings
        .iter()
        .filter(|w| w.kind == WarningKind::Unusable)
        .map(|w| w.items[0].as_str())
        .collect();
    assert_eq!(unusable, ["array", "cgroup_skb"]);
    let no_loader = assess(
        &parse(
            "prog_load",
            "none",
            "cgroup_skb",
            "cgroup_inet_egress:sk_lookup",
        ),
        CapsKept::DROPPED,
        &names(),
    );
    let lookup = item(&no_loader, DelegateKind::Attachs, "sk_lookup");
    assert_eq!(
        (lookup.class, lookup.usable, lookup.note.as_deref()),
        (
            Nothing,
            false,
            Some("no delegated program type loads with it")
        )
    );
    let none = assess(
        &parse("none", "none", "xdp", "xdp"),
        CapsKept::DROPPED,
        &names(),
    );
    assert_eq!(
        item(&none, DelegateKind::Progs, "xdp").note.as_deref(),
        Some("prog_load is not delegated")
    );
}

#[test]
fn the_report_serializes_with_kernel_capability_names_and_kebab_case() {
    let d = parse("prog_load", "none", "xdp:raw_tracepoint", "xdp");
    let risk = assess(&d, CapsKept::DROPPED, &names());
    let json = serde_json::to_value(&risk).unwrap();
    assert_eq!(json["verdict"], "confined");
    assert_eq!(json["caps_kept"]["perfmon"], false);
    let raw = &json["delegate_progs"][1];
    assert_eq!(raw["name"], "raw_tracepoint");
    assert_eq!(raw["class"], "host-wide");
    assert_eq!(
        raw["requires"],
        serde_json::json!(["CAP_BPF", "CAP_PERFMON"])
    );
    assert_eq!(raw["opt_in"], "--cap-add perfmon");
    assert_eq!(raw["usable"], false);
    assert_eq!(json["refusal"]["prog_types"][0], "raw_tracepoint");
    assert_eq!(json["refusal"]["flag"], "--cap-add perfmon");
    assert!(json["delegate_progs"][0].get("note").is_none());
}

#[test]
fn unknown_bits_of_a_newer_kernel_are_assumed_host_wide() {
    let mut d = default_policy();
    d.progs = d.progs.with(40);
    let risk = assess(&d, CapsKept::DROPPED, &names());
    let unknown = &risk.delegate_progs[1];
    assert_eq!(unknown.name, "0x10000000000");
    assert_eq!(unknown.class, RiskClass::Unknown);
    assert_eq!(risk.verdict, Verdict::HostWide);
    assert!(risk.warnings.iter().any(|w| w.kind == WarningKind::Unknown));
}

#[test]
fn lines_for_people_name_the_item_the_class_and_what_it_grants() {
    let d = parse(
        "map_create:prog_load:btf_get_fd_by_id",
        "array",
        "xdp:lirc_mode2:raw_tracepoint",
        "xdp:lirc_mode2",
    );
    let lines = assess(&d, CapsKept::DROPPED, &names()).lines();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert!(
        lines[0].starts_with("--delegate-progs: raw_tracepoint cannot load without CAP_PERFMON")
    );
    assert!(lines[1].starts_with(
        "delegate_cmds btf_get_fd_by_id: not usable: the kernel requires CAP_SYS_ADMIN"
    ));
    assert!(
        lines[2].starts_with("delegate_progs lirc_mode2 (host-wide): "),
        "{lines:#?}"
    );
    assert_eq!(lines[3], "verdict: host-wide");
}
