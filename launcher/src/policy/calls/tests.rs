use proptest::prelude::*;

use super::*;

/// Attrs as loaders build them: little-endian fields at the UAPI offsets, `size` bytes long.
struct Attr(Vec<u8>);

impl Attr {
    fn new(size: usize) -> Self {
        Self(vec![0; size])
    }
    fn u32(mut self, offset: usize, value: u32) -> Self {
        self.0[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
        self
    }
    fn name(mut self, offset: usize, name: &str) -> Self {
        self.0[offset..offset + name.len()].copy_from_slice(name.as_bytes());
        self
    }
    fn size(&self) -> u32 {
        self.0.len() as u32
    }
}

fn names() -> EnumNames {
    EnumNames::builtin()
}

fn value(kind: DelegateKind, name: &str) -> u32 {
    names().value_of(kind, name).unwrap()
}

fn item(kind: DelegateKind, name: &str) -> PolicyItem {
    PolicyItem {
        kind,
        value: value(kind, name),
    }
}

/// The default policy: what the demo counter needs.
fn counter_policy() -> Delegation {
    let n = names();
    Delegation {
        cmds: n
            .parse(DelegateKind::Cmds, "map_create:prog_load:btf_load")
            .unwrap(),
        maps: n.parse(DelegateKind::Maps, "array").unwrap(),
        progs: n.parse(DelegateKind::Progs, "xdp").unwrap(),
        attachs: n.parse(DelegateKind::Attachs, "xdp").unwrap(),
    }
}

#[test]
fn the_offsets_are_the_uapi_ones_from_the_facts_file() {
    use TokenCommand::*;
    assert_eq!(
        [MapCreate, ProgLoad, BtfLoad].map(|c| (c.flags_offset(), c.token_fd_offset())),
        [(16, 76), (44, 144), (32, 36)]
    );
    assert_eq!(
        TokenCommand::ALL.map(TokenCommand::size_for_token),
        [80, 148, 40]
    );
    assert_eq!(TokenCommand::ALL.map(TokenCommand::number), [0, 5, 18]);
    assert_eq!(
        TokenCommand::from_cmd(1),
        None,
        "MAP_LOOKUP_ELEM takes no token"
    );
    assert_eq!(TokenCommand::from_cmd(36), None, "TOKEN_CREATE");
}

#[test]
fn the_offsets_match_the_uapi_bindings() {
    use aya_obj::generated::{
        bpf_attr__bindgen_ty_1 as MapCreate, bpf_attr__bindgen_ty_4 as ProgLoad,
        bpf_attr__bindgen_ty_12 as BtfLoad,
    };
    use std::mem::offset_of;
    assert_eq!(offset_of!(MapCreate, map_flags), 16);
    assert_eq!(offset_of!(MapCreate, map_name), 28);
    assert_eq!(offset_of!(MapCreate, map_token_fd), 76);
    assert_eq!(offset_of!(ProgLoad, prog_flags), 44);
    assert_eq!(offset_of!(ProgLoad, prog_name), 48);
    assert_eq!(offset_of!(ProgLoad, expected_attach_type), 68);
    assert_eq!(offset_of!(ProgLoad, prog_token_fd), 144);
    assert_eq!(offset_of!(BtfLoad, btf_flags), 32);
    assert_eq!(offset_of!(BtfLoad, btf_token_fd), 36);
    assert_eq!(aya_obj::generated::BPF_F_TOKEN_FD, BPF_F_TOKEN_FD);
}

#[test]
fn an_aya_map_create_is_decoded_and_patched() {
    // aya 0.14 passes its whole 152-byte attr for every command.
    let attr = Attr::new(152)
        .u32(0, value(DelegateKind::Maps, "array"))
        .u32(4, 4)
        .u32(8, 16)
        .u32(12, 1)
        .u32(16, 0x400) // BPF_F_MMAPABLE
        .name(28, "COUNTER");
    let call = BpfCall::decode(0, &attr.0, attr.size()).unwrap();
    assert_eq!(call.command, TokenCommand::MapCreate);
    assert_eq!(call.map_type, Some(2));
    assert_eq!(call.name.as_deref(), Some("COUNTER"));
    assert!(!call.carries_token());
    assert!(call.reaches_token_field());
    assert_eq!(
        call.needs(),
        [
            item(DelegateKind::Cmds, "map_create"),
            item(DelegateKind::Maps, "array")
        ]
    );
    assert!(call.uncovered(&counter_policy()).is_empty());
    assert_eq!(Findings::gap(&call, &counter_policy()), None);
    let patch = call.token_patch(7).unwrap();
    // The token field first, then the flags with BPF_F_TOKEN_FD and the caller's own flags.
    assert_eq!(
        patch.writes,
        [
            (76, 7i32.to_le_bytes()),
            (16, (0x400 | BPF_F_TOKEN_FD).to_le_bytes())
        ]
    );
}

#[test]
fn libbpf_sizes_reach_the_token_field_from_1_4_on_only() {
    // libbpf 1.7: MAP_CREATE 92, PROG_LOAD 148, BTF_LOAD 40; libbpf 1.1: MAP_CREATE 72,
    // PROG_LOAD 64..144 (by the fields it sets), BTF_LOAD 32.
    for (cmd, size, reaches) in [
        (0, 92, true),
        (5, 148, true),
        (5, 168, true),
        (18, 40, true),
        (0, 72, false),
        (5, 64, false),
        (5, 144, false),
        (18, 32, false),
    ] {
        let attr = Attr::new(size);
        let call = BpfCall::decode(cmd, &attr.0, attr.size()).unwrap();
        assert_eq!(call.reaches_token_field(), reaches, "cmd {cmd} size {size}");
        assert_eq!(
            call.token_patch(3).is_some(),
            reaches,
            "cmd {cmd} size {size}"
        );
        if !reaches {
            assert_eq!(
                Findings::gap(&call, &Delegation::ANY),
                Some(Gap::AttrTooShort {
                    attr_size: size as u32
                }),
                "no delegation helps a call that cannot carry a token"
            );
        }
    }
}

#[test]
fn a_call_carrying_a_token_is_recognised() {
    let attr = Attr::new(40).u32(32, BPF_F_TOKEN_FD).u32(36, 5);
    let call = BpfCall::decode(18, &attr.0, attr.size()).unwrap();
    assert!(call.carries_token());
    assert_eq!(call.token_fd, 5);
    assert_eq!(call.needs(), [item(DelegateKind::Cmds, "btf_load")]);
}

#[test]
fn a_socket_filter_without_attach_type_needs_cgroup_inet_ingress() {
    // libbpf's and aya's probe: a trivial socket filter, expected attach type 0.
    let attr = Attr::new(148)
        .u32(0, value(DelegateKind::Progs, "socket_filter"))
        .u32(4, 2)
        .name(48, "probe");
    let call = BpfCall::decode(5, &attr.0, attr.size()).unwrap();
    assert_eq!(
        call.expected_attach_type,
        Some(value(DelegateKind::Attachs, "cgroup_inet_ingress"))
    );
    assert_eq!(
        call.uncovered(&counter_policy()),
        [
            item(DelegateKind::Progs, "socket_filter"),
            item(DelegateKind::Attachs, "cgroup_inet_ingress")
        ]
    );
    let n = names();
    assert_eq!(
        call.describe(&n),
        "bpf(BPF_PROG_LOAD) for program type socket_filter, expected attach type cgroup_inet_ingress, named \"probe\""
    );
    let xdp = Attr::new(148)
        .u32(0, value(DelegateKind::Progs, "xdp"))
        .u32(68, value(DelegateKind::Attachs, "xdp"));
    let call = BpfCall::decode(5, &xdp.0, xdp.size()).unwrap();
    assert!(call.uncovered(&counter_policy()).is_empty());
}

#[test]
fn the_kernels_attach_type_fixup_is_applied() {
    for (prog, attach) in [
        ("cgroup_sock", "cgroup_inet_sock_create"),
        ("sk_reuseport", "sk_reuseport_select"),
    ] {
        let attr = Attr::new(148).u32(0, value(DelegateKind::Progs, prog));
        let call = BpfCall::decode(5, &attr.0, attr.size()).unwrap();
        assert_eq!(
            call.expected_attach_type,
            Some(value(DelegateKind::Attachs, attach)),
            "{prog}"
        );
        // An explicit attach type is left alone.
        let attr = attr.u32(68, value(DelegateKind::Attachs, "cgroup_inet4_post_bind"));
        let call = BpfCall::decode(5, &attr.0, attr.size()).unwrap();
        assert_eq!(
            call.expected_attach_type,
            Some(value(DelegateKind::Attachs, "cgroup_inet4_post_bind"))
        );
    }
}

#[test]
fn bytes_beyond_the_callers_size_are_zero() {
    // The kernel copies only `size` bytes: garbage after them is not part of the call.
    let mut attr = Attr::new(168)
        .u32(0, value(DelegateKind::Progs, "xdp"))
        .u32(44, BPF_F_TOKEN_FD)
        .u32(68, 37)
        .u32(144, 9);
    attr.0[64..].iter_mut().for_each(|b| *b = 0xff);
    let call = BpfCall::decode(5, &attr.0, 64).unwrap();
    assert!(call.carries_token());
    assert_eq!(call.expected_attach_type, Some(0));
    assert_eq!(call.token_fd, 0);
    // And a short read (the caller's memory ended) reads as zero too.
    let call = BpfCall::decode(5, &attr.0[..10], 148).unwrap();
    assert_eq!(call.flags, 0);
    assert_eq!(BpfCall::bytes_to_read(TokenCommand::ProgLoad, 152), 148);
    assert_eq!(BpfCall::bytes_to_read(TokenCommand::MapCreate, 72), 72);
}

#[test]
fn commands_without_a_token_are_not_decoded() {
    assert_eq!(BpfCall::decode(1, &[0; 168], 168), None);
    assert_eq!(BpfCall::decode(28, &[0; 168], 168), None);
}

#[test]
fn values_beyond_the_mask_are_never_covered() {
    // bpf_token_allow_prog_type refuses prog_type >= MAX_BPF_PROG_TYPE even with `any`.
    let attr = Attr::new(148).u32(0, 70);
    let call = BpfCall::decode(5, &attr.0, attr.size()).unwrap();
    assert_eq!(
        call.uncovered(&Delegation::ANY),
        [PolicyItem {
            kind: DelegateKind::Progs,
            value: 70
        }]
    );
}

fn socket_filter_call() -> BpfCall {
    let attr = Attr::new(152).u32(0, value(DelegateKind::Progs, "socket_filter"));
    BpfCall::decode(5, &attr.0, attr.size()).unwrap()
}

#[test]
fn findings_explain_what_to_add_once_per_kind_of_call() {
    let policy = counter_policy();
    let mut findings = Findings::default();
    let caller = || Caller {
        pid: 2,
        comm: Some("aya-test".to_owned()),
    };
    let call = socket_filter_call();
    let gap = Findings::gap(&call, &policy).unwrap();
    assert!(!findings.contains(&call, &gap));
    assert!(findings.record(&call, gap.clone(), caller));
    assert!(findings.contains(&call, &gap));
    assert!(!findings.record(&call, gap, || unreachable!("the first caller is kept")));
    let short = Attr::new(72).u32(0, value(DelegateKind::Maps, "array"));
    let short = BpfCall::decode(0, &short.0, short.size()).unwrap();
    let gap = Findings::gap(&short, &policy).unwrap();
    assert!(findings.record(&short, gap, || Caller { pid: 9, comm: None }));
    let lines = findings.lines(&policy, &names(), CapsKept::DROPPED);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_eq!(
        lines[0],
        "bpf(BPF_PROG_LOAD) for program type socket_filter, expected attach type cgroup_inet_ingress, by pid 2 (aya-test) (2 such calls), was not covered by the delegation: add socket_filter to --delegate-progs and cgroup_inet_ingress to --delegate-attachs"
    );
    assert!(
        lines[1].starts_with("bpf(BPF_MAP_CREATE) for map type array, by pid 9, passed a bpf_attr of 72 bytes, too short to carry a token (80 needed)")
            && lines[1].ends_with("upgrade the loader (libbpf >= 1.4, bpftool >= 7.4)"),
        "{}",
        lines[1]
    );
    assert_eq!(
        lines[2],
        "a delegation covering every call above: --delegate-progs socket_filter:xdp --delegate-attachs cgroup_inet_ingress:xdp"
    );
    let json = findings.json(&names());
    assert_eq!(json[0]["missing"]["delegate_progs"][0], "socket_filter");
    assert_eq!(
        json[0]["missing"]["delegate_attachs"][0],
        "cgroup_inet_ingress"
    );
    assert_eq!(json[0]["calls"], 2);
    assert_eq!(json[0]["comm"], "aya-test");
    assert_eq!(json[1]["attr_too_short"]["needed"], 80);
    assert_eq!(json[1]["comm"], Value::Null);
}

#[test]
fn a_tracing_type_is_said_to_need_perfmon_unless_kept() {
    let attr = Attr::new(152)
        .u32(0, value(DelegateKind::Progs, "raw_tracepoint"))
        .u32(68, 0);
    let call = BpfCall::decode(5, &attr.0, attr.size()).unwrap();
    let mut findings = Findings::default();
    let gap = Findings::gap(&call, &counter_policy()).unwrap();
    findings.record(&call, gap, || Caller { pid: 2, comm: None });
    let without = findings.lines(&counter_policy(), &names(), CapsKept::DROPPED);
    assert!(without[0].contains("--cap-add perfmon"), "{without:?}");
    let with = findings.lines(
        &counter_policy(),
        &names(),
        CapsKept {
            perfmon: true,
            sys_admin: false,
        },
    );
    assert!(!with[0].contains("--cap-add perfmon"), "{with:?}");
}

#[test]
fn findings_stop_growing_at_their_bound() {
    let mut findings = Findings::default();
    for prog in 0..(MAX_FINDINGS as u32 + 10) {
        let attr = Attr::new(152).u32(0, prog);
        let call = BpfCall::decode(5, &attr.0, attr.size()).unwrap();
        let gap = Findings::gap(&call, &Delegation::default()).unwrap();
        findings.record(&call, gap, || Caller { pid: 2, comm: None });
    }
    assert_eq!(findings.iter().count(), MAX_FINDINGS);
}

proptest! {
    #[test]
    fn decoding_never_panics_and_patches_stay_inside_the_callers_attr(
        cmd in prop_oneof![Just(0u32), Just(5), Just(18), any::<u32>()],
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        size in 0u32..400,
    ) {
        if let Some(call) = BpfCall::decode(cmd, &bytes, size) {
            let needs = call.needs();
            prop_assert_eq!(needs[0].kind, DelegateKind::Cmds);
            if let Some(patch) = call.token_patch(4) {
                for (offset, _) in patch.writes {
                    prop_assert!(offset as u32 + 4 <= size);
                }
                prop_assert_eq!(patch.writes[0].0, call.command.token_fd_offset());
            } else {
                prop_assert!(size < call.command.size_for_token());
            }
        } else {
            prop_assert!(TokenCommand::from_cmd(cmd).is_none());
        }
    }
}

#[test]
fn perf_events_are_classified_by_type_with_the_kernels_probe_pmus() {
    let pmus = ProbePmus {
        kprobe: None,
        uprobe: Some(9),
    };
    let attr = |perf_type: u32, config: u64| {
        let mut bytes = Attr::new(PERF_ATTR_READ).u32(0, perf_type).0;
        bytes[8..16].copy_from_slice(&config.to_le_bytes());
        bytes
    };
    assert_eq!(
        PerfProbe::decode(&attr(2, 365), pmus),
        Some(PerfProbe::Tracepoint)
    );
    assert_eq!(
        PerfProbe::decode(&attr(9, 0), pmus),
        Some(PerfProbe::Uprobe)
    );
    // Software (1: PERF_COUNT_SW_CPU_CLOCK is config 0), hardware (0), breakpoints (5), raw
    // (4), and a type no PMU has: none is a probe, and an absent kprobe PMU matches nothing.
    for perf_type in [0, 1, 4, 5, 6, u32::MAX] {
        assert_eq!(
            PerfProbe::decode(&attr(perf_type, 0), pmus),
            None,
            "{perf_type}"
        );
    }
    let with_kprobe = ProbePmus {
        kprobe: Some(6),
        ..pmus
    };
    assert_eq!(
        PerfProbe::decode(&attr(6, 0), with_kprobe),
        Some(PerfProbe::Kprobe)
    );
    // Fewer bytes than `type`: nothing to say.
    assert_eq!(PerfProbe::decode(&[2, 0], pmus), None);
}

#[test]
fn probe_events_are_explained_once_per_kind_with_the_reason_and_the_link_to_use() {
    let mut findings = ProbeFindings::default();
    assert!(findings.is_empty());
    let caller = |pid| {
        move || Caller {
            pid,
            comm: Some("loader".into()),
        }
    };
    assert!(findings.record(PerfProbe::Tracepoint, caller(2)));
    assert!(!findings.record(PerfProbe::Tracepoint, caller(3)));
    assert!(findings.record(PerfProbe::Uprobe, caller(4)));
    assert!(findings.contains(PerfProbe::Uprobe));
    assert!(!findings.contains(PerfProbe::Kprobe));
    let lines = findings.lines(Some(2), CapsKept::DROPPED);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].starts_with(
            "perf_event_open of a tracepoint event, by pid 2 (loader) (2 such calls): a BPF token never grants this: the kernel checks CAP_PERFMON in the host's user namespace"
        ) && lines[0].contains("(EACCES in a sandbox, perf_event_paranoid=2)")
            && lines[0].contains("raw_tracepoint or tp_btf")
            && lines[0].ends_with("(loading them needs CAP_PERFMON: --cap-add perfmon)"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("perf_event_open of a uprobe event, by pid 4 (loader): ")
            && lines[1].contains("uprobe.multi")
            && lines[1].contains("trace_uprobe_multi"),
        "{}",
        lines[1]
    );
    // With CAP_PERFMON kept, no advice to keep it; without the sysctl, no number.
    let kept = CapsKept {
        perfmon: true,
        sys_admin: false,
    };
    let line = &findings.lines(None, kept)[0];
    assert!(
        !line.contains("--cap-add") && line.contains("(EACCES in a sandbox)"),
        "{line}"
    );
    let json = findings.json();
    assert_eq!(json[0]["perf_event"], "tracepoint");
    assert_eq!(json[0]["calls"], 2);
    assert_eq!(json[1]["pid"], 4);
}
