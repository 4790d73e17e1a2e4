//! The delegation policy on the real kernel, as root: what the kernel shows after mounting and
//! in a token equals what we render; policy files, `--policy-from`, `--print-policy`, `--list`;
//! a kernel that ignores delegate options is caught.

mod support;

use std::path::PathBuf;
use std::process::Command;

use bpf_token_launcher::counter::COUNTER_OBJECT;
use bpf_token_launcher::policy::{DelegateKind, Delegation, EnumNames, Mask};
use support::{DEMO, TRACE, exclusive, run_clean, shared};

/// xorshift64*: random policies without a dependency; the seed is printed for reruns.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `any`, every named value, nothing, or a random subset (sparse or dense).
    fn set(&mut self, names: &EnumNames, kind: DelegateKind) -> Mask {
        let named = names.entries(kind).fold(Mask::NONE, |m, (_, v)| m.with(v));
        match self.next() % 10 {
            0 => Mask::ANY,
            1 => named,
            2 => Mask::NONE,
            3..=6 => Mask(named.0 & self.next() & self.next() & self.next()),
            _ => Mask(named.0 & self.next()),
        }
    }

    fn delegation(&mut self, names: &EnumNames) -> Delegation {
        let mut d = Delegation::default();
        for kind in DelegateKind::ALL {
            d.set(kind, self.set(names, kind));
        }
        if d.is_empty() {
            d.progs = Mask::NONE.with(6);
        }
        d
    }
}

fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("token-policy-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).expect("write temp file");
    path
}

/// The `delegate_*=...` options of the bpffs mounted at `path` in a mountinfo text.
fn mounted_options(mountinfo: &str, path: &str) -> Option<Vec<String>> {
    mountinfo
        .lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some(path) && l.contains(" - bpf "))
        .map(|l| {
            let options = l.rsplit(' ').next().unwrap_or("");
            options
                .split(',')
                .filter(|o| o.starts_with("delegate_"))
                .map(str::to_owned)
                .collect()
        })
}

#[test]
fn fifty_random_policies_show_in_mountinfo_and_the_token_exactly_as_rendered() {
    let _host = shared();
    let names = EnumNames::for_running_kernel();
    let trace = support::world_readable_copy(TRACE);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("random policies from seed {seed:#x}");
    let mut rng = Rng(seed);
    let script = format!(
        "cat /proc/self/mountinfo && echo '----' && exec {} --list --json",
        trace.path.display()
    );
    for i in 0..50 {
        let delegation = rng.delegation(names);
        let flags = delegation.flags(names);
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
        // Random sets name tracing program types, refused without the opt-in; this test is
        // about how any set is mounted and shown.
        args.extend(["--cap-add", "perfmon", "-v", "--", "sh", "-c", &script]);
        let run = run_clean(DEMO, &args);
        let context = format!("policy {i} (seed {seed:#x}): {flags:?}\n{run:#?}");
        assert_eq!(run.code, Some(0), "{context}");
        let (mountinfo, json) = run.stdout.split_once("----\n").expect(&context);

        let expected: Vec<String> = delegation
            .as_mounted(names)
            .into_iter()
            .map(|(kind, value)| format!("{}={value}", kind.option()))
            .collect();
        let shown = mounted_options(mountinfo, "/sys/fs/bpf").expect(&context);
        assert_eq!(shown, expected, "mountinfo, {context}");

        let list: serde_json::Value = serde_json::from_str(json).expect(&context);
        let entry = list
            .as_array()
            .and_then(|l| l.iter().find(|e| e["mount_point"] == "/sys/fs/bpf"))
            .expect(&context);
        assert_eq!(entry["token"]["created"], true, "{context}");
        let token_shows = delegation.as_token_shows(names);
        for kind in DelegateKind::ALL {
            assert_eq!(
                entry["token"][kind.fdinfo_key()],
                token_shows.get(kind).fdinfo_form().as_str(),
                "{} of the token, {context}",
                kind.fdinfo_key()
            );
        }
    }
}

#[test]
fn a_policy_file_runs_the_demo() {
    let _host = shared();
    let file = temp_file(
        "good.toml",
        b"# the counter's policy\ncmds = \"map_create:prog_load:btf_load\"\nmaps = [\"array\"]\nprogs = \"xdp\"\nattachs = [\"BPF_XDP\"]\n",
    );
    let run = run_clean(DEMO, &["-v", "--policy", file.to_str().unwrap()]);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(run.field("delta").as_deref(), Some("1"), "{run:#?}");
}

#[test]
fn a_bad_policy_file_fails_before_forking_with_line_and_column() {
    let _host = shared();
    let file = temp_file("bad.toml", b"cmds = \"any\"\nprogs = [\"xdpp\"]\n");
    let run = run_clean(DEMO, &["-v", "--policy", file.to_str().unwrap()]);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(run.code, Some(2), "{run:#?}");
    let expected = format!("{}:2:10: progs:", file.display());
    assert!(run.stderr.contains(&expected), "{expected:?} in {run:#?}");
    assert!(run.stderr.contains("did you mean `xdp`?"), "{run:#?}");
    assert_eq!(run.child_pid(), None, "nothing may be forked: {run:#?}");
}

#[test]
fn policy_from_the_counter_object_is_the_default_and_loads() {
    let _host = shared();
    let object = temp_file("counter.o", COUNTER_OBJECT);
    let run = run_clean(DEMO, &["-v", "--policy-from", object.to_str().unwrap()]);
    let not_elf = run_clean(DEMO, &["-v", "--policy-from", "/etc/hostname"]);
    std::fs::remove_file(&object).unwrap();
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(run.field("delta").as_deref(), Some("1"), "{run:#?}");
    // The masks go to the kernel as numbers; -v names them.
    let expected = [
        "delegate_cmds, 0x40021): map_create:prog_load:btf_load",
        "delegate_maps, 0x4): array",
        "delegate_progs, 0x40): xdp",
        "delegate_attachs, 0x2000000000): xdp",
    ];
    let set: Vec<&str> = run
        .stderr
        .lines()
        .filter_map(|l| l.split("FSCONFIG_SET_STRING, ").nth(1))
        .collect();
    assert_eq!(set, expected, "exactly these options: {run:#?}");
    assert_eq!(not_elf.code, Some(2), "{not_elf:#?}");
    assert!(
        not_elf
            .stderr
            .contains("--policy-from /etc/hostname: not a loadable eBPF object"),
        "{not_elf:#?}"
    );
}

#[test]
fn print_policy_gives_the_options_and_the_flags() {
    let _host = shared();
    let object = temp_file("print.o", COUNTER_OBJECT);
    let path = object.to_str().unwrap();
    let text = run_clean(TRACE, &["--print-policy", path]);
    let json = run_clean(TRACE, &["--print-policy", path, "--json"]);
    std::fs::remove_file(&object).unwrap();
    assert_eq!(text.code, Some(0), "{text:#?}");
    assert_eq!(
        text.stdout,
        "delegate_cmds=map_create:prog_load:btf_load\n\
         delegate_maps=array\n\
         delegate_progs=xdp\n\
         delegate_attachs=xdp\n\
         flags: --delegate-cmds map_create:prog_load:btf_load --delegate-maps array --delegate-progs xdp --delegate-attachs xdp\n"
    );
    let value: serde_json::Value = serde_json::from_str(&json.stdout).expect(&json.stdout);
    assert_eq!(value["delegate_cmds"], "map_create:prog_load:btf_load");
    assert_eq!(value["delegate_maps"], "array");
    assert_eq!(value["delegate_progs"], "xdp");
    assert_eq!(value["delegate_attachs"], "xdp");
    assert_eq!(value["flags"][7], "xdp");
}

#[test]
fn list_inside_the_sandbox_shows_the_delegation_and_a_usable_token() {
    let _host = shared();
    let trace = support::world_readable_copy(TRACE);
    let run = run_clean(DEMO, &["-v", "--", trace.path.to_str().unwrap(), "--list"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.starts_with("/sys/fs/bpf (mount id "), "{run:#?}");
    assert!(
        run.stdout.contains(
            "  delegation : delegate_cmds=map_create:prog_load:btf_load delegate_maps=array delegate_progs=xdp delegate_attachs=xdp\n"
        ),
        "{run:#?}"
    );
    assert!(
        run.stdout.contains(
            "  token      : yes, allowed_cmds=map_create:prog_load:btf_load allowed_maps=array allowed_progs=xdp allowed_attachs=xdp\n"
        ),
        "{run:#?}"
    );
}

#[test]
fn list_on_the_host_says_why_no_token_can_be_made() {
    let _host = exclusive();
    let bpffs = support::HostBpffs::mount();
    let dir = bpffs.dir.to_str().unwrap().to_owned();
    let dir = dir.as_str();
    let text = run_clean(TRACE, &["--list"]);
    let json = run_clean(TRACE, &["--list", "--json"]);
    drop(bpffs);
    assert_eq!(text.code, Some(0), "{text:#?}");
    let block: Vec<&str> = text
        .stdout
        .split_inclusive('\n')
        .skip_while(|l| !l.starts_with(&format!("{dir} (mount id ")))
        .take(3)
        .collect();
    assert_eq!(block.len(), 3, "{text:#?}");
    assert_eq!(block[1], "  delegation : none\n");
    assert!(block[2].starts_with("  token      : no: "), "{block:?}");
    assert!(block[2].contains("EOPNOTSUPP"), "{block:?}");
    support::assert_diagnosed(
        block[2],
        bpf_token_launcher::diagnosis::Cause::TokenInitialNamespace,
    );
    let list: serde_json::Value = serde_json::from_str(&json.stdout).expect(&json.stdout);
    let entry = list
        .as_array()
        .and_then(|l| l.iter().find(|e| e["mount_point"] == dir))
        .expect(&json.stdout);
    assert_eq!(entry["token"]["created"], false);
    assert_eq!(entry["token"]["errno"], "EOPNOTSUPP");
    assert_eq!(entry["delegation"], serde_json::json!({}));
}

#[test]
fn a_kernel_that_ignores_the_delegate_options_is_caught_before_use() {
    let _host = shared();
    const FSCONFIG_SET_STRING: u64 = 1;
    let mut command = Command::new(DEMO);
    command.arg("-v");
    // fsconfig(fd, FSCONFIG_SET_STRING, ...) returns 0 and does nothing.
    support::inject_syscall_result(
        &mut command,
        libc::SYS_fsconfig,
        Some((1, FSCONFIG_SET_STRING)),
        0,
    );
    let run = support::run_command_clean(&mut command);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains(
            "the kernel shows a different delegation than was asked for: delegate_cmds expected `map_create:prog_load:btf_load`, mountinfo shows nothing"
        ),
        "{run:#?}"
    );
    assert!(
        !run.stderr.contains("BPF_TOKEN_CREATE"),
        "the sandbox must not go on: {run:#?}"
    );
}

#[test]
fn names_in_any_case_and_with_prefixes_reach_the_kernel_as_its_own_names() {
    let _host = shared();
    let run = run_clean(
        DEMO,
        &[
            "-v",
            "--delegate-cmds",
            "BPF_MAP_CREATE,Prog_Load:btf_load",
            "--delegate-progs",
            "BPF_PROG_TYPE_XDP",
            "--delegate-attachs",
            "BPF_XDP",
            "--delegate-maps",
            "Array",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(run.field("delta").as_deref(), Some("1"), "{run:#?}");
    assert!(
        run.stderr.contains("delegate_cmds=map_create:prog_load:btf_load,delegate_maps=array,delegate_progs=xdp,delegate_attachs=xdp"),
        "{run:#?}"
    );
}

#[test]
fn print_policy_json_classifies_the_delegation() {
    let _host = shared();
    let object = temp_file("risk.o", COUNTER_OBJECT);
    let json = run_clean(
        TRACE,
        &["--print-policy", object.to_str().unwrap(), "--json"],
    );
    std::fs::remove_file(&object).unwrap();
    let value: serde_json::Value = serde_json::from_str(&json.stdout).expect(&json.stdout);
    let risk = &value["risk"];
    assert_eq!(risk["verdict"], "confined", "{value:#}");
    assert_eq!(
        risk["caps_kept"],
        serde_json::json!({"perfmon": false, "sys_admin": false})
    );
    let xdp = &risk["delegate_progs"][0];
    assert_eq!(
        (&xdp["name"], &xdp["class"], &xdp["usable"]),
        (&"xdp".into(), &"sandbox-local".into(), &true.into())
    );
    assert_eq!(
        xdp["requires"],
        serde_json::json!(["CAP_BPF", "CAP_NET_ADMIN"])
    );
    assert!(
        risk.get("refusal").is_none() && risk["warnings"] == serde_json::json!([]),
        "{risk:#}"
    );
}

#[test]
fn libbpf_and_systemd_names_become_the_kernels_names() {
    let _host = shared();
    let run = run_clean(
        DEMO,
        &[
            "-v",
            "--delegate-progs",
            "tc",
            "--delegate-attachs",
            "fentry:tcx/ingress",
            "--print-policy",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout.contains("delegate_progs=sched_cls\n")
            && run
                .stdout
                .contains("delegate_attachs=trace_fentry:tcx_ingress\n"),
        "{run:#?}"
    );
    assert!(
        run.stderr
            .contains("delegate_progs: `tc` is libbpf's section name for sched_cls"),
        "{run:#?}"
    );
    let file = temp_file(
        "systemd-names.toml",
        b"cmds = \"BPFMapCreate,BPFProgLoad,BPFBtfLoad\"\nmaps = [\"BPFMapTypeArray\"]\nprogs = \"bpfprogtypexdp\"\nattachs = [\"BPFXdp\"]\n",
    );
    let run = run_clean(
        DEMO,
        &["--policy", file.to_str().unwrap(), "--print-policy"],
    );
    std::fs::remove_file(&file).unwrap();
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout.starts_with(
            "delegate_cmds=map_create:prog_load:btf_load\n\
             delegate_maps=array\n\
             delegate_progs=xdp\n\
             delegate_attachs=xdp\n"
        ),
        "{run:#?}"
    );
    let run = run_clean(DEMO, &["--delegate-attachs", "tcx", "--print-policy"]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(
        run.stderr
            .contains("did you mean one of `tcx_ingress`, `tcx_egress`?"),
        "{run:#?}"
    );
}
