//! `--veth` against an untrusted command, on the real kernel, as root: each test is an attack a
//! command in the sandbox can make on the host through the veth pair, reduced to a test.
//!
//! Some steps run inside the sandbox or next to it as another host user: the test binary runs
//! itself again (a world-readable copy) with `VETH_TEST_ROLE` naming the part to play; see
//! [`role`].

mod support;

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};

use support::{DEMO, Run, ScratchDir, exclusive};

/// Which part a re-executed test binary plays (see [`role`]).
const ROLE: &str = "VETH_TEST_ROLE";

/// The test binary, runnable by the sandbox's unprivileged host uid.
fn role_binary() -> support::WorldReadableCopy {
    let me = std::env::current_exe().expect("the test binary's path");
    support::world_readable_copy(me.to_str().expect("utf-8 path"))
}

/// Arguments that make the test harness run only [`role`], with its output on stdout.
const ROLE_ARGS: [&str; 4] = ["--exact", "role", "--nocapture", "--test-threads=1"];

/// The entry point of the re-executed binary. In a normal test run `VETH_TEST_ROLE` is unset
/// and this does nothing.
#[test]
fn role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let code = match role.as_str() {
        "ra-sender" => roles::send_router_advertisements(),
        "ns-passer" => roles::pass_network_namespace(),
        "ns-keeper" => roles::keep_network_namespace(),
        other => panic!("unknown {ROLE} {other:?}"),
    };
    std::process::exit(code);
}

/// Lines of `reader` until one ends with `marker` (the harness's `test role ... ` has no line
/// end of its own); panics with what was read if the stream ends first.
fn read_until(reader: &mut impl std::io::BufRead, marker: &str) -> String {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("read a line");
        if n == 0 {
            panic!("{marker:?} never came; read:\n{seen}");
        }
        seen.push_str(&line);
        if line.trim_end().ends_with(marker) {
            return seen;
        }
    }
}

/// `ip ARGS` in the network namespace of process `pid` (the caller's own for `None`).
fn ip_in(pid: Option<u32>, args: &[&str]) -> std::process::Output {
    let mut command = match pid {
        Some(pid) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/proc/{pid}/ns/net")).arg("ip");
            c
        }
        None => Command::new("ip"),
    };
    command.args(args).output().expect("run ip")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `tkn*` interfaces of the caller's network namespace.
fn host_ends() -> Vec<String> {
    let out = ip_in(None, &["-o", "link", "show"]);
    text(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .filter(|name| name.starts_with("tkn"))
        .collect()
}

fn assert_no_host_ends(context: &dyn std::fmt::Debug) {
    let left = host_ends();
    assert!(
        left.is_empty(),
        "host ends left behind: {left:?}\n{context:#?}"
    );
}

/// Item 4 of issue 13 (CVE-2020-13401 class): the command sends an IPv6 router advertisement
/// from its end of the veth. In a throw-away network namespace standing in for the host, with
/// `accept_ra=1` by default and forwarding off (a host that takes router advertisements), the
/// host end must not install a default route or an address from it, even though the frames
/// arrive (its receive counter proves that).
#[test]
fn a_router_advertisement_from_the_sandbox_changes_nothing_on_the_host() {
    let _host = exclusive();
    let sender = role_binary();
    let script = "sysctl -qw net.ipv6.conf.default.accept_ra=1 net.ipv6.conf.all.accept_ra=1 \
        net.ipv6.conf.all.forwarding=0 net.ipv6.conf.default.forwarding=0 \
        net.ipv6.conf.default.autoconf=1 && ip link set lo up && exec \"$@\"";
    let mut supervisor = Command::new("unshare")
        .args([
            "--net", "--", "sh", "-c", script, "sh", DEMO, "-v", "--veth", "v0", "--",
        ])
        .arg(&sender.path)
        .args(ROLE_ARGS)
        .env(ROLE, "ra-sender")
        .env("VETH_TEST_INTERFACE", "v0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn unshare");
    // unshare and sh exec in place: this pid is the supervisor's, in the stand-in host.
    let pid = supervisor.id();
    let mut stdout = BufReader::new(supervisor.stdout.take().expect("stdout"));
    let seen = read_until(&mut stdout, "sent");
    let host_end = format!("tkn{pid}");
    let routes = text(&ip_in(Some(pid), &["-6", "route", "show", "default"]).stdout);
    let addresses = text(&ip_in(Some(pid), &["-6", "address", "show"]).stdout);
    let stats = text(&ip_in(Some(pid), &["-s", "link", "show", "dev", &host_end]).stdout);
    let settings: Vec<(String, String)> = HARDENED
        .iter()
        .map(|(key, _)| {
            let key = key.replace("HOST", &host_end);
            let out = Command::new("nsenter")
                .arg(format!("--net=/proc/{pid}/ns/net"))
                .args(["sysctl", "-n", &key])
                .output()
                .expect("run sysctl");
            (key, text(&out.stdout).trim().to_owned())
        })
        .collect();
    drop(supervisor.stdin.take());
    let run = Run::from_output(supervisor.wait_with_output().expect("wait"));
    let context = format!(
        "{seen}\nroutes:\n{routes}\naddresses:\n{addresses}\nhost end:\n{stats}\n{settings:?}\n{run:#?}"
    );
    assert_eq!(run.code, Some(0), "{context}");
    assert!(
        routes.trim().is_empty(),
        "the sandbox installed a default route on the host: {context}"
    );
    assert!(
        !addresses.contains("2001:db8:7:"),
        "the host took an address from the sandbox's prefix: {context}"
    );
    assert!(
        rx_packets(&stats) >= roles::ADVERTISEMENTS,
        "the advertisements did not reach the host end (the attack was not made): {context}"
    );
    for ((key, value), (_, expected)) in settings.iter().zip(HARDENED) {
        assert_eq!(value, expected, "{key}: {context}");
    }
    assert_no_host_ends(&run);
}

/// Settings of the host end (`HOST` stands for its name) and the values it must have.
const HARDENED: [(&str, &str); 8] = [
    ("net.ipv6.conf.HOST.disable_ipv6", "1"),
    ("net.ipv6.conf.HOST.accept_ra", "0"),
    ("net.ipv6.conf.HOST.autoconf", "0"),
    ("net.ipv4.conf.HOST.rp_filter", "1"),
    ("net.ipv4.conf.HOST.accept_redirects", "0"),
    ("net.ipv4.conf.HOST.accept_source_route", "0"),
    ("net.ipv4.conf.HOST.route_localnet", "0"),
    ("net.ipv4.conf.HOST.arp_ignore", "1"),
];

/// The host uid (and gid) of the sandbox and of the keeper in the hand-over tests.
const TEST_UID: u32 = 23_456;

/// How the sandbox ends after its command handed the network namespace away.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// The command exits.
    Exit,
    /// `--timeout 1` kills the sandbox.
    Timeout,
    /// The test SIGKILLs the sandbox child.
    Killed,
}

/// Item 6 of issue 13: the command passes its network namespace to a process of its own host
/// uid outside the sandbox, which keeps it (and with it the veth pair) alive. The host end must
/// still be gone when the supervisor returns, however the sandbox ended.
fn host_end_is_gone_after_the_namespace_was_handed_away(ending: Ending) {
    let _host = exclusive();
    let mounts_before = support::host_mounts();
    let dir = ScratchDir::new("veth", &format!("{ending:?}"));
    let socket = dir.0.join("keeper.sock");
    let bin = role_binary();
    let mut keeper = Command::new(&bin.path)
        .args(ROLE_ARGS)
        .env(ROLE, "ns-keeper")
        .env("VETH_TEST_SOCKET", &socket)
        .uid(TEST_UID)
        .gid(TEST_UID)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the keeper");
    let mut keeper_out = BufReader::new(keeper.stdout.take().expect("stdout"));
    read_until(&mut keeper_out, "listening");

    let uid = TEST_UID.to_string();
    let mut command = Command::new(DEMO);
    command.args(["-v", "--uid", &uid, "--gid", &uid, "--veth", "v0"]);
    if let Ending::Timeout = ending {
        command.args(["--timeout", "1"]);
    }
    let supervisor = command
        .arg("--")
        .arg(&bin.path)
        .args(ROLE_ARGS)
        .env(ROLE, "ns-passer")
        .env("VETH_TEST_SOCKET", &socket)
        .env(
            "VETH_TEST_AFTER",
            if let Ending::Exit = ending {
                "exit"
            } else {
                "hang"
            },
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the supervisor");
    let host_end = format!("tkn{}", supervisor.id());
    let handed = read_until(&mut keeper_out, "holding");
    if let Ending::Killed = ending {
        let sandbox = support::descendants(i32::try_from(supervisor.id()).unwrap())[0];
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(sandbox),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill the sandbox child");
    }
    let run = Run::from_output(supervisor.wait_with_output().expect("wait"));
    // Looked at the moment the supervisor has returned, while the keeper still holds the
    // sandbox's network namespace.
    let show = ip_in(None, &["link", "show", &host_end]);
    let keeper_alive = keeper.try_wait().expect("keeper status").is_none();
    drop(keeper.stdin.take());
    let keeper_status = keeper.wait().expect("wait for the keeper");
    let context = format!("{handed}\n{run:#?}");
    let expected = match ending {
        Ending::Exit => 0,
        Ending::Timeout => 124,
        Ending::Killed => 128 + libc::SIGKILL,
    };
    assert_eq!(run.code, Some(expected), "{context}");
    assert!(keeper_alive && keeper_status.success(), "{context}");
    assert!(
        !show.status.success(),
        "{host_end} outlived the supervisor: {}\n{context}",
        text(&show.stdout)
    );
    support::assert_host_clean(&mounts_before, &run);
    assert_no_host_ends(&run);
}

#[test]
fn host_end_is_gone_when_the_command_exits_after_handing_its_namespace_away() {
    host_end_is_gone_after_the_namespace_was_handed_away(Ending::Exit);
}

#[test]
fn host_end_is_gone_after_a_timeout_when_the_namespace_was_handed_away() {
    host_end_is_gone_after_the_namespace_was_handed_away(Ending::Timeout);
}

#[test]
fn host_end_is_gone_after_the_sandbox_is_killed_when_the_namespace_was_handed_away() {
    host_end_is_gone_after_the_namespace_was_handed_away(Ending::Killed);
}

/// The supervisor's setup fails after the pair exists (here: the host end's `RTM_NEWADDR`, the
/// supervisor's only 40-byte netlink message, made to fail): the host end is deleted before
/// the supervisor returns.
#[test]
fn host_end_is_gone_after_a_setup_failure() {
    let _host = exclusive();
    let mut command = Command::new(DEMO);
    command.args(["-v", "--veth", "v0", "--", "true"]);
    support::inject_syscall_result(
        &mut command,
        libc::SYS_sendto,
        Some((2, 40)),
        libc::EADDRNOTAVAIL,
    );
    let run = support::run_command_clean(&mut command);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr
            .contains("adding the veth address: netlink RTM_NEWADDR failed: EADDRNOTAVAIL"),
        "{run:#?}"
    );
    assert!(run.stderr.contains("deleted the veth pair"), "{run:#?}");
    assert_no_host_ends(&run);
}

/// The /30 of each `veth tkn<pid> (<host address>/30) on the host` line of a `-v` trace.
fn subnets_in_trace(trace: &str) -> Vec<(String, Ipv4Addr)> {
    trace
        .lines()
        .filter_map(|l| {
            let rest = l.split("] veth ").nth(1)?;
            let (name, rest) = rest.split_once(" (")?;
            let address: Ipv4Addr = rest.split('/').next()?.parse().ok()?;
            let network = Ipv4Addr::from(u32::from(address) & !3);
            Some((name.to_owned(), network))
        })
        .collect()
}

fn in_metadata_ranges(network: Ipv4Addr) -> bool {
    let [a, b, c, _] = network.octets();
    (a, b) == (169, 254) && matches!(c, 169 | 170)
}

/// Item 5 of issue 13: with `pid % 16000`, supervisors whose pids differ by 16000 got the same
/// /30. In a throw-away PID namespace, `ns_last_pid` gives three concurrent supervisors the pids
/// N, N + 16000 (the collision) and N + the pool size (the same first choice of the
/// allocator): their /30s must all differ and stay out of the metadata ranges.
#[test]
fn concurrent_sandboxes_never_share_a_subnet() {
    let _host = exclusive();
    let mounts_before = support::host_mounts();
    let dir = ScratchDir::new("veth", "subnets");
    let pool_slots = 252 * 64;
    let pids = [300, 300 + 16_000, 300 + pool_slots];
    let mut script = String::from("set -eu\nmkfifo \"$1/fifo\"\nexec 3<>\"$1/fifo\"\n");
    for pid in pids {
        // Nothing else forks in this PID namespace between the write and the `&`: the earlier
        // supervisors wait with their command (cat) running.
        script.push_str(&format!(
            "echo {last} > /proc/sys/kernel/ns_last_pid\n\
             \"$2\" -v --veth v0 -- cat < \"$1/fifo\" > /dev/null 2> \"$1/{pid}.log\" 3>&- &\n\
             until grep -q 'is pid 2 in the PID namespace' \"$1/{pid}.log\"; do \
             kill -0 $! 2>/dev/null || break; sleep 0.02; done\n",
            last = pid - 1
        ));
    }
    script.push_str("exec 3>&-\nwait\n");
    let out = Command::new("timeout")
        .args([
            "60",
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .arg(&dir.0)
        .arg(DEMO)
        .output()
        .expect("run unshare");
    let run = Run::from_output(out);
    let mut found = Vec::new();
    let mut traces = String::new();
    for pid in pids {
        let trace = std::fs::read_to_string(dir.0.join(format!("{pid}.log"))).unwrap_or_default();
        let subnets = subnets_in_trace(&trace);
        assert_eq!(
            subnets
                .iter()
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>(),
            [format!("tkn{pid}")],
            "supervisor {pid}:\n{trace}\n{run:#?}"
        );
        found.push(subnets[0].1);
        traces.push_str(&trace);
    }
    assert_eq!(run.code, Some(0), "{traces}\n{run:#?}");
    for (i, a) in found.iter().enumerate() {
        assert!(!in_metadata_ranges(*a), "{a} is a metadata range\n{traces}");
        for b in &found[i + 1..] {
            assert_ne!(a, b, "two sandboxes share {a}/30\n{traces}");
        }
    }
    support::assert_host_clean(&mounts_before, &run);
    assert_no_host_ends(&run);
}

/// Supervisors in two PID namespaces can have the same pid, hence the same host end name: the
/// second fails with EEXIST, says what the interface is and how to remove it, and leaves the
/// first one's host end alone.
#[test]
fn the_same_pid_in_two_pid_namespaces_is_a_clear_error() {
    let _host = exclusive();
    let script = "echo 4999 > /proc/sys/kernel/ns_last_pid; exec 3<&0; \
                  \"$1\" -v --veth v0 -- cat <&3 3<&- & wait $!";
    let mut first = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            "sh",
            "-c",
            script,
            "sh",
            DEMO,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the first supervisor");
    let mut first_trace = BufReader::new(first.stderr.take().expect("stderr"));
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if first_trace.read_line(&mut line).expect("read") == 0 {
            panic!("the first supervisor ended early:\n{seen}");
        }
        seen.push_str(&line);
        if line.contains("is pid 2 in the PID namespace") {
            break;
        }
    }
    assert!(seen.contains("] veth tkn5000 ("), "{seen}");
    let second = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c"])
        .arg("echo 4999 > /proc/sys/kernel/ns_last_pid; \"$1\" --veth v0 -- true & wait $!")
        .args(["sh", DEMO])
        .output()
        .expect("run the second supervisor");
    let second = Run::from_output(second);
    let first_end_survived = ip_in(None, &["link", "show", "tkn5000"]).status.success();
    drop(first.stdin.take());
    let mut rest = String::new();
    first_trace.read_to_string(&mut rest).expect("read");
    let first_status = first.wait().expect("wait");
    assert_eq!(second.code, Some(1), "{second:#?}");
    for expected in [
        "host end tkn5000",
        "EEXIST",
        "not the --veth name",
        "another PID namespace",
        "`ip link del tkn<pid>`",
    ] {
        assert!(
            second.stderr.contains(expected),
            "{expected:?} missing: {second:#?}"
        );
    }
    assert!(
        !second.stderr.contains("pick another --veth name"),
        "{second:#?}"
    );
    assert!(
        first_end_survived,
        "the second supervisor deleted the first one's host end"
    );
    assert!(first_status.success(), "{seen}{rest}");
    assert_no_host_ends(&second);
}

/// Bad `--veth` names and `--veth-subnet` values are refused with exit 2 before anything is
/// forked (no sandbox child appears in the trace).
#[test]
fn bad_names_and_subnets_are_refused_before_forking() {
    let _host = exclusive();
    let cases: &[(&[&str], &str)] = &[
        (&["--veth", "v%d"], "template"),
        (&["--veth", "all"], "reserved"),
        (&["--veth", "default"], "reserved"),
        (&["--veth", "lo"], "reserved"),
        (&["--veth", ".."], "reserved"),
        (&["--veth", "a:b"], "cannot contain"),
        (&["--veth", "a b"], "cannot contain"),
        (&["--veth", "much-too-long-name0"], "1 to 15 bytes"),
        (
            &["--veth", "v0", "--veth-subnet", "10.200.0.0/29"],
            "needs a /30",
        ),
        (
            &["--veth", "v0", "--veth-subnet", "10.200.0.1/30"],
            "not its network address",
        ),
        (
            &["--veth", "v0", "--veth-subnet", "10.200.0.3/30"],
            "broadcast",
        ),
        (
            &["--veth", "v0", "--veth-subnet", "169.254.169.252/30"],
            "metadata",
        ),
        (
            &["--veth", "v0", "--veth-subnet", "169.254.170.0/30"],
            "metadata",
        ),
        (
            &["--veth", "v0", "--veth-subnet", "127.0.0.0/30"],
            "loopback",
        ),
        (&["--veth", "v0", "--veth-subnet", "nonsense"], "CIDR"),
        (&["--veth-subnet", "10.200.0.0/30"], "--veth"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["-v"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--", "true"]);
        let run = support::run_clean(DEMO, &all);
        assert_eq!(run.code, Some(2), "{args:?}: {run:#?}");
        assert!(
            run.stderr.contains(expected),
            "{args:?}: {expected:?} missing: {run:#?}"
        );
        assert!(run.child_pid().is_none(), "{args:?} forked: {run:#?}");
    }
    assert_no_host_ends(&"bad input");
}

/// `--veth-subnet` in a stand-in host: a /30 that overlaps a host route is refused at run time;
/// a free one is used as given and shows in `--json-status`; one that another supervisor holds
/// (in another network namespace, so only the lock can tell) is refused.
#[test]
fn an_explicit_subnet_is_used_only_when_free() {
    let _host = exclusive();
    let dir = ScratchDir::new("veth", "explicit");
    let in_stand_in = |setup: &str, args: &[&str]| {
        let script = format!("ip link set lo up && {setup} exec \"$@\" 3> \"$STATUS\"");
        let out = Command::new("unshare")
            .args(["--net", "--", "sh", "-c", &script, "sh", DEMO])
            .args(args)
            .env("STATUS", dir.0.join("status"))
            .output()
            .expect("run unshare");
        Run::from_output(out)
    };
    let run = in_stand_in(
        "ip route add 10.200.0.0/24 dev lo &&",
        &[
            "--veth",
            "v0",
            "--veth-subnet",
            "10.200.0.0/30",
            "--",
            "true",
        ],
    );
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains(
            "--veth-subnet 10.200.0.0/30 overlaps the host's route 10.200.0.0/24 (table main)"
        ),
        "{run:#?}"
    );
    assert!(run.child_pid().is_none(), "{run:#?}");

    let run = in_stand_in(
        "ip route add 10.200.0.0/24 dev lo &&",
        &[
            "--veth",
            "v0",
            "--veth-subnet",
            "10.200.1.0/30",
            "--json-status",
            "3",
            "--",
            "ip",
            "-4",
            "-o",
            "address",
            "show",
            "dev",
            "v0",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("inet 10.200.1.2/30"), "{run:#?}");
    let status = std::fs::read_to_string(dir.0.join("status")).expect("status events");
    let ready: serde_json::Value = status
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .find(|e| e["event"] == "sandbox-ready")
        .expect("a sandbox-ready event");
    let veth = &ready["veth"];
    assert_eq!(veth["sandbox"], "v0", "{status}");
    assert!(
        veth["host"].as_str().is_some_and(|h| h.starts_with("tkn")),
        "{status}"
    );
    assert_eq!(veth["host_address"], "10.200.1.1", "{status}");
    assert_eq!(veth["sandbox_address"], "10.200.1.2", "{status}");
    assert_eq!(veth["subnet"], "10.200.1.0/30", "{status}");

    // The first holds 10.200.2.0/30 in one stand-in host while the second asks for it in
    // another, where no address or route shows it.
    let mut first = Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$@\"",
            "sh",
            DEMO,
        ])
        .args([
            "-v",
            "--veth",
            "v0",
            "--veth-subnet",
            "10.200.2.0/30",
            "--",
            "cat",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the first supervisor");
    let mut first_trace = BufReader::new(first.stderr.take().expect("stderr"));
    let mut seen = String::new();
    while !seen.contains("is pid 2 in the PID namespace") {
        if first_trace.read_line(&mut seen).expect("read") == 0 {
            panic!("the first supervisor ended early:\n{seen}");
        }
    }
    let second = in_stand_in(
        "",
        &[
            "--veth",
            "v0",
            "--veth-subnet",
            "10.200.2.0/30",
            "--",
            "true",
        ],
    );
    drop(first.stdin.take());
    assert!(first.wait().expect("wait").success(), "{seen}");
    assert_eq!(second.code, Some(1), "{second:#?}");
    assert!(
        second
            .stderr
            .contains("10.200.2.0/30 is in use by another token_userns_demo"),
        "{second:#?}"
    );
}

/// The `RX:` packet count in `ip -s link show` output.
fn rx_packets(stats: &str) -> u64 {
    let mut lines = stats.lines();
    while let Some(line) = lines.next() {
        if line.trim_start().starts_with("RX:") {
            return lines
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
    }
    0
}

/// What the re-executed test binary does in each role.
mod roles {
    use std::io::Read as _;

    /// How many router advertisements the sender sends.
    pub const ADVERTISEMENTS: u64 = 5;

    /// In the sandbox: router advertisements for 2001:db8:7::/64 with a router lifetime, to
    /// ff02::1 on `VETH_TEST_INTERFACE`, from a made-up link-local router, as raw Ethernet
    /// frames (the sandbox's root has CAP_NET_RAW in its network namespace). Prints `sent`,
    /// then waits for stdin to close so the test can look at the host while the veth exists.
    pub fn send_router_advertisements() -> i32 {
        let interface = std::env::var("VETH_TEST_INTERFACE").expect("VETH_TEST_INTERFACE");
        let index = nix::net::if_::if_nametoindex(interface.as_str()).expect("interface index");
        // SAFETY: plain socket call.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(
            fd >= 0,
            "socket(AF_PACKET): {}",
            std::io::Error::last_os_error()
        );
        let frame = router_advertisement();
        // SAFETY: sockaddr_ll is plain data.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = 0x86ddu16.to_be();
        to.sll_ifindex = index as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&frame[..6]);
        for _ in 0..ADVERTISEMENTS {
            // SAFETY: sending a buffer we own to an address we built.
            let sent = unsafe {
                libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&raw const to).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert!(sent >= 0, "sendto: {}", std::io::Error::last_os_error());
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // The kernel handles an advertisement as it arrives; give a slow machine a moment.
        std::thread::sleep(std::time::Duration::from_millis(300));
        println!("sent");
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        0
    }

    /// Ethernet + IPv6 + ICMPv6 router advertisement (RFC 4861 4.2) with a source link-layer
    /// address option and an autonomous prefix-information option.
    fn router_advertisement() -> Vec<u8> {
        const ROUTER_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];
        let source: [u8; 16] = [
            0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0x5e, 0xff, 0xfe, 0x10, 0, 1,
        ];
        let destination: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let mut icmp = vec![134, 0, 0, 0, 64, 0];
        icmp.extend_from_slice(&1800u16.to_be_bytes()); // router lifetime (s)
        icmp.extend_from_slice(&0u32.to_be_bytes()); // reachable time
        icmp.extend_from_slice(&0u32.to_be_bytes()); // retransmission timer
        icmp.extend_from_slice(&[1, 1]); // source link-layer address, 8 bytes
        icmp.extend_from_slice(&ROUTER_MAC);
        icmp.extend_from_slice(&[3, 4, 64, 0xc0]); // prefix information, /64, on-link + autonomous
        icmp.extend_from_slice(&86_400u32.to_be_bytes()); // valid lifetime
        icmp.extend_from_slice(&14_400u32.to_be_bytes()); // preferred lifetime
        icmp.extend_from_slice(&0u32.to_be_bytes());
        icmp.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let checksum = icmpv6_checksum(&source, &destination, &icmp);
        icmp[2..4].copy_from_slice(&checksum.to_be_bytes());

        let mut frame = vec![0x33, 0x33, 0, 0, 0, 1];
        frame.extend_from_slice(&ROUTER_MAC);
        frame.extend_from_slice(&0x86ddu16.to_be_bytes());
        frame.extend_from_slice(&[0x60, 0, 0, 0]);
        frame.extend_from_slice(&u16::try_from(icmp.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(&[58, 255]); // next header ICMPv6, hop limit 255
        frame.extend_from_slice(&source);
        frame.extend_from_slice(&destination);
        frame.extend_from_slice(&icmp);
        frame
    }

    fn icmpv6_checksum(source: &[u8; 16], destination: &[u8; 16], message: &[u8]) -> u16 {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(source);
        pseudo.extend_from_slice(destination);
        pseudo.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        pseudo.extend_from_slice(message);
        if pseudo.len() % 2 == 1 {
            pseudo.push(0);
        }
        let mut sum: u32 = pseudo
            .chunks(2)
            .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// In the sandbox: opens its own network namespace and sends the descriptor over the Unix
    /// socket `VETH_TEST_SOCKET` to the keeper outside the sandbox; prints `passed`, then exits
    /// or, with `VETH_TEST_AFTER=hang`, waits to be killed.
    pub fn pass_network_namespace() -> i32 {
        use std::io::IoSlice;
        use std::os::fd::AsRawFd as _;
        use std::os::unix::net::UnixStream;
        let socket = std::env::var("VETH_TEST_SOCKET").expect("VETH_TEST_SOCKET");
        let namespace = std::fs::File::open("/proc/self/ns/net").expect("open /proc/self/ns/net");
        let stream = UnixStream::connect(&socket).expect("connect to the keeper");
        let fds = [namespace.as_raw_fd()];
        nix::sys::socket::sendmsg::<()>(
            stream.as_raw_fd(),
            &[IoSlice::new(b"n")],
            &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
            nix::sys::socket::MsgFlags::empty(),
            None,
        )
        .expect("send the namespace");
        println!("\npassed");
        if std::env::var("VETH_TEST_AFTER").as_deref() == Ok("hang") {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        0
    }

    /// Outside the sandbox, as the sandbox's host uid: listens on `VETH_TEST_SOCKET`
    /// (`listening`), receives one descriptor and checks it is a network namespace (`holding`),
    /// and keeps it open until stdin closes.
    pub fn keep_network_namespace() -> i32 {
        use std::io::IoSliceMut;
        use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
        use std::os::unix::net::UnixListener;
        let socket = std::env::var("VETH_TEST_SOCKET").expect("VETH_TEST_SOCKET");
        let listener = UnixListener::bind(&socket).expect("bind the keeper's socket");
        println!("\nlistening");
        let (stream, _) = listener.accept().expect("accept");
        let mut byte = [0u8; 1];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut byte)];
        let message = nix::sys::socket::recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .expect("receive the namespace");
        let mut held = Vec::new();
        for cmsg in message.cmsgs().expect("control messages") {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = cmsg {
                // SAFETY: the kernel just installed these descriptors for this process.
                held.extend(
                    fds.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let kind = held
            .first()
            .and_then(|fd| std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok())
            .expect("a descriptor arrived");
        assert!(
            kind.to_string_lossy().starts_with("net:["),
            "not a network namespace: {kind:?}"
        );
        println!("{} holding", kind.display());
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        drop(held);
        0
    }
}
