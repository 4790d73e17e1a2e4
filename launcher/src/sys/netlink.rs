//! rtnetlink requests: creating, finding and deleting a veth pair, adding an IPv4 address, and
//! reading the host's IPv4 addresses and routes.
//!
//! Just the messages the sandbox needs, built by hand. A change (`RTM_NEWLINK` with `veth` link
//! info, `RTM_NEWADDR`, `RTM_DELLINK`) is sent with `NLM_F_ACK` and answered by one
//! `NLMSG_ERROR` carrying the errno; a dump (`RTM_GETADDR`, `RTM_GETROUTE`) is answered by a
//! series of messages ended by `NLMSG_DONE`.

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
const RTA_DST: u16 = 1;
const RTA_TABLE: u16 = 15;
const NLA_F_NESTED: u16 = 1 << 15;

/// A netlink message under construction; attributes are 4-byte aligned.
struct Message {
    buf: Vec<u8>,
}

impl Message {
    /// A change, acknowledged by the kernel.
    fn new(kind: u16, flags: u16) -> Self {
        Self::with_flags(kind, flags | libc::NLM_F_ACK as u16)
    }

    /// A dump of every object of a kind.
    fn dump(kind: u16) -> Self {
        Self::with_flags(kind, libc::NLM_F_DUMP as u16)
    }

    fn with_flags(kind: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, set in finish()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
        buf.extend_from_slice(&SEQUENCE.to_ne_bytes());
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
        self.ifinfomsg_for(0);
    }

    /// `struct ifinfomsg` naming interface `index`.
    fn ifinfomsg_for(&mut self, index: u32) {
        let mut info = [0u8; 16];
        info[4..8].copy_from_slice(&index.to_ne_bytes());
        self.bytes(&info);
    }

    /// An interface by index, or by name when the index is 0 (the kernel looks a link up by
    /// index when it has one and ignores the name then).
    fn link(&mut self, index: u32, name: &str) {
        self.ifinfomsg_for(index);
        if index == 0 {
            self.attr_str(IFLA_IFNAME, name);
        }
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

/// Every request carries this sequence number; answers to anything else are not ours.
const SEQUENCE: u32 = 1;
const HEADER: usize = 16;

/// A fresh `NETLINK_ROUTE` socket of the caller's network namespace.
fn socket() -> Result<OwnedFd, SysError> {
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
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn send(sock: &OwnedFd, message: &[u8], call: &'static str) -> Result<(), SysError> {
    // SAFETY: the buffer is a complete netlink message; the kernel is the default destination.
    let sent = unsafe { libc::send(sock.as_raw_fd(), message.as_ptr().cast(), message.len(), 0) };
    if sent < 0 {
        return Err(SysError::last(call));
    }
    Ok(())
}

/// Receives one datagram (a datagram longer than `buf` is cut, which is enough for the
/// answers that are only looked at for their type and errno).
fn receive<'a>(
    sock: &OwnedFd,
    buf: &'a mut [u8],
    call: &'static str,
) -> Result<&'a [u8], SysError> {
    loop {
        // SAFETY: receiving into a buffer we own.
        let len = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if len >= 0 {
            return Ok(&buf[..len as usize]);
        }
        if Errno::last() != Errno::EINTR {
            return Err(SysError::last(call));
        }
    }
}

/// The messages of one datagram: (type, flags, payload after the header).
fn messages(mut datagram: &[u8]) -> impl Iterator<Item = (u16, u16, &[u8])> {
    std::iter::from_fn(move || {
        let header = datagram.get(..HEADER)?;
        let len = u32::from_ne_bytes(header[0..4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes([header[4], header[5]]);
        let flags = u16::from_ne_bytes([header[6], header[7]]);
        let seq = u32::from_ne_bytes(header[8..12].try_into().ok()?);
        if len < HEADER {
            return None;
        }
        // A datagram cut by a short receive buffer still shows its first message's type.
        let payload = &datagram[HEADER..len.min(datagram.len())];
        datagram = datagram.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        // A message of another sequence would be an answer to someone else: skip it by
        // giving it a type nothing matches.
        Some(if seq == SEQUENCE {
            (kind, flags, payload)
        } else {
            (0, 0, &[][..])
        })
    })
}

/// The errno carried by an `NLMSG_ERROR` payload; `None` for an acknowledgement.
fn error_of(payload: &[u8]) -> Option<Errno> {
    let error = payload.get(0..4).map_or(-(Errno::EPROTO as i32), |b| {
        i32::from_ne_bytes([b[0], b[1], b[2], b[3]])
    });
    (error != 0).then(|| Errno::from_raw(-error))
}

/// Sends one change on a fresh `NETLINK_ROUTE` socket of the caller's network namespace and
/// returns the kernel's answer.
fn request(message: Vec<u8>, call: &'static str) -> Result<(), SysError> {
    let sock = socket()?;
    send(&sock, &message, call)?;
    let mut answer = [0u8; 1024];
    let answer = receive(&sock, &mut answer, call)?;
    match messages(answer).next() {
        Some((kind, _, payload)) if kind == libc::NLMSG_ERROR as u16 => match error_of(payload) {
            None => Ok(()),
            Some(errno) => Err(SysError { call, errno }),
        },
        _ => Err(SysError {
            call,
            errno: Errno::EPROTO,
        }),
    }
}

/// Sends one dump request and returns the payload of every object message of the answer.
///
/// A dump that the kernel marks as interrupted (`NLM_F_DUMP_INTR`: the table changed while it
/// was read, so an object may be missing) is read again, up to three times.
fn dump(message: &[u8], object: u16, call: &'static str) -> Result<Vec<Vec<u8>>, SysError> {
    let mut buf = vec![0u8; 32 * 1024];
    for _ in 0..3 {
        let sock = socket()?;
        send(&sock, message, call)?;
        let mut objects = Vec::new();
        let mut interrupted = false;
        'datagrams: loop {
            let datagram = receive(&sock, &mut buf, call)?;
            if datagram.is_empty() {
                return Err(SysError {
                    call,
                    errno: Errno::EPROTO,
                });
            }
            for (kind, flags, payload) in messages(datagram) {
                interrupted |= flags & libc::NLM_F_DUMP_INTR as u16 != 0;
                if kind == libc::NLMSG_DONE as u16 {
                    // A dump that failed part-way carries the errno in its end message.
                    if let Some(errno) = error_of(payload).filter(|_| payload.len() >= 4) {
                        return Err(SysError { call, errno });
                    }
                    break 'datagrams;
                }
                if kind == libc::NLMSG_ERROR as u16 {
                    return Err(SysError {
                        call,
                        errno: error_of(payload).unwrap_or(Errno::EPROTO),
                    });
                }
                if kind == object {
                    objects.push(payload.to_vec());
                }
            }
        }
        if !interrupted {
            return Ok(objects);
        }
    }
    Err(SysError {
        call,
        errno: Errno::EINTR,
    })
}

/// The attributes after a fixed header of `skip` bytes: (type without flags, payload).
fn attributes(payload: &[u8], skip: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = payload.get(skip.next_multiple_of(4)..).unwrap_or(&[]);
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes([*rest.first()?, *rest.get(1)?]));
        let kind = u16::from_ne_bytes([*rest.get(2)?, *rest.get(3)?]) & !NLA_F_NESTED;
        if len < 4 || len > rest.len() {
            return None;
        }
        let value = &rest[4..len];
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some((kind, value))
    })
}

fn ipv4(value: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(value).ok().map(Ipv4Addr::from)
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

/// Deletes interface `index` (by `name` when `index` is 0) of the caller's network namespace
/// (for a veth, both ends).
pub fn delete_link(index: u32, name: &str) -> Result<(), SysError> {
    let mut m = Message::new(libc::RTM_DELLINK, 0);
    m.link(index, name);
    request(m.finish(), "netlink RTM_DELLINK")
}

/// Whether interface `index` (`name` when `index` is 0) exists in the caller's network
/// namespace (`RTM_GETLINK`, which the kernel answers with the link or with `ENODEV`).
pub fn link_exists(index: u32, name: &str) -> Result<bool, SysError> {
    const CALL: &str = "netlink RTM_GETLINK";
    let mut m = Message::with_flags(libc::RTM_GETLINK, 0);
    m.link(index, name);
    let sock = socket()?;
    send(&sock, &m.finish(), CALL)?;
    // The link's description is long; only the type of the answer matters.
    let mut answer = [0u8; 256];
    let answer = receive(&sock, &mut answer, CALL)?;
    match messages(answer).next() {
        Some((kind, _, _)) if kind == libc::RTM_NEWLINK => Ok(true),
        Some((kind, _, payload)) if kind == libc::NLMSG_ERROR as u16 => match error_of(payload) {
            Some(Errno::ENODEV) => Ok(false),
            errno => Err(SysError {
                call: CALL,
                errno: errno.unwrap_or(Errno::EPROTO),
            }),
        },
        _ => Err(SysError {
            call: CALL,
            errno: Errno::EPROTO,
        }),
    }
}

/// One IPv4 address of the caller's network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4AddressEntry {
    pub interface_index: u32,
    /// The address itself (`IFA_LOCAL`).
    pub local: Option<Ipv4Addr>,
    /// The address that defines the prefix (`IFA_ADDRESS`): the same as `local`, except on a
    /// point-to-point link where it is the peer's.
    pub address: Option<Ipv4Addr>,
    pub prefix: u8,
}

/// Every IPv4 address of the caller's network namespace (`RTM_GETADDR` dump).
pub fn ipv4_addresses() -> Result<Vec<Ipv4AddressEntry>, SysError> {
    let mut m = Message::dump(libc::RTM_GETADDR);
    // struct ifaddrmsg { family u8, prefixlen u8, flags u8, scope u8, index u32 }
    let mut ifaddr = [0u8; 8];
    ifaddr[0] = libc::AF_INET as u8;
    m.bytes(&ifaddr);
    let objects = dump(&m.finish(), libc::RTM_NEWADDR, "netlink RTM_GETADDR (dump)")?;
    Ok(objects
        .iter()
        .filter(|p| p.first() == Some(&(libc::AF_INET as u8)) && p.len() >= 8)
        .map(|p| {
            let mut entry = Ipv4AddressEntry {
                interface_index: u32::from_ne_bytes([p[4], p[5], p[6], p[7]]),
                local: None,
                address: None,
                prefix: p[1],
            };
            for (kind, value) in attributes(p, 8) {
                match kind {
                    IFA_LOCAL => entry.local = ipv4(value),
                    IFA_ADDRESS => entry.address = ipv4(value),
                    _ => {}
                }
            }
            entry
        })
        .collect())
}

/// One IPv4 route of the caller's network namespace, from any routing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4RouteEntry {
    pub destination: Ipv4Addr,
    pub prefix: u8,
    pub table: u32,
    /// `rtm_type`: `RTN_UNICAST`, `RTN_LOCAL`, `RTN_BLACKHOLE`, ...
    pub kind: u8,
}

/// Every IPv4 route of every table of the caller's network namespace (`RTM_GETROUTE` dump).
pub fn ipv4_routes() -> Result<Vec<Ipv4RouteEntry>, SysError> {
    let mut m = Message::dump(libc::RTM_GETROUTE);
    // struct rtmsg { family, dst_len, src_len, tos, table, protocol, scope, type: u8; flags u32 }
    let mut rtmsg = [0u8; 12];
    rtmsg[0] = libc::AF_INET as u8;
    m.bytes(&rtmsg);
    let objects = dump(
        &m.finish(),
        libc::RTM_NEWROUTE,
        "netlink RTM_GETROUTE (dump)",
    )?;
    Ok(objects
        .iter()
        .filter(|p| p.first() == Some(&(libc::AF_INET as u8)) && p.len() >= 12)
        .map(|p| {
            let mut entry = Ipv4RouteEntry {
                destination: Ipv4Addr::UNSPECIFIED,
                prefix: p[1],
                table: u32::from(p[4]),
                kind: p[7],
            };
            for (kind, value) in attributes(p, 12) {
                match kind {
                    RTA_DST => entry.destination = ipv4(value).unwrap_or(entry.destination),
                    RTA_TABLE if value.len() == 4 => {
                        entry.table = u32::from_ne_bytes([value[0], value[1], value[2], value[3]]);
                    }
                    _ => {}
                }
            }
            entry
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&u32::try_from(HEADER + payload.len()).unwrap().to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn a_datagram_splits_into_its_messages_and_skips_other_sequences() {
        let mut datagram = message(20, 2, SEQUENCE, &[1, 2, 3]);
        datagram.extend(message(20, 0, SEQUENCE + 1, &[9; 8]));
        datagram.extend(message(
            libc::NLMSG_DONE as u16,
            2,
            SEQUENCE,
            &0i32.to_ne_bytes(),
        ));
        let got: Vec<_> = messages(&datagram).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (20, 2, &[1u8, 2, 3][..]));
        assert_eq!(got[1].0, 0, "another sequence is not ours");
        assert_eq!(got[2].0, libc::NLMSG_DONE as u16);
        assert_eq!(error_of(got[2].2), None);
        assert_eq!(
            error_of(&(-libc::ENODEV).to_ne_bytes()),
            Some(Errno::ENODEV)
        );
    }

    #[test]
    fn a_cut_datagram_still_shows_its_first_message_type() {
        let datagram = message(libc::RTM_NEWLINK, 0, SEQUENCE, &[0; 100]);
        let got: Vec<_> = messages(&datagram[..40]).collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, libc::RTM_NEWLINK);
    }

    #[test]
    fn attributes_follow_the_fixed_header_and_end_at_a_bad_length() {
        let mut payload = vec![0u8; 8];
        payload.extend_from_slice(&8u16.to_ne_bytes());
        payload.extend_from_slice(&(IFA_LOCAL | NLA_F_NESTED).to_ne_bytes());
        payload.extend_from_slice(&[127, 0, 0, 1]);
        payload.extend_from_slice(&2u16.to_ne_bytes()); // shorter than an attribute header
        payload.extend_from_slice(&IFA_ADDRESS.to_ne_bytes());
        let got: Vec<_> = attributes(&payload, 8).collect();
        assert_eq!(got, [(IFA_LOCAL, &[127u8, 0, 0, 1][..])]);
    }

    /// Reading needs no privilege: every network namespace has 127.0.0.1/8 on lo (up or not,
    /// the address is listed) and, once lo is up, the local table's 127.0.0.0/8 route.
    #[test]
    fn the_dumps_list_loopback() {
        let addresses = ipv4_addresses().expect("address dump");
        assert!(
            addresses
                .iter()
                .any(|a| a.local == Some(Ipv4Addr::LOCALHOST) && a.prefix == 8),
            "{addresses:?}"
        );
        let routes = ipv4_routes().expect("route dump");
        assert!(
            routes
                .iter()
                .any(|r| r.destination == Ipv4Addr::new(127, 0, 0, 0)
                    && r.prefix == 8
                    && r.table == 255
                    && r.kind == libc::RTN_LOCAL),
            "{routes:?}"
        );
    }
}
