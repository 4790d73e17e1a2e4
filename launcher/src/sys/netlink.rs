//! rtnetlink requests: creating a veth pair and adding an IPv4 address.
//!
//! Just the two messages the sandbox needs, built by hand (`RTM_NEWLINK` with `veth` link info,
//! `RTM_NEWADDR`), each sent with `NLM_F_ACK` and answered by one `NLMSG_ERROR` carrying the errno.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use super::{Errno, SysError};

const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_PID: u16 = 19;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_ADDRESS: u16 = 1;
const NLA_F_NESTED: u16 = 1 << 15;

/// A netlink message under construction; attributes are 4-byte aligned.
struct Message {
    buf: Vec<u8>,
}

impl Message {
    fn new(kind: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, set in finish()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(
            &(flags | libc::NLM_F_REQUEST as u16 | libc::NLM_F_ACK as u16).to_ne_bytes(),
        );
        buf.extend_from_slice(&1u32.to_ne_bytes()); // seq
        buf.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
        Self { buf }
    }

    fn bytes(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// `struct ifinfomsg` with everything zero (AF_UNSPEC, no index).
    fn ifinfomsg(&mut self) {
        self.bytes(&[0u8; 16]);
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) {
        let len = u16::try_from(4 + payload.len()).expect("small attribute");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.bytes(payload);
    }

    fn attr_str(&mut self, kind: u16, value: &str) {
        let mut payload = value.as_bytes().to_vec();
        payload.push(0);
        self.attr(kind, &payload);
    }

    /// Starts a nested attribute; `end_nested` fills in its length.
    fn begin_nested(&mut self, kind: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        start
    }

    fn end_nested(&mut self, start: usize) {
        let len = u16::try_from(self.buf.len() - start).expect("small attribute");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).expect("small message");
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// Sends one request on a fresh `NETLINK_ROUTE` socket of the caller's network namespace and
/// returns the kernel's answer.
fn request(message: Vec<u8>, call: &'static str) -> Result<(), SysError> {
    // SAFETY: plain socket call.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(SysError::last("socket(AF_NETLINK, NETLINK_ROUTE)"));
    }
    // SAFETY: we own the new socket.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: the buffer is a complete netlink message; the kernel is the default destination.
    let sent = unsafe { libc::send(sock.as_raw_fd(), message.as_ptr().cast(), message.len(), 0) };
    if sent < 0 {
        return Err(SysError::last(call));
    }
    let mut answer = [0u8; 1024];
    // SAFETY: receiving into a buffer we own.
    let len = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            answer.as_mut_ptr().cast(),
            answer.len(),
            0,
        )
    };
    if len < 0 {
        return Err(SysError::last(call));
    }
    // nlmsghdr (16 bytes), then for NLMSG_ERROR an i32 error (negative errno, 0 for the ack).
    let answer = &answer[..len as usize];
    let kind = answer.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let error = answer
        .get(16..20)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    match (kind, error) {
        (Some(k), Some(0)) if k == libc::NLMSG_ERROR as u16 => Ok(()),
        (Some(k), Some(e)) if k == libc::NLMSG_ERROR as u16 => Err(SysError {
            call,
            errno: Errno::from_raw(-e),
        }),
        _ => Err(SysError {
            call,
            errno: Errno::EPROTO,
        }),
    }
}

/// Creates a veth pair: `name` in the caller's network namespace, `peer` directly in the
/// network namespace of process `peer_pid` (so the pair never exists half-moved).
pub fn create_veth(name: &str, peer: &str, peer_pid: i32) -> Result<(), SysError> {
    let mut m = Message::new(
        libc::RTM_NEWLINK,
        (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16,
    );
    m.ifinfomsg();
    m.attr_str(IFLA_IFNAME, name);
    let linkinfo = m.begin_nested(IFLA_LINKINFO);
    m.attr_str(IFLA_INFO_KIND, "veth");
    let data = m.begin_nested(IFLA_INFO_DATA);
    let peer_info = m.begin_nested(VETH_INFO_PEER);
    m.ifinfomsg();
    m.attr_str(IFLA_IFNAME, peer);
    m.attr(IFLA_NET_NS_PID, &peer_pid.to_ne_bytes());
    m.end_nested(peer_info);
    m.end_nested(data);
    m.end_nested(linkinfo);
    request(m.finish(), "netlink RTM_NEWLINK (veth)")
}

/// Adds `address/prefix` to interface `index` of the caller's network namespace.
pub fn add_ipv4_address(index: u32, address: Ipv4Addr, prefix: u8) -> Result<(), SysError> {
    let mut m = Message::new(
        libc::RTM_NEWADDR,
        (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16,
    );
    // struct ifaddrmsg { family u8, prefixlen u8, flags u8, scope u8, index u32 }
    let mut ifaddr = [0u8; 8];
    ifaddr[0] = libc::AF_INET as u8;
    ifaddr[1] = prefix;
    ifaddr[4..8].copy_from_slice(&index.to_ne_bytes());
    m.bytes(&ifaddr);
    m.attr(IFA_LOCAL, &address.octets());
    m.attr(IFA_ADDRESS, &address.octets());
    request(m.finish(), "netlink RTM_NEWADDR")
}
