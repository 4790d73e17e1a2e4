//! `--veth` against an untrusted command, on the real kernel, as root: each test is an attack a
//! command in the sandbox can make on the host through the veth pair, reduced to a test.
//!
//! Some steps run inside the sandbox or next to it as another host user: the test binary runs
//! itself again (a world-readable copy) with `VETH_TEST_ROLE` naming the part to play; see
//! [`role`].

mod support;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{DEMO, Run, shared};

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
    assert!(left.is_empty(), "host ends left behind: {left:?}\n{context:#?}");
}

/// Item 4 of issue 13 (CVE-2020-13401 class): the command sends an IPv6 router advertisement
/// from its end of the veth. In a throw-away network namespace standing in for the host, with
/// `accept_ra=1` by default and forwarding off (a host that takes router advertisements), the
/// host end must not install a default route or an address from it, even though the frames
/// arrive (its receive counter proves that).
#[test]
fn a_router_advertisement_from_the_sandbox_changes_nothing_on_the_host() {
    let _host = shared();
    let sender = role_binary();
    let script = "sysctl -qw net.ipv6.conf.default.accept_ra=1 net.ipv6.conf.all.accept_ra=1 \
        net.ipv6.conf.all.forwarding=0 net.ipv6.conf.default.forwarding=0 \
        net.ipv6.conf.default.autoconf=1 && ip link set lo up && exec \"$@\"";
    let mut supervisor = Command::new("unshare")
        .args(["--net", "--", "sh", "-c", script, "sh", DEMO, "-v", "--veth", "v0", "--"])
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
    drop(supervisor.stdin.take());
    let run = Run::from_output(supervisor.wait_with_output().expect("wait"));
    let context = format!(
        "{seen}\nroutes:\n{routes}\naddresses:\n{addresses}\nhost end:\n{stats}\n{run:#?}"
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
    assert_no_host_ends(&run);
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
        assert!(fd >= 0, "socket(AF_PACKET): {}", std::io::Error::last_os_error());
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
        let source: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0x5e, 0xff, 0xfe, 0x10, 0, 1];
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

    pub fn pass_network_namespace() -> i32 {
        unimplemented!()
    }

    pub fn keep_network_namespace() -> i32 {
        unimplemented!()
    }
}
