use std::path::Path;

use super::*;
use crate::policy::{AnnotatedEntry, AnnotatedPolicy, PolicyFile};

fn names() -> EnumNames {
    EnumNames::builtin()
}

fn item(kind: DelegateKind, name: &str) -> PolicyItem {
    PolicyItem {
        kind,
        value: names().value_of(kind, name).unwrap(),
    }
}

/// A decoded call as a loader of `size` bytes makes it.
fn call(cmd: u32, fields: &[(usize, u32)], size: u32) -> BpfCall {
    let mut attr = vec![0u8; size as usize];
    for (offset, value) in fields {
        attr[*offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }
    BpfCall::decode(cmd, &attr, size).unwrap()
}

fn map_create(map_type: &str) -> BpfCall {
    let value = names().value_of(DelegateKind::Maps, map_type).unwrap();
    call(0, &[(0, value)], 152)
}

fn prog_load(prog_type: &str, attach: u32) -> BpfCall {
    let value = names().value_of(DelegateKind::Progs, prog_type).unwrap();
    call(5, &[(0, value), (68, attach)], 152)
}

fn named(pid: i32) -> impl FnOnce() -> (Option<String>, Option<String>) {
    move || {
        (
            Some(format!("loader{pid}")),
            Some(format!("/bin/loader{pid}")),
        )
    }
}

/// What aya 0.14 asks for loading the XDP counter without CAP_PERFMON: its probes and the
/// counter's own calls.
fn aya_like_log() -> CallLog {
    let xdp = names().value_of(DelegateKind::Attachs, "xdp").unwrap();
    let mut log = CallLog::default();
    log.record(&call(18, &[], 152), 2, named(2));
    log.record(&map_create("array"), 2, named(2));
    log.record(&map_create("cpumap"), 2, named(2));
    log.record(&prog_load("socket_filter", 0), 2, named(2));
    log.record(&prog_load("kprobe", 0), 2, named(2));
    log.record(&prog_load("xdp", xdp), 2, named(2));
    log.record(&map_create("array"), 2, named(2));
    log
}

#[test]
fn a_log_keeps_each_kind_once_with_counts_callers_and_names() {
    let mut log = CallLog::default();
    let mut with_name = map_create("array");
    with_name.name = Some("COUNTER".to_owned());
    let mut named_calls = 0;
    for pid in [2, 2, 3, 2] {
        log.record(&with_name, pid, || {
            named_calls += 1;
            (Some("aya".to_owned()), None)
        });
    }
    assert_eq!(named_calls, 2, "each caller is named once per kind");
    let kind = &log.kinds()[0];
    assert_eq!((kind.calls, kind.carried_token), (4, 0));
    assert_eq!(kind.names, ["COUNTER"]);
    assert_eq!(
        kind.callers.iter().map(|c| c.pid).collect::<Vec<_>>(),
        [2, 3]
    );
    assert!(!log.wants_caller(&with_name, 3));
    assert!(log.wants_caller(&with_name, 4));
    assert!(log.wants_caller(&map_create("hash"), 2));
}

#[test]
fn calls_carrying_their_own_token_are_logged_too() {
    let mut log = CallLog::default();
    // BPF_F_TOKEN_FD in map_flags, a token at map_token_fd: a token-aware loader.
    let aware = call(0, &[(0, 2), (16, 1 << 16), (76, 5)], 152);
    assert!(aware.carries_token());
    log.record(&aware, 2, named(2));
    log.record(&aware, 2, named(2));
    assert_eq!(log.kinds()[0].carried_token, 2);
    let learned = log.learn(CapsKept::DROPPED, &names());
    assert_eq!(
        learned.items,
        [
            item(DelegateKind::Cmds, "map_create"),
            item(DelegateKind::Maps, "array")
        ]
    );
    assert!(
        log.kinds()[0]
            .describe(&names())
            .ends_with("2 calls, already carrying a token")
    );
}

#[test]
fn the_log_is_bounded() {
    let mut log = CallLog::default();
    for map_type in 0..(MAX_KINDS as u32 + 10) {
        log.record(&call(0, &[(0, map_type)], 152), 2, named(2));
    }
    assert_eq!(log.kinds().len(), MAX_KINDS);
    assert_eq!(log.unrecorded(), 10);
    assert_eq!(log.calls(), MAX_KINDS as u64 + 10);
    let long = "x".repeat(1000);
    let mut log = CallLog::default();
    for pid in 0..10 {
        log.record(&map_create("array"), pid, || (Some(long.clone()), None));
    }
    assert_eq!(log.kinds()[0].callers.len(), MAX_CALLERS);
    assert!(
        log.kinds()[0].callers[0]
            .comm
            .as_ref()
            .unwrap()
            .chars()
            .count()
            <= MAX_TEXT + 1
    );
}

#[test]
fn the_json_form_round_trips_and_hostile_logs_are_refused() {
    let log = aya_like_log();
    let text = log.to_json().to_string();
    assert_eq!(CallLog::from_json(text.as_bytes()).unwrap(), Some(log));
    let without = CallLog::json_without_gateway().to_string();
    assert_eq!(CallLog::from_json(without.as_bytes()).unwrap(), None);
    for (bad, says) in [
        ("not json", "not JSON"),
        (r#"{"version":2,"gateway":true}"#, "version"),
        (r#"{"version":1}"#, "gateway ran"),
        (
            r#"{"version":1,"gateway":true,"kinds":[{"command":1}],"unrecorded":0}"#,
            "takes no token",
        ),
        (
            r#"{"version":1,"gateway":true,"kinds":[{"command":0,"map_type":null,"prog_type":6,"expected_attach_type":null}],"unrecorded":0}"#,
            "wrong types",
        ),
        (
            r#"{"version":1,"gateway":true,"kinds":[{"command":0,"map_type":4294967296,"prog_type":null,"expected_attach_type":null}],"unrecorded":0}"#,
            "not a number",
        ),
    ] {
        let err = CallLog::from_json(bad.as_bytes()).unwrap_err();
        assert!(err.contains(says), "{bad}: {err}");
    }
    let huge = vec![b' '; MAX_JSON + 1];
    assert!(CallLog::from_json(&huge).unwrap_err().contains("longer"));
    // Control characters a command put in its name are replaced on arrival.
    let sneaky = r#"{"version":1,"gateway":true,"kinds":[{"command":18,"map_type":null,"prog_type":null,"expected_attach_type":null,"token_field":true,"calls":1,"carried_token":0,"callers":[{"pid":2,"comm":"a\nmaps = \"any\"","argv0":null}],"names":[]}],"unrecorded":0}"#;
    let log = CallLog::from_json(sneaky.as_bytes()).unwrap().unwrap();
    assert_eq!(
        log.kinds()[0].callers[0].comm.as_deref(),
        Some("a?maps = \"any\"")
    );
}

#[test]
fn learning_adds_up_the_items_and_leaves_out_what_no_delegation_helps() {
    let log = aya_like_log();
    let learned = log.learn(CapsKept::DROPPED, &names());
    use DelegateKind::*;
    assert_eq!(
        learned.items,
        [
            item(Cmds, "map_create"),
            item(Cmds, "prog_load"),
            item(Cmds, "btf_load"),
            item(Maps, "array"),
            item(Maps, "cpumap"),
            item(Progs, "socket_filter"),
            item(Progs, "xdp"),
            item(Attachs, "cgroup_inet_ingress"),
            item(Attachs, "xdp"),
        ]
    );
    // kprobe needs CAP_PERFMON, which the command did not keep.
    assert_eq!(
        learned.hopeless,
        [(
            4,
            Hopeless::NeedsPerfmon {
                prog_type: item(Progs, "kprobe")
            }
        )]
    );
    // With CAP_PERFMON the kprobe load could work: it is learned.
    let with_perfmon = log.learn(
        CapsKept {
            perfmon: true,
            sys_admin: false,
        },
        &names(),
    );
    assert!(with_perfmon.items.contains(&item(Progs, "kprobe")));
    assert!(with_perfmon.hopeless.is_empty());
    // The counter's array map was asked for by one kind of call; attach type 0 by the
    // socket filter only (the kprobe could not load anyway).
    let askers: Vec<_> = log
        .askers(item(Attachs, "cgroup_inet_ingress"), &learned)
        .map(|k| k.shape.prog_type)
        .collect();
    assert_eq!(
        askers,
        [Some(names().value_of(Progs, "socket_filter").unwrap())]
    );
}

#[test]
fn short_attrs_and_unknown_values_are_never_learned() {
    let mut log = CallLog::default();
    // libbpf 1.1's 72-byte MAP_CREATE cannot carry a token.
    log.record(&call(0, &[(0, 2)], 72), 2, named(2));
    // A map type beyond every kernel's enum.
    log.record(&call(0, &[(0, 200)], 152), 2, named(2));
    let learned = log.learn(CapsKept::DROPPED, &names());
    assert!(learned.items.is_empty(), "{learned:?}");
    assert_eq!(learned.hopeless[0], (0, Hopeless::AttrTooShort));
    assert!(matches!(
        learned.hopeless[1],
        (1, Hopeless::UnknownValue { .. })
    ));
    assert!(
        Hopeless::AttrTooShort
            .explain(&names())
            .contains("libbpf >= 1.4")
    );
}

#[test]
fn uncovered_kinds_name_their_missing_items() {
    let log = aya_like_log();
    let learned = log.learn(CapsKept::DROPPED, &names());
    let without_socket_filter: Vec<PolicyItem> = learned
        .items
        .iter()
        .copied()
        .filter(|i| *i != item(DelegateKind::Progs, "socket_filter"))
        .collect();
    // The kprobe load is left out: no delegation helps it without CAP_PERFMON.
    let uncovered = log.uncovered(&delegation_of(&without_socket_filter), &learned);
    let missing: Vec<_> = uncovered.iter().map(|(_, m)| m.clone()).collect();
    assert_eq!(missing, [vec![item(DelegateKind::Progs, "socket_filter")]]);
}

#[test]
fn a_caller_is_shown_by_pid_comm_and_argv0() {
    let caller = |comm: Option<&str>, argv0: Option<&str>| NamedCaller {
        pid: 2,
        comm: comm.map(str::to_owned),
        argv0: argv0.map(str::to_owned),
    };
    assert_eq!(
        caller(Some("aya"), Some("/bin/aya-test")).to_string(),
        "pid 2 (aya, /bin/aya-test)"
    );
    assert_eq!(caller(Some("aya"), Some("aya")).to_string(), "pid 2 (aya)");
    assert_eq!(caller(None, None).to_string(), "pid 2");
    let log = aya_like_log();
    let xdp_load = &log.kinds()[5];
    assert_eq!(
        xdp_load.describe(&names()),
        "pid 2 (loader2, /bin/loader2): bpf(BPF_PROG_LOAD) for program type xdp, expected attach type xdp; 1 call"
    );
}

// The policy file writer.

fn annotated() -> AnnotatedPolicy {
    use DelegateKind::*;
    let entry = |kind, name, active, notes: &[&str]| AnnotatedEntry {
        item: item(kind, name),
        active,
        notes: notes.iter().map(|n| (*n).to_owned()).collect(),
    };
    AnnotatedPolicy {
        header: vec!["Delegation policy for: loader".to_owned(), String::new()],
        entries: vec![
            entry(Progs, "xdp", true, &["asked for by pid 2 (loader)"]),
            entry(
                Cmds,
                "prog_load",
                true,
                &["asked for by pid 2", "needed: run 3"],
            ),
            entry(Cmds, "map_create", true, &[]),
            entry(Maps, "array", true, &["asked for by pid 2"]),
            entry(
                Progs,
                "socket_filter",
                false,
                &["dropped by --minimize as optional"],
            ),
            entry(Attachs, "xdp", true, &[]),
            entry(Attachs, "cgroup_inet_ingress", false, &["optional"]),
        ],
    }
}

#[test]
fn a_written_policy_reads_back_as_its_active_items() {
    let policy = annotated();
    let text = policy.render(&names());
    let read = PolicyFile::parse(Path::new("learned.toml"), &text, &names()).unwrap();
    assert_eq!(read.delegation, policy.delegation());
    let expected = Delegation {
        cmds: names()
            .parse(DelegateKind::Cmds, "map_create:prog_load")
            .unwrap(),
        maps: names().parse(DelegateKind::Maps, "array").unwrap(),
        progs: names().parse(DelegateKind::Progs, "xdp").unwrap(),
        attachs: names().parse(DelegateKind::Attachs, "xdp").unwrap(),
    };
    assert_eq!(read.delegation, expected);
}

#[test]
fn a_written_policy_has_every_key_its_comments_and_the_left_out_items() {
    let text = annotated().render(&names());
    assert_eq!(
        text,
        r#"# Delegation policy for: loader
#

cmds = [
    "map_create",
    # asked for by pid 2
    # needed: run 3
    "prog_load",
]
maps = [
    # asked for by pid 2
    "array",
]
progs = [
    # dropped by --minimize as optional
    # "socket_filter",
    # asked for by pid 2 (loader)
    "xdp",
]
attachs = [
    # optional
    # "cgroup_inet_ingress",
    "xdp",
]
"#
    );
    let empty = AnnotatedPolicy::default().render(&names());
    assert_eq!(empty, "cmds = []\nmaps = []\nprogs = []\nattachs = []\n");
    let read = PolicyFile::parse(Path::new("empty.toml"), &empty, &names()).unwrap();
    assert!(read.delegation.is_empty());
}

#[test]
fn comments_cannot_become_keys() {
    let mut policy = annotated();
    // A comm the command chose, with a newline and a key after it.
    policy.entries[0].notes = vec!["asked for by pid 2 (x\rmaps = \"any\"\u{1b}[2J)".to_owned()];
    policy.header = vec!["line one\nline two".to_owned()];
    let text = policy.render(&names());
    assert!(text.starts_with("# line one\n# line two\n"), "{text}");
    assert!(
        text.contains("# asked for by pid 2 (x?maps = \"any\"?[2J)\n"),
        "{text}"
    );
    let read = PolicyFile::parse(Path::new("learned.toml"), &text, &names()).unwrap();
    assert_eq!(read.delegation, policy.delegation());
}

#[test]
fn every_kind_and_every_name_of_this_table_round_trips() {
    let n = names();
    let entries: Vec<AnnotatedEntry> = DelegateKind::ALL
        .into_iter()
        .flat_map(|kind| {
            n.entries(kind)
                .filter(|(_, value)| *value < 64)
                .map(move |(_, value)| AnnotatedEntry {
                    item: PolicyItem { kind, value },
                    active: true,
                    notes: vec![format!("value {value}")],
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let policy = AnnotatedPolicy {
        header: vec![],
        entries,
    };
    let text = policy.render(&n);
    let read = PolicyFile::parse(Path::new("all.toml"), &text, &n).unwrap();
    assert_eq!(read.delegation, policy.delegation());
    for kind in DelegateKind::ALL {
        assert_eq!(read.delegation.get(kind), n.known_mask(kind), "{kind}");
    }
}
