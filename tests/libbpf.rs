//! A real libbpf client in the sandbox: tests/libbpf-client, built on libbpf-sys from crates.io
//! (libbpf 1.7 from its vendored sources) with no token code of its own, opens, loads and
//! attaches a modern libbpf object (BTF, a BTF-defined map) inside `token_userns_demo --policy P
//! -- ...` and counts a datagram; without `socket_filter` in P, the exit summary names
//! libbpf's first feature probe (`socket_filter`, expected attach type `cgroup_inet_ingress`).
//!
//! The client is built for the host's glibc target by `cargo xtask test`, which passes its path
//! in `LIBBPF_CLIENT` (libbpf-sys links the system's libelf, which the static musl test
//! binaries cannot).

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::{DEMO, Run, run_clean, shared};

/// libbpf's exact needs for the client's object, found by running it (each is checked below
/// to be needed):
/// - `map_create`, `array`: the object's map `packets`;
/// - `prog_load`, `xdp`: its program `count_packets`;
/// - `socket_filter`, `cgroup_inet_ingress`: libbpf's probes made before anything of the
///   object (`bpf_object__probe_loading`'s trivial program, then the name and memcg-accounting
///   probes), all socket filters loaded without an expected attach type, which the kernel
///   checks as attach type 0, `cgroup_inet_ingress`. The XDP program is loaded with that
///   attach type too: libbpf sends `BPF_XDP` only when its expected-attach-type probe (a
///   `cgroup_sock` program for `cgroup_inet_sock_create`) passes, and that one is not
///   delegated, so `xdp` is not needed in `attachs`.
const REQUIRED: &[(&str, &str)] = &[
    ("cmds", "map_create"),
    ("cmds", "prog_load"),
    ("maps", "array"),
    ("progs", "xdp"),
    ("progs", "socket_filter"),
    ("attachs", "cgroup_inet_ingress"),
];

/// `btf_load` is not needed (when it is refused, libbpf loads the object without its BTF and
/// says so only at debug level) but is delegated so the object loads as it would on the host,
/// BTF included: objects with spin locks, timers or kptrs need it.
const OPTIONAL: &[(&str, &str)] = &[("cmds", "btf_load")];

/// The client's optional probes that P leaves out, reported by `-v` as uncovered: libbpf goes
/// on without the feature. kprobe (for `__arg_ctx` tags) would also need CAP_PERFMON.
const UNCOVERED_PROBES: &[&str] = &[
    "bpf(BPF_PROG_LOAD) for program type kprobe, expected attach type cgroup_inet_ingress, by pid 2 (libbpf-client)",
    "bpf(BPF_PROG_LOAD) for program type cgroup_sock, expected attach type cgroup_inet_sock_create, by pid 2 (libbpf-client)",
];

/// The client and its object in a directory every user can read (the sandbox's root is an
/// unprivileged host uid), and a policy file; removed on drop.
struct Client {
    dir: PathBuf,
    binary: String,
    object: String,
}

impl Client {
    fn new(name: &str) -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        let built = std::env::var("LIBBPF_CLIENT").unwrap_or_else(|_| {
            panic!(
                "LIBBPF_CLIENT is not set: run `cargo xtask test`, which builds tests/libbpf-client \
                 (cargo build -p libbpf-client --target x86_64-unknown-linux-gnu) and sets it to the \
                 executable's path"
            )
        });
        let dir = std::env::temp_dir().join(format!("libbpf-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the client's directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Removed on drop from here on, also when a step below fails.
        let mut client = Self {
            dir,
            binary: String::new(),
            object: String::new(),
        };
        let dir = &client.dir;
        let binary = dir.join("libbpf-client");
        std::fs::copy(&built, &binary).unwrap_or_else(|e| panic!("copy {built}: {e}"));
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        // The object the client was built with (src/counter.bpf.c), as a file: libbpf users
        // load theirs with bpf_object__open_file. Asked of the built binary, not the copy: a
        // copy just written can still be open for writing in a child another test thread
        // forked meanwhile, and exec of it then fails with ETXTBSY.
        let out = Command::new(&built)
            .arg("object")
            .output()
            .expect("run libbpf-client object");
        assert!(
            out.status.success() && out.stdout.starts_with(b"\x7fELF"),
            "libbpf-client object: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let object = dir.join("counter.bpf.o");
        std::fs::write(&object, &out.stdout).unwrap();
        std::fs::set_permissions(&object, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = |p: PathBuf| p.to_str().expect("utf-8 temp dir").to_owned();
        client.binary = path(binary);
        client.object = path(object);
        client
    }

    /// `token_userns_demo --policy FILE OPTIONS -- libbpf-client count OBJECT`, the policy
    /// file holding `items`, checked to leave nothing behind.
    fn run(&self, items: &[(&str, &str)], options: &[&str]) -> Run {
        let policy = self.dir.join("policy.toml");
        std::fs::write(&policy, policy_file(items)).unwrap();
        let mut args = vec!["--policy", policy.to_str().unwrap()];
        args.extend_from_slice(options);
        args.extend_from_slice(&["--", &self.binary, "count", &self.object]);
        run_clean(DEMO, &args)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A policy file with `items` (a kind left out delegates nothing).
fn policy_file(items: &[(&str, &str)]) -> String {
    ["cmds", "maps", "progs", "attachs"]
        .iter()
        .filter_map(|kind| {
            let names: Vec<_> = items
                .iter()
                .filter(|(k, _)| k == kind)
                .map(|(_, name)| format!("{name:?}"))
                .collect();
            (!names.is_empty()).then(|| format!("{kind} = [{}]\n", names.join(", ")))
        })
        .collect()
}

fn policy() -> Vec<(&'static str, &'static str)> {
    [REQUIRED, OPTIONAL].concat()
}

fn without(item: (&str, &str)) -> Vec<(&'static str, &'static str)> {
    policy().into_iter().filter(|&i| i != item).collect()
}

fn uncovered_lines(trace: &str) -> Vec<&str> {
    trace
        .lines()
        .filter(|line| line.contains("was not covered by the delegation"))
        .collect()
}

#[test]
fn libbpf_loads_attaches_and_counts_with_its_probes_delegated() {
    let _host = shared();
    let client = Client::new("counts");
    let run = client.run(&policy(), &["-v"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout.contains("packets counted: 1"),
        "libbpf's XDP program must count exactly the one datagram\n{run:#?}"
    );
    // libbpf's own probes went through the gateway too: it keeps the names and needs no
    // RLIMIT_MEMLOCK bump.
    assert!(
        run.stdout
            .contains(r#"kernel names: program "count_packets", map "packets""#),
        "{run:#?}"
    );
    assert!(!run.stderr.contains("RLIMIT_MEMLOCK"), "{run:#?}");
    // libbpf makes its own token from LIBBPF_BPF_TOKEN_PATH: the gateway only patches the
    // calls libbpf's low-level API makes without it (its global name and memcg probes).
    assert!(
        run.stderr.contains("(libbpf-client) bpf(BPF_PROG_LOAD) for program type xdp, expected attach type cgroup_inet_ingress, named \"count_packets\": carries its own token"),
        "{run:#?}"
    );
    assert!(
        run.stderr
            .contains("(libbpf-client) bpf(BPF_BTF_LOAD): carries its own token"),
        "{run:#?}"
    );
    let uncovered = uncovered_lines(&run.stderr);
    for line in &uncovered {
        assert!(
            UNCOVERED_PROBES.iter().any(|probe| line.contains(probe)),
            "an uncovered call beyond libbpf's optional probes: {line}\n{run:#?}"
        );
    }
    assert_eq!(uncovered.len(), UNCOVERED_PROBES.len(), "{run:#?}");
    // The command succeeded: no summary at the end.
    assert!(!run.stderr.contains("token_userns_demo: bpf("), "{run:#?}");
}

#[test]
fn every_item_of_the_policy_is_needed_and_named_when_missing() {
    let _host = shared();
    let client = Client::new("exact");
    for &(kind, name) in REQUIRED {
        let run = client.run(&without((kind, name)), &[]);
        assert_eq!(run.code, Some(1), "without {name}: {run:#?}");
        assert!(
            run.stderr
                .contains("libbpf-client: error: bpf_object__load failed: EPERM"),
            "without {name}: {run:#?}"
        );
        assert!(
            run.stderr
                .contains(&format!("add {name} to --delegate-{kind}")),
            "without {name}, the summary must name it\n{run:#?}"
        );
    }
    for &(kind, name) in OPTIONAL {
        let run = client.run(&without((kind, name)), &[]);
        assert_eq!(run.code, Some(0), "without {kind} {name}: {run:#?}");
        assert!(run.stdout.contains("packets counted: 1"), "{run:#?}");
    }
}

#[test]
fn without_socket_filter_the_summary_names_libbpfs_probe() {
    let _host = shared();
    let client = Client::new("probe");
    let run = client.run(&without(("progs", "socket_filter")), &[]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    // libbpf's own words, pointing the wrong way...
    assert!(
        run.stderr.contains("Couldn't load trivial BPF program")
            && run.stderr.contains("RLIMIT_MEMLOCK"),
        "{run:#?}"
    );
    // ...and the summary: the probe's program type and the attach type the kernel checked.
    let line = run
        .stderr
        .lines()
        .find(|l| {
            l.starts_with("token_userns_demo: bpf(BPF_PROG_LOAD) for program type socket_filter")
        })
        .unwrap_or_else(|| panic!("no summary line for libbpf's probe\n{run:#?}"));
    assert!(
        line.contains("program type socket_filter, expected attach type cgroup_inet_ingress, by pid 2 (libbpf-client)")
            && line.ends_with("was not covered by the delegation: add socket_filter to --delegate-progs"),
        "{line}"
    );
    // libbpf falls back to a tracepoint program for the same probe.
    assert!(
        run.stderr.contains(
            "token_userns_demo: bpf(BPF_PROG_LOAD) for program type tracepoint, expected attach type cgroup_inet_ingress, by pid 2 (libbpf-client)"
        ),
        "{run:#?}"
    );

    // With the default policy (the demo counter's: xdp and attach type xdp), what a new user
    // tries first, both are missing and both are named.
    let default = run_clean(DEMO, &["--", &client.binary, "count", &client.object]);
    assert_eq!(default.code, Some(1), "{default:#?}");
    assert!(
        default.stderr.lines().any(|l| l.starts_with(
            "token_userns_demo: bpf(BPF_PROG_LOAD) for program type socket_filter, expected attach type cgroup_inet_ingress, by pid 2 (libbpf-client)"
        ) && l.ends_with(
            "add socket_filter to --delegate-progs and cgroup_inet_ingress to --delegate-attachs"
        )),
        "{default:#?}"
    );
}

#[test]
fn libbpf_is_token_aware_so_it_works_without_the_gateway_but_loses_names() {
    let _host = shared();
    let client = Client::new("no-gateway");
    let run = client.run(&policy(), &["--no-gateway"]);
    // libbpf >= 1.4 makes its own token from LIBBPF_BPF_TOKEN_PATH for every object call.
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("packets counted: 1"), "{run:#?}");
    // Its low-level API (bpf_prog_load, bpf_map_create) probes name support, and
    // bump_rlimit_memlock probes memcg accounting, in a global feature cache without the token.
    // Without unprivileged BPF these probes fail: libbpf drops every name and tries to raise
    // RLIMIT_MEMLOCK, which the sandbox may not. With unprivileged BPF allowed they pass.
    let unprivileged_bpf_disabled =
        std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
            .expect("read kernel.unprivileged_bpf_disabled");
    if unprivileged_bpf_disabled.trim() == "0" {
        assert!(
            run.stdout
                .contains(r#"kernel names: program "count_packets", map "packets""#),
            "{run:#?}"
        );
    } else {
        assert!(
            run.stdout.contains(r#"kernel names: program "", map """#),
            "{run:#?}"
        );
        assert!(
            run.stderr
                .contains("libbpf: Failed to bump RLIMIT_MEMLOCK (err = -EPERM)"),
            "{run:#?}"
        );
    }
}
