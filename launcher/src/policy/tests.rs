use std::path::Path;

use proptest::prelude::*;

use super::*;

fn builtin() -> EnumNames {
    EnumNames::builtin()
}

fn kernel() -> &'static EnumNames {
    let names = EnumNames::for_running_kernel();
    assert!(
        matches!(names.source(), NameSource::KernelBtf(_)),
        "this machine's kernel has BTF, but the names came from {}",
        names.source()
    );
    names
}

#[test]
fn names_are_case_insensitive_and_prefix_optional() {
    for n in [&builtin(), kernel()] {
        for text in [
            "xdp",
            "XDP",
            "Xdp",
            "BPF_PROG_TYPE_XDP",
            "bpf_prog_type_xdp",
        ] {
            assert_eq!(
                n.parse(DelegateKind::Progs, text),
                Ok(Mask(1 << 6)),
                "{text}"
            );
        }
        assert_eq!(n.parse(DelegateKind::Attachs, "BPF_XDP"), Ok(Mask(1 << 37)));
        assert_eq!(
            n.parse(DelegateKind::Maps, "BPF_MAP_TYPE_ARRAY"),
            Ok(Mask(1 << 2))
        );
    }
}

#[test]
fn every_name_in_this_kernels_btf_parses_to_its_value() {
    let n = kernel();
    for kind in DelegateKind::ALL {
        let mut count = 0;
        for (name, value) in n.entries(kind) {
            let expected = Ok(Mask(1 << value));
            assert_eq!(n.parse(kind, name), expected, "{kind} {name}");
            let prefixed = format!("{}{}", kind.kernel_prefix(), name.to_ascii_uppercase());
            assert_eq!(n.parse(kind, &prefixed), expected, "{kind} {prefixed}");
            count += 1;
        }
        assert!(count > 30, "{kind}: only {count} names in the kernel's BTF");
    }
}

#[test]
fn the_builtin_table_matches_this_kernel() {
    let (b, k) = (builtin(), kernel());
    for kind in DelegateKind::ALL {
        let built: Vec<(&str, u32)> = b.entries(kind).collect();
        let running: Vec<(&str, u32)> = k.entries(kind).collect();
        assert_eq!(built, running, "{kind}");
        assert_eq!(b.known_mask(kind), k.known_mask(kind), "{kind}");
    }
    assert_eq!(k.known_mask(DelegateKind::Cmds), Mask((1 << 38) - 1));
    assert_eq!(k.known_mask(DelegateKind::Attachs), Mask((1 << 58) - 1));
}

#[test]
fn a_missing_btf_file_is_an_error_and_the_fallback_says_why() {
    let err = EnumNames::from_btf_file(Path::new("/nonexistent/vmlinux")).unwrap_err();
    assert!(err.contains("/nonexistent/vmlinux"), "{err}");
    let shown = NameSource::Builtin { why: Some(err) }.to_string();
    assert!(shown.starts_with("built-in table"), "{shown}");
    assert!(shown.contains("could not be used"), "{shown}");
}

#[test]
fn both_separators_any_and_none() {
    let n = kernel();
    assert_eq!(
        n.parse(DelegateKind::Cmds, "map_create:prog_load,btf_load"),
        Ok(Mask(1 | 1 << 5 | 1 << 18))
    );
    assert_eq!(n.parse(DelegateKind::Cmds, "any"), Ok(Mask::ANY));
    assert_eq!(n.parse(DelegateKind::Cmds, "ANY"), Ok(Mask::ANY));
    assert_eq!(n.parse(DelegateKind::Cmds, "xdp:any").ok(), None);
    assert_eq!(n.parse(DelegateKind::Progs, "xdp:any"), Ok(Mask::ANY));
    assert_eq!(n.parse(DelegateKind::Maps, "none"), Ok(Mask::NONE));
}

#[test]
fn a_lone_number_is_the_mask_if_the_kernel_knows_its_bits() {
    let n = kernel();
    assert_eq!(n.parse(DelegateKind::Maps, "0x4"), Ok(Mask(4)));
    assert_eq!(n.parse(DelegateKind::Maps, "010"), Ok(Mask(8)));
    assert_eq!(n.parse(DelegateKind::Maps, "12"), Ok(Mask(12)));
    assert_eq!(
        n.parse(DelegateKind::Maps, "0xffffffffffffffff"),
        Ok(Mask::ANY)
    );
    assert!(matches!(
        n.parse(DelegateKind::Maps, "0xzz"),
        Err(PolicyError::BadNumber { .. })
    ));
    let err = n.parse(DelegateKind::Cmds, "0x8000000001").unwrap_err();
    assert!(matches!(err, PolicyError::UnknownBits { .. }), "{err}");
    assert!(
        err.to_string().contains(
            "sets bit(s) 39 that this kernel's `enum bpf_cmd` has no value for (it knows 0..37)"
        ),
        "{err}"
    );
}

#[test]
fn numbers_mixed_with_names_are_refused_with_the_trap_explained() {
    for value in ["hash:0x4", "0x4:hash", "array,3"] {
        let err = kernel().parse(DelegateKind::Maps, value).unwrap_err();
        assert!(
            matches!(err, PolicyError::NumberMixedWithNames { .. }),
            "{value}: {err}"
        );
        assert!(
            err.to_string().contains("`hash:0x4` means just `array`"),
            "{err}"
        );
    }
}

#[test]
fn unknown_names_get_a_suggestion_and_name_the_set() {
    let err = kernel().parse(DelegateKind::Progs, "xdpp").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("--delegate-progs \"xdpp\": unknown program type"),
        "{text}"
    );
    assert!(text.contains("running kernel's BTF"), "{text}");
    assert!(text.contains("did you mean `xdp`?"), "{text}");
    let err = kernel().parse(DelegateKind::Cmds, "prog_lod").unwrap_err();
    assert!(
        err.to_string().contains("did you mean `prog_load`?"),
        "{err}"
    );
    let err = kernel()
        .parse(DelegateKind::Maps, "qqqqqqqqqqqq")
        .unwrap_err();
    assert!(!err.to_string().contains("did you mean"), "{err}");
}

#[test]
fn empty_values_and_items_are_refused() {
    let n = kernel();
    assert!(matches!(
        n.parse(DelegateKind::Maps, ""),
        Err(PolicyError::Empty { .. })
    ));
    assert!(matches!(
        n.parse(DelegateKind::Maps, "array::hash"),
        Err(PolicyError::EmptyItem { .. })
    ));
}

#[test]
fn render_uses_enum_order_and_the_first_alias() {
    let n = kernel();
    let mask = n
        .parse(DelegateKind::Cmds, "btf_load:prog_run:map_create")
        .unwrap();
    assert_eq!(
        n.render(DelegateKind::Cmds, mask),
        "map_create:prog_test_run:btf_load"
    );
    assert_eq!(n.render(DelegateKind::Cmds, Mask::ANY), "any");
    assert_eq!(
        n.render(DelegateKind::Maps, Mask(1 << 63)),
        "0x8000000000000000"
    );
}

#[test]
fn mounted_form_follows_the_kernel() {
    let n = kernel();
    let kind = DelegateKind::Cmds;
    assert_eq!(n.render_as_mounted(kind, Mask::NONE), None);
    assert_eq!(n.render_as_mounted(kind, Mask::ANY).as_deref(), Some("any"));
    // Every known value is `any` even when not all 64 bits are set.
    assert_eq!(
        n.render_as_mounted(kind, n.known_mask(kind)).as_deref(),
        Some("any")
    );
    // Unknown bits are dropped.
    assert_eq!(
        n.render_as_mounted(kind, Mask(1 | 1 << 60)).as_deref(),
        Some("map_create")
    );
    assert_eq!(n.as_token_shows(kind, n.known_mask(kind)), Mask::ANY);
    assert_eq!(n.as_token_shows(kind, Mask(1 | 1 << 60)), Mask(1 | 1 << 60));
}

#[test]
fn check_mounted_reports_each_difference() {
    let n = kernel();
    let asked = least_privilege_for_elf(crate::counter::COUNTER_OBJECT).unwrap();
    let good = "rw,relatime,delegate_cmds=map_create:prog_load:btf_load,delegate_maps=array,delegate_progs=xdp,delegate_attachs=xdp";
    assert_eq!(asked.check_mounted(good, n), Ok(()));
    let err = asked
        .check_mounted(
            "rw,delegate_cmds=map_create:prog_load:btf_load,delegate_maps=any,delegate_progs=xdp",
            n,
        )
        .unwrap_err();
    assert_eq!(err.differences.len(), 2, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("delegate_maps expected `array`, mountinfo shows `any`"),
        "{text}"
    );
    assert!(
        text.contains("delegate_attachs expected `xdp`, mountinfo shows nothing"),
        "{text}"
    );
    assert!(
        asked
            .check_mounted("rw", n)
            .unwrap_err()
            .to_string()
            .contains("delegate_cmds expected `map_create:prog_load:btf_load`")
    );
}

#[test]
fn the_counter_needs_exactly_its_four_sets() {
    let n = kernel();
    let d = least_privilege_for_elf(crate::counter::COUNTER_OBJECT).unwrap();
    let options: Vec<String> = d
        .fsconfig_options(n)
        .into_iter()
        .map(|(k, v)| format!("{}={v}", k.option()))
        .collect();
    assert_eq!(
        options,
        [
            "delegate_cmds=map_create:prog_load:btf_load",
            "delegate_maps=array",
            "delegate_progs=xdp",
            "delegate_attachs=xdp"
        ]
    );
    assert_eq!(
        d.flags(n).join(" "),
        "--delegate-cmds map_create:prog_load:btf_load --delegate-maps array --delegate-progs xdp --delegate-attachs xdp"
    );
}

#[test]
fn least_privilege_of_needs_without_maps_or_attach_types() {
    use crate::bpf::object::{ObjectNeeds, ProgramSpec};
    use aya_obj::generated::bpf_prog_type;
    let needs = ObjectNeeds {
        has_maps: false,
        has_btf: false,
        map_types: vec![],
        programs: vec![(
            "filter".to_owned(),
            ProgramSpec {
                prog_type: bpf_prog_type::BPF_PROG_TYPE_SOCKET_FILTER,
                expected_attach_type: 0,
                prog_flags: 0,
            },
        )],
    };
    let d = least_privilege(&needs);
    let n = kernel();
    assert_eq!(n.render(DelegateKind::Cmds, d.cmds), "prog_load");
    assert!(d.maps.is_empty());
    assert_eq!(n.render(DelegateKind::Progs, d.progs), "socket_filter");
    // Attach type 0 is a real bit to a token.
    assert_eq!(
        n.render(DelegateKind::Attachs, d.attachs),
        "cgroup_inet_ingress"
    );
    assert!(d.flags(n).join(" ").contains("--delegate-maps none"));
}

#[test]
fn not_an_object_is_a_clear_error() {
    let err = least_privilege_for_elf(b"not an elf").unwrap_err();
    assert!(
        err.to_string().starts_with("not a loadable eBPF object"),
        "{err}"
    );
}

fn file(text: &str) -> Result<Delegation, String> {
    PolicyFile::parse(Path::new("p.toml"), text, kernel())
        .map(|f| f.delegation)
        .map_err(|e| e.to_string())
}

#[test]
fn policy_files_accept_both_value_forms() {
    let d = file(
        "# the counter\ncmds = \"map_create:prog_load:btf_load\"\nmaps = [\"array\"]\nprogs = [\"XDP\"]\nattachs = \"BPF_XDP\"\n",
    )
    .unwrap();
    assert_eq!(
        d,
        least_privilege_for_elf(crate::counter::COUNTER_OBJECT).unwrap()
    );
    let d = file("progs = \"any\"\n").unwrap();
    assert_eq!(d.progs, Mask::ANY);
    assert!(d.cmds.is_empty() && d.maps.is_empty() && d.attachs.is_empty());
}

#[test]
fn policy_file_errors_give_line_and_column() {
    assert_eq!(
        file("progs = \"xdp\"\nmaps = [\"array\", \"hashh\"]\n").unwrap_err(),
        "p.toml:2:18: maps: --delegate-maps \"hashh\": unknown map type (names from the running kernel's BTF (/sys/kernel/btf/vmlinux)); did you mean `hash`?"
    );
    let err = file("progs = \"xdp\"\n  programs = \"xdp\"\n").unwrap_err();
    assert!(
        err.starts_with("p.toml:2:3: unknown key `programs`"),
        "{err}"
    );
    let err = file("progs = 6\n").unwrap_err();
    assert!(
        err.starts_with("p.toml:1:9: progs: expected a string"),
        "{err}"
    );
    let err = file("progs = [\"xdp:kprobe\"]\n").unwrap_err();
    assert!(err.contains("one name per array element"), "{err}");
    let err = file("progs = \"xdp\n").unwrap_err();
    assert!(err.starts_with("p.toml:1:"), "{err}");
    let err = file("# nothing\n").unwrap_err();
    assert!(err.contains("would delegate nothing"), "{err}");
}

/// A random policy: each set is `any`, empty, or a random subset of this kernel's named values.
fn arb_delegation() -> impl Strategy<Value = Delegation> {
    let n = kernel();
    let set = move |kind: DelegateKind| {
        let values: Vec<u32> = n.entries(kind).map(|(_, v)| v).collect();
        prop_oneof![
            1 => Just(Mask::ANY),
            1 => Just(Mask::NONE),
            8 => proptest::sample::subsequence(values.clone(), 0..=values.len())
                .prop_map(|vs| vs.into_iter().fold(Mask::NONE, Mask::with)),
        ]
    };
    (
        set(DelegateKind::Cmds),
        set(DelegateKind::Maps),
        set(DelegateKind::Progs),
        set(DelegateKind::Attachs),
    )
        .prop_map(|(cmds, maps, progs, attachs)| Delegation {
            cmds,
            maps,
            progs,
            attachs,
        })
}

proptest! {
    #[test]
    fn parse_render_parse_is_the_identity(d in arb_delegation()) {
        let n = kernel();
        for kind in DelegateKind::ALL {
            let mask = d.get(kind);
            let text = n.render_value(kind, mask);
            let parsed = n.parse(kind, &text).unwrap();
            prop_assert_eq!(parsed, mask);
            prop_assert_eq!(n.render_value(kind, parsed), text);
        }
    }

    #[test]
    fn the_flags_give_back_the_policy(d in arb_delegation()) {
        let n = kernel();
        let flags = d.flags(n);
        let mut back = Delegation::default();
        for pair in flags.chunks(2) {
            let kind = DelegateKind::ALL.into_iter().find(|k| k.flag() == pair[0]).unwrap();
            back.set(kind, n.parse(kind, &pair[1]).unwrap());
        }
        prop_assert_eq!(back, d);
    }

    #[test]
    fn the_mounted_form_reads_back_as_the_known_bits(d in arb_delegation()) {
        let n = kernel();
        let options: Vec<String> = d
            .as_mounted(n)
            .into_iter()
            .map(|(k, v)| format!("{}={v}", k.option()))
            .collect();
        let text = format!("rw,relatime,{}", options.join(","));
        let back = Delegation::from_mount_options(&text, n).unwrap();
        for kind in DelegateKind::ALL {
            prop_assert_eq!(back.get(kind).0, d.get(kind).0 & n.known_mask(kind).0);
        }
        prop_assert_eq!(d.check_mounted(&text, n), Ok(()));
    }

    #[test]
    fn a_number_after_names_is_always_refused(
        names in proptest::sample::subsequence(vec!["array", "hash", "ringbuf", "lru_hash"], 1..4),
        number in any::<u64>(),
        hex in any::<bool>(),
    ) {
        let item = if hex { format!("{number:#x}") } else { number.to_string() };
        let value = format!("{}:{item}", names.join(":"));
        let is_mixed = matches!(
            kernel().parse(DelegateKind::Maps, &value),
            Err(PolicyError::NumberMixedWithNames { .. })
        );
        prop_assert!(is_mixed);
    }

    #[test]
    fn parsing_never_panics(text in ".{0,64}") {
        for kind in DelegateKind::ALL {
            let _ = kernel().parse(kind, &text);
            let _ = kernel().parse_as_mounted(kind, &text);
        }
    }
}

#[test]
fn long_name_lists_are_split_into_values_fsconfig_accepts() {
    let n = kernel();
    let every_map = n
        .entries(DelegateKind::Maps)
        .fold(Mask::NONE, |m, (_, v)| m.with(v));
    let d = Delegation {
        maps: every_map,
        ..Delegation::default()
    };
    let options = d.fsconfig_options(n);
    assert!(options.len() > 1, "{options:?}");
    let mut back = Mask::NONE;
    for (kind, value) in &options {
        assert_eq!(*kind, DelegateKind::Maps);
        assert!(value.len() <= 255, "{} bytes: {value}", value.len());
        back = Mask(back.0 | n.parse(*kind, value).unwrap().0);
    }
    assert_eq!(back, every_map);
}
