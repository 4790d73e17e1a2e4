//! `--learn FILE [--minimize]` on the real kernel: the policy learnt for a stock-aya loader and
//! for `token_trace` is exactly the set listed here, the same command passes with it, and it
//! fails without any one of its items, the gateway's explanation naming that item; the file
//! round-trips through `--policy`; the systemd, LXD and Incus forms are printed; bad
//! combinations are refused before anything runs; nothing is left behind.
//!
//! The stock-aya loader is this test binary itself, run again with `--role stock-aya-xdp` (a
//! copy every user can read, since the sandbox's host uid may not reach `target/`); it calls
//! the `stock-aya` crate (aya 0.14 from crates.io, no token code).

mod support;

use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::OnceLock;

use bpf_token_launcher::policy::{DelegateKind, Delegation, EnumNames, PolicyFile};
use support::{DEMO, Run, ScratchDir, TRACE, run_command_clean, shared};

const ROLE: &str = "--role";

/// What the sandboxed runs need, readable by any user.
struct Programs {
    files: support::ProgramDir,
    this: String,
    counter: String,
    trace: String,
}

static PROGRAMS: OnceLock<Programs> = OnceLock::new();

impl Programs {
    fn get() -> &'static Self {
        PROGRAMS.get_or_init(|| {
            let files = support::ProgramDir::new("learn-test");
            let put = |name: &str, bytes: &[u8], mode: u32| files.put(name, bytes, mode);
            Self {
                this: files.put_this("learn-roles"),
                counter: put(
                    "counter.o",
                    bpf_token_launcher::counter::COUNTER_OBJECT,
                    0o644,
                ),
                trace: put("token_trace", &std::fs::read(TRACE).unwrap(), 0o755),
                files,
            }
        })
    }

    fn stock_aya_xdp(&self) -> Vec<String> {
        vec![
            self.this.clone(),
            ROLE.to_owned(),
            "stock-aya-xdp".to_owned(),
            self.counter.clone(),
        ]
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(ROLE) {
        return role(&args[2..]);
    }
    let tests: &[(&str, fn())] = &[
        (
            "the_command_cannot_redirect_the_file_root_writes",
            the_command_cannot_redirect_the_file_root_writes,
        ),
        (
            "stock_aya_learns_and_minimizes_to_exactly_what_it_needs",
            stock_aya_learns_and_minimizes_to_exactly_what_it_needs,
        ),
        (
            "token_trace_learns_and_minimizes_to_the_counters_own_set",
            token_trace_learns_and_minimizes_to_the_counters_own_set,
        ),
        (
            "learning_alone_keeps_every_item_asked_for_and_says_who_asked",
            learning_alone_keeps_every_item_asked_for_and_says_who_asked,
        ),
        (
            "learning_runs_with_the_capabilities_given",
            learning_runs_with_the_capabilities_given,
        ),
        (
            "a_command_failing_while_learning_is_not_minimized",
            a_command_failing_while_learning_is_not_minimized,
        ),
        (
            "bad_combinations_are_refused_before_anything_runs",
            bad_combinations_are_refused_before_anything_runs,
        ),
        (
            "an_interrupted_minimization_keeps_the_learned_set",
            an_interrupted_minimization_keeps_the_learned_set,
        ),
        (
            "learning_without_the_gateway_is_an_error",
            learning_without_the_gateway_is_an_error,
        ),
    ];
    support::run_trials(tests, || {
        if let Some(programs) = PROGRAMS.get() {
            programs.files.remove();
        }
    })
}

/// The program run in the sandbox: stock aya loading the XDP counter and counting one
/// datagram on `lo`.
fn role(args: &[String]) -> ExitCode {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args[..] {
        ["stock-aya-xdp", object] => std::fs::read(object)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| stock_aya::count_one_datagram(&bytes, "lo"))
            .map(|n| println!("packets counted: {n}")),
        _ => Err(anyhow::anyhow!("unknown role {args:?}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("role {args:?}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `token_userns_demo OPTIONS -- COMMAND`, checked to leave nothing behind.
fn demo(options: &[&str], command: &[String]) -> Run {
    let mut run = Command::new(DEMO);
    run.args(options).arg("--").args(command);
    run_command_clean(&mut run)
}

fn names() -> &'static EnumNames {
    EnumNames::for_running_kernel()
}

fn delegation(cmds: &str, maps: &str, progs: &str, attachs: &str) -> Delegation {
    let n = names();
    Delegation {
        cmds: n.parse(DelegateKind::Cmds, cmds).unwrap(),
        maps: n.parse(DelegateKind::Maps, maps).unwrap(),
        progs: n.parse(DelegateKind::Progs, progs).unwrap(),
        attachs: n.parse(DelegateKind::Attachs, attachs).unwrap(),
    }
}

fn read_policy(path: &Path) -> Delegation {
    PolicyFile::read(path, names())
        .unwrap_or_else(|e| panic!("{e}\n{}", std::fs::read_to_string(path).unwrap()))
        .delegation
}

/// The items a minimized file delegates, as `(key, name)`, in file order.
fn active_items(text: &str) -> Vec<(String, String)> {
    let mut key = String::new();
    let mut items = Vec::new();
    for line in text.lines() {
        if let Some((k, _)) = line.split_once(" = [") {
            key = k.to_owned();
        } else if let Some(name) = line
            .trim()
            .strip_prefix('"')
            .and_then(|l| l.strip_suffix("\","))
        {
            items.push((key.clone(), name.to_owned()));
        }
    }
    items
}

/// The file's text without one item's line (and so without that item).
fn without_item(text: &str, key: &str, name: &str) -> String {
    let mut current = String::new();
    let mut out = String::new();
    let mut removed = 0;
    for line in text.lines() {
        if let Some((k, _)) = line.split_once(" = [") {
            current = k.to_owned();
        }
        if current == key && line.trim() == format!("\"{name}\",") {
            removed += 1;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert_eq!(removed, 1, "{key} {name} in\n{text}");
    out
}

/// `delegate_progs` → `--delegate-progs`.
fn flag_of(key: &str) -> String {
    format!("--delegate-{key}")
}

/// The learning series' line of the summary that starts with `label` (e.g. `flags:`).
fn summary_line<'a>(run: &'a Run, label: &str) -> &'a str {
    run.stderr
        .lines()
        .find_map(|l| l.strip_prefix("token_userns_demo:   ")?.strip_prefix(label))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {label} line\n{run:#?}"))
}

/// The file passes for `command`, and each of its items is needed: without it the command
/// fails and the gateway's explanation names it (`add NAME to --delegate-KIND`).
fn check_each_item_is_needed(
    dir: &Path,
    file: &Path,
    command: &[String],
    passes: &str,
    items: usize,
) {
    let path = file.to_str().unwrap();
    let with = demo(&["--policy", path], command);
    assert_eq!(with.code, Some(0), "{with:#?}");
    assert!(with.stdout.contains(passes), "{with:#?}");
    let text = std::fs::read_to_string(file).unwrap();
    let active = active_items(&text);
    assert_eq!(active.len(), items, "{active:?}");
    for (key, name) in active {
        let reduced = dir.join(format!("without-{key}-{name}.toml"));
        std::fs::write(&reduced, without_item(&text, &key, &name)).unwrap();
        let run = demo(&["--policy", reduced.to_str().unwrap()], command);
        assert_ne!(run.code, Some(0), "without {key} {name}\n{run:#?}");
        let wanted = format!("{name} to {}", flag_of(&key));
        assert!(
            run.stderr
                .lines()
                .any(|l| l.starts_with("token_userns_demo: bpf(")
                    && l.contains("was not covered by the delegation")
                    && l.contains(&wanted)),
            "without {key} {name}: no explanation naming it ({wanted})\n{run:#?}"
        );
    }
}

/// Only the expected files are left in the scratch directory (no half-written policy).
fn assert_only_files(dir: &Path, expected: &[&str]) {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("without-"))
        .collect();
    found.sort();
    assert_eq!(found, expected, "files left in {}", dir.display());
}

fn stock_aya_learns_and_minimizes_to_exactly_what_it_needs() {
    let _host = shared();
    let programs = Programs::get();
    let scratch = ScratchDir::new("learn", "aya");
    let file = scratch.0.join("aya.toml");
    let command = programs.stock_aya_xdp();
    let run = demo(&["--learn", file.to_str().unwrap(), "--minimize"], &command);
    assert_eq!(run.code, Some(0), "{run:#?}");
    // The learning run's output only: the reruns' stdout is discarded.
    assert_eq!(run.stdout, "packets counted: 1\n", "{run:#?}");
    // aya 0.14 loading the counter asks for ten items (learned with everything delegated):
    // - map_create, array: the counter's COUNTER map and aya's .bss/.data map "aya_global";
    // - prog_load, xdp, attach type xdp: the counter's program;
    // - btf_load: the object's BTF and aya's BTF feature probes;
    // - devmap, cpumap: aya's probes for program ids in devmap/cpumap values;
    // - socket_filter with attach type 0 (checked as cgroup_inet_ingress): aya's probe for
    //   global data (and the BPF cookie, bpf_probe_read_kernel probes are kprobe and
    //   tracepoint loads, which need CAP_PERFMON: left out, see the last assertion).
    // Minimized: aya switches a feature off when its probe fails and still loads the counter,
    // also without BTF when BTF_LOAD fails; so only the counter's own map and program stay.
    assert_eq!(
        read_policy(&file),
        delegation("map_create:prog_load", "array", "xdp", "xdp"),
        "{}",
        std::fs::read_to_string(&file).unwrap()
    );
    let text = std::fs::read_to_string(&file).unwrap();
    for dropped in [
        "btf_load",
        "devmap",
        "cpumap",
        "socket_filter",
        "cgroup_inet_ingress",
    ] {
        assert!(
            text.contains(&format!("# \"{dropped}\",")),
            "{dropped} is listed as left out\n{text}"
        );
    }
    assert_eq!(
        text.matches("dropped by --minimize as optional: without it, run ")
            .count(),
        5,
        "{text}"
    );
    assert_eq!(
        text.matches("needed: without it, run ").count(),
        5,
        "{text}"
    );
    // Who asked: the loader, by pid in the sandbox, comm and argv[0].
    assert!(
        text.contains(&format!(
            "# asked for by pid 2 (learn-roles, {}): bpf(BPF_MAP_CREATE) for map type array, named \"aya_global\", \"COUNTER\"",
            programs.this
        )),
        "{text}"
    );
    assert!(
        text.contains("# left out: program type kprobe loads only with CAP_PERFMON")
            && text.contains("# \"tracepoint\","),
        "{text}"
    );
    // 1 learning run, 1 with the ten learned items, 1 without each of them.
    assert!(
        run.stderr.contains(&format!(
            "token_userns_demo: learned policy written to {} (12 runs in ",
            file.display()
        )) && run.stderr.contains("; 5 items needed, 5 optional)"),
        "{run:#?}"
    );
    // The same policy as flags, systemd lines and LXD/Incus keys.
    let flags = summary_line(&run, "flags:");
    assert_eq!(
        flags,
        "--delegate-cmds map_create:prog_load --delegate-maps array --delegate-progs xdp --delegate-attachs xdp"
    );
    for line in [
        "systemd: PrivateBPF=yes",
        "BPFDelegateCommands=BPFMapCreate,BPFProgLoad",
        "BPFDelegateMaps=BPFMapTypeArray",
        "BPFDelegatePrograms=BPFProgTypeXdp",
        "BPFDelegateAttachments=BPFXdp",
        "LXD:     security.delegate_bpf=true",
        "security.delegate_bpf.cmd_types=map_create:prog_load",
        "security.delegate_bpf.map_types=array",
        "security.delegate_bpf.prog_types=xdp",
        "security.delegate_bpf.attach_types=xdp",
        "Incus:   security.bpffs.delegate_cmds=map_create,prog_load",
        "security.bpffs.delegate_maps=array",
        "security.bpffs.delegate_progs=xdp",
        "security.bpffs.delegate_attachs=xdp",
    ] {
        assert!(
            run.stderr.lines().any(|l| l.ends_with(line)),
            "no `{line}` line\n{run:#?}"
        );
    }
    // --policy reads the file back as the same delegation.
    let printed = support::run_clean(
        DEMO,
        &["--policy", file.to_str().unwrap(), "--print-policy"],
    );
    assert_eq!(printed.code, Some(0), "{printed:#?}");
    assert!(
        printed.stdout.contains(&format!("flags: {flags}")),
        "{printed:#?}"
    );
    assert_only_files(&scratch.0, &["aya.toml"]);
    check_each_item_is_needed(&scratch.0, &file, &command, "packets counted: 1", 5);
}

fn token_trace_learns_and_minimizes_to_the_counters_own_set() {
    let _host = shared();
    let programs = Programs::get();
    let scratch = ScratchDir::new("learn", "trace");
    let file = scratch.0.join("trace.toml");
    let command = vec![programs.trace.clone()];
    let run = demo(&["--learn", file.to_str().unwrap(), "--minimize"], &command);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(
        run.stdout.matches("delta          : 1").count(),
        1,
        "{run:#?}"
    );
    // token_trace makes its own token and loads the counter with it: BTF_LOAD of the
    // object's BTF, MAP_CREATE of the COUNTER array, PROG_LOAD of the XDP program with
    // expected attach type xdp; it probes nothing, so every item is needed.
    assert_eq!(
        read_policy(&file),
        delegation("map_create:prog_load:btf_load", "array", "xdp", "xdp")
    );
    let text = std::fs::read_to_string(&file).unwrap();
    // Its calls carry their own token: the gateway saw and logged them all the same.
    assert!(
        text.contains(&format!(
            "# asked for by pid 2 (token_trace, {}): bpf(BPF_BTF_LOAD); 1 call, already carrying a token",
            programs.trace
        )),
        "{text}"
    );
    assert_eq!(
        text.matches("needed: without it, run ").count(),
        6,
        "{text}"
    );
    assert!(!text.contains("dropped by --minimize"), "{text}");
    // 1 learning run, 1 with the six learned items, 1 without each of them.
    assert!(
        run.stderr.contains("(8 runs in ") && run.stderr.contains("; 6 items needed, 0 optional)"),
        "{run:#?}"
    );
    assert!(
        run.stderr
            .contains("BPFDelegateCommands=BPFMapCreate,BPFProgLoad,BPFBtfLoad")
            && run
                .stderr
                .contains("security.delegate_bpf.cmd_types=map_create:prog_load:btf_load")
            && run
                .stderr
                .contains("security.bpffs.delegate_cmds=map_create,prog_load,btf_load"),
        "{run:#?}"
    );
    let flags = summary_line(&run, "flags:");
    let printed = support::run_clean(
        DEMO,
        &["--policy", file.to_str().unwrap(), "--print-policy"],
    );
    assert!(
        printed.stdout.contains(&format!("flags: {flags}")),
        "{printed:#?}"
    );
    assert_only_files(&scratch.0, &["trace.toml"]);
    check_each_item_is_needed(&scratch.0, &file, &command, "delta          : 1", 6);
}

fn learning_alone_keeps_every_item_asked_for_and_says_who_asked() {
    let _host = shared();
    let programs = Programs::get();
    let scratch = ScratchDir::new("learn", "alone");
    let file = scratch.0.join("aya.toml");
    let run = demo(
        &["--learn", file.to_str().unwrap()],
        &programs.stock_aya_xdp(),
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stderr.contains("(1 run in "), "{run:#?}");
    // Every item aya asked for, its probes included (see the minimized test for who asks
    // for what); kprobe and tracepoint only as comments: they need CAP_PERFMON.
    assert_eq!(
        read_policy(&file),
        delegation(
            "map_create:prog_load:btf_load",
            "array:devmap:cpumap",
            "socket_filter:xdp",
            "cgroup_inet_ingress:xdp"
        )
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("# Not minimized"), "{text}");
    assert!(
        text.contains(&format!(
            "# asked for by pid 2 (learn-roles, {}): bpf(BPF_PROG_LOAD) for program type socket_filter, expected attach type cgroup_inet_ingress; 1 call\n    \"socket_filter\",",
            programs.this
        )),
        "{text}"
    );
    assert!(text.contains("    # \"kprobe\",\n"), "{text}");
    assert_only_files(&scratch.0, &["aya.toml"]);
}

fn learning_runs_with_the_capabilities_given() {
    let _host = shared();
    let programs = Programs::get();
    let scratch = ScratchDir::new("learn", "perfmon");
    let file = scratch.0.join("aya.toml");
    let run = demo(
        &["--learn", file.to_str().unwrap(), "--cap-add", "perfmon"],
        &programs.stock_aya_xdp(),
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    // With CAP_PERFMON aya's kprobe and tracepoint probes can load: they are learned.
    let learned = read_policy(&file);
    for prog_type in ["kprobe", "tracepoint"] {
        let value = names().value_of(DelegateKind::Progs, prog_type).unwrap();
        assert!(learned.progs.contains(value), "{prog_type}: {learned:?}");
    }
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("# The command kept CAP_PERFMON: use the file with the same --cap-add."),
        "{text}"
    );
}

fn a_command_failing_while_learning_is_not_minimized() {
    let _host = shared();
    let scratch = ScratchDir::new("learn", "fails");
    let file = scratch.0.join("fails.toml");
    let command: Vec<String> = ["sh", "-c", "exit 3"].map(str::to_owned).to_vec();
    let run = demo(
        &["-v", "--learn", file.to_str().unwrap(), "--minimize"],
        &command,
    );
    assert_eq!(run.code, Some(3), "the command's status\n{run:#?}");
    assert!(
        run.stderr.contains("(1 run in ")
            && run.stderr.contains("not minimized: the command failed"),
        "{run:#?}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("# and exited with status 3"), "{text}");
    assert!(
        text.contains("# Not minimized: the command failed while learning"),
        "{text}"
    );
}

fn bad_combinations_are_refused_before_anything_runs() {
    let _host = shared();
    let scratch = ScratchDir::new("learn", "refused");
    let file = scratch.0.join("policy.toml");
    let file = file.to_str().unwrap();
    let marker = scratch.0.join("ran");
    let marker_command = format!("touch {}", marker.display());
    let existing = scratch.0.join("existing.toml");
    std::fs::write(&existing, "cmds = \"prog_load\"\n").unwrap();
    let link = scratch.0.join("link.toml");
    std::os::unix::fs::symlink(&existing, &link).unwrap();
    let missing_dir = scratch.0.join("missing/policy.toml");
    let directory = scratch.0.to_str().unwrap();
    let existing = existing.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--learn", file, "--policy", existing],
            "cannot be used with",
        ),
        (
            vec!["--learn", file, "--policy-from", existing],
            "cannot be used with",
        ),
        (
            vec!["--learn", file, "--delegate-progs", "xdp"],
            "cannot be used with",
        ),
        (
            vec!["--learn", file, "--delegate-cmds", "any"],
            "cannot be used with",
        ),
        (vec!["--learn", file, "--no-gateway"], "cannot be used with"),
        (vec!["--minimize"], "--learn <FILE>"),
        (
            vec!["--learn", missing_dir.to_str().unwrap()],
            "cannot write a file in",
        ),
        (vec!["--learn", directory], "is a directory"),
        (vec!["--learn", link.to_str().unwrap()], "symbolic link"),
        (vec!["--learn", "/dev/null"], "not a regular file"),
    ];
    for (options, says) in cases {
        let mut args = vec!["-v"];
        args.extend(options.iter().copied());
        args.extend(["--", "sh", "-c", &marker_command]);
        let run = support::run_clean(DEMO, &args);
        assert_eq!(run.code, Some(2), "{args:?}\n{run:#?}");
        assert!(run.stderr.contains(says), "{args:?}: {says}\n{run:#?}");
        assert!(!run.stderr.contains("sandbox child pid"), "{run:#?}");
        assert!(!marker.exists(), "{args:?} ran the command");
    }
    // --learn without a command, and with `--` and nothing after it.
    for args in [vec!["--learn", file], vec!["--learn", file, "--"]] {
        let run = support::run_clean(DEMO, &args);
        assert_eq!(run.code, Some(2), "{args:?}\n{run:#?}");
    }
    assert!(!Path::new(file).exists());
    // The symbolic link and the file it points to are untouched.
    assert_eq!(
        std::fs::read_to_string(&link).unwrap(),
        "cmds = \"prog_load\"\n"
    );
    assert_only_files(&scratch.0, &["existing.toml", "link.toml"]);
}

fn an_interrupted_minimization_keeps_the_learned_set() {
    use std::io::BufRead as _;
    use std::process::Stdio;
    let _host = shared();
    let programs = Programs::get();
    let scratch = ScratchDir::new("learn", "interrupted");
    let file = scratch.0.join("trace.toml");
    let mounts_before = support::host_mounts();
    // Slow enough for the signal to arrive while a rerun runs.
    let script = format!("{} >/dev/null && sleep 1", programs.trace);
    let mut supervisor = Command::new(DEMO)
        .args(["--learn", file.to_str().unwrap(), "--minimize", "--"])
        .args(["sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the supervisor");
    let mut lines = std::io::BufReader::new(supervisor.stderr.take().unwrap()).lines();
    let mut stderr = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        stderr.push_str(&line);
        stderr.push('\n');
        if line.contains("--minimize: run 2 with the learned set") {
            break;
        }
    }
    assert!(
        stderr.contains("run 2 with the learned set: exit status 0"),
        "{stderr}"
    );
    // As `kill -INT` from another process: the supervisor forwards it to the command.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    for line in lines.map_while(Result::ok) {
        stderr.push_str(&line);
        stderr.push('\n');
    }
    let status = supervisor.wait().unwrap();
    let run = Run {
        code: status.code(),
        stdout: String::new(),
        stderr,
    };
    support::assert_host_clean(&mounts_before, &run);
    assert_eq!(run.code, Some(130), "{run:#?}");
    assert!(run.stderr.contains("(3 runs in "), "{run:#?}");
    assert!(
        run.stderr.contains("; minimization interrupted)"),
        "{run:#?}"
    );
    // Every learned item, none tried out: the interrupted run says nothing about them.
    assert_eq!(
        read_policy(&file),
        delegation("map_create:prog_load:btf_load", "array", "xdp", "xdp")
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains(
            "# Minimization interrupted: run 3 exited with status 130; every learned item is kept."
        ),
        "{text}"
    );
    assert_eq!(
        text.matches("kept: not tried (the minimization stopped first)")
            .count(),
        6,
        "{text}"
    );
    assert_only_files(&scratch.0, &["trace.toml"]);
}

fn learning_without_the_gateway_is_an_error() {
    let _host = shared();
    let scratch = ScratchDir::new("learn", "no-gateway");
    let file = scratch.0.join("policy.toml");
    // A process already under a runtime's seccomp listener cannot get the gateway's (EBUSY):
    // the command still runs, but nothing can be learnt.
    let flags: u64 =
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    let mut command = Command::new(DEMO);
    command.args([
        "--learn",
        file.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "exit 3",
    ]);
    support::inject_syscall_result(
        &mut command,
        libc::SYS_seccomp,
        Some((1, flags)),
        libc::EBUSY,
    );
    let run = run_command_clean(&mut command);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr
            .contains("token_userns_demo: warning: the bpf() gateway cannot start")
            && run.stderr.contains(
                "--learn: run 1: the bpf() gateway could not start (see the warning above), and learning needs it"
            ),
        "{run:#?}"
    );
    assert!(!file.exists());
    assert_only_files(&scratch.0, &[]);
}

/// Found by review: the file is written by root after the command ran as the invoking user,
/// who could swap a directory of the path for a symbolic link to a directory only root may
/// write. The directory is opened before the run and the file created through it.
fn the_command_cannot_redirect_the_file_root_writes() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let _host = shared();
    let base = support::ScratchDir::new("learn", "redirect");
    let dir = base.0.join("d");
    let moved = base.0.join("d.old");
    let target = base.0.join("root-only");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(23456), Some(23456)).unwrap();
    std::fs::create_dir(&target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
    let file = dir.join("policy.toml");
    let script = format!(
        "{} >/dev/null && mv {} {} && ln -s {} {}",
        Programs::get().trace,
        dir.display(),
        moved.display(),
        target.display(),
        dir.display()
    );
    let run = demo(
        &[
            "--uid",
            "23456",
            "--gid",
            "23456",
            "--learn",
            file.to_str().unwrap(),
        ],
        &["sh".to_owned(), "-c".to_owned(), script],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        !target.join("policy.toml").exists(),
        "root wrote through the command's symbolic link: {run:#?}"
    );
    let written = moved.join("policy.toml");
    let meta = std::fs::metadata(&written).unwrap_or_else(|e| panic!("{e}: {run:#?}"));
    assert_eq!(
        meta.uid(),
        23456,
        "the file belongs to the directory's owner"
    );
}
