//! Network interfaces and the test datagram.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use crate::diagnosis::{Diagnosed, Step};
use crate::sys::{self, Errno, SysError};

/// The index of interface `name` in the caller's network namespace.
pub fn interface_index(name: &str) -> Result<u32, NetError> {
    nix::net::if_::if_nametoindex(name).map_err(|errno| match errno {
        Errno::ENODEV | Errno::ENXIO | Errno::EINVAL | Errno::ENAMETOOLONG => {
            NetError::NoSuchInterface {
                name: name.to_owned(),
            }
        }
        errno => NetError::Sys {
            step: "looking up the interface",
            source: SysError {
                call: "if_nametoindex",
                errno,
            },
        },
    })
}

/// A veth pair between the host and the sandbox: one end in each network namespace, each with
/// a link-local IPv4 address in one /30, so XDP programs in the sandbox see a real driver path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethPair {
    /// The end inside the sandbox (`--veth NAME`).
    pub sandbox_name: String,
    /// The end on the host, named after the supervisor's pid.
    pub host_name: String,
    pub host_address: Ipv4Addr,
    pub sandbox_address: Ipv4Addr,
}

impl VethPair {
    pub const PREFIX: u8 = 30;

    /// Names and addresses for a sandbox of supervisor `supervisor_pid`: a 169.254.0.0/16 /30
    /// chosen from the pid, so concurrent sandboxes get different subnets.
    pub fn new(sandbox_name: &str, supervisor_pid: u32) -> Result<Self, NetError> {
        let bad = |why: &str| NetError::BadInterfaceName {
            name: sandbox_name.to_owned(),
            why: why.to_owned(),
        };
        if sandbox_name.is_empty() || sandbox_name.len() >= libc::IFNAMSIZ {
            return Err(bad("interface names have 1 to 15 bytes"));
        }
        if sandbox_name == "lo" || sandbox_name == "." || sandbox_name == ".." {
            return Err(bad("the name is taken inside the sandbox"));
        }
        if sandbox_name.contains(['/', ':', ' ', '\t', '\n', '\0']) {
            return Err(bad("interface names cannot contain '/', ':' or whitespace"));
        }
        let slot = supervisor_pid % 16_000;
        let third = u8::try_from(1 + slot / 64).expect("at most 250");
        let base = u8::try_from((slot % 64) * 4).expect("at most 252");
        Ok(Self {
            sandbox_name: sandbox_name.to_owned(),
            host_name: format!("tkn{supervisor_pid}"),
            host_address: Ipv4Addr::new(169, 254, third, base + 1),
            sandbox_address: Ipv4Addr::new(169, 254, third, base + 2),
        })
    }

    /// The supervisor's part, in the host's network namespace: create the pair with the peer
    /// already in `sandbox_pid`'s namespace, address and bring up the host end. The host end
    /// disappears with the sandbox's namespace (deleting one end of a veth deletes both).
    pub fn create(&self, sandbox_pid: i32) -> Result<(), NetError> {
        sys::netlink::create_veth(&self.host_name, &self.sandbox_name, sandbox_pid).map_err(
            |source| NetError::Veth {
                host_name: self.host_name.clone(),
                source: Diagnosed::new(Step::CreateVeth, source),
            },
        )?;
        let index = interface_index(&self.host_name)?;
        configure(&self.host_name, index, self.host_address)
    }

    /// The sandbox's part, in its own network namespace: address and bring up its end.
    pub fn configure_sandbox_end(&self) -> Result<(), NetError> {
        let index = interface_index(&self.sandbox_name)?;
        configure(&self.sandbox_name, index, self.sandbox_address)
    }
}

fn configure(name: &str, index: u32, address: Ipv4Addr) -> Result<(), NetError> {
    sys::netlink::add_ipv4_address(index, address, VethPair::PREFIX).map_err(|source| {
        NetError::Sys {
            step: "adding the veth address",
            source,
        }
    })?;
    sys::net::set_link_up(name).map_err(|source| NetError::Sys {
        step: "bringing up the veth end",
        source,
    })
}

/// Brings `lo` up: a new network namespace starts with its loopback down.
pub fn bring_up_loopback() -> Result<(), NetError> {
    sys::net::set_link_up("lo").map_err(|source| NetError::Sys {
        step: "bringing up lo",
        source,
    })
}

/// One UDP datagram over loopback to a socket bound for it.
///
/// A bound receiver means the kernel generates no ICMP port-unreachable reply (which would cross
/// `lo` a second time), and receiving the datagram proves it has passed XDP: no sleep needed.
pub struct LoopbackProbe {
    receiver: UdpSocket,
    sender: UdpSocket,
}

impl LoopbackProbe {
    pub fn new() -> Result<Self, NetError> {
        let io = |step| move |source| NetError::Io { step, source };
        let receiver = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(io("binding the receiving UDP socket"))?;
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(io("setting SO_RCVTIMEO"))?;
        let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(io("binding the sending UDP socket"))?;
        Ok(Self { receiver, sender })
    }

    pub fn destination(&self) -> Result<SocketAddr, NetError> {
        self.receiver.local_addr().map_err(|source| NetError::Io {
            step: "reading the receiver address",
            source,
        })
    }

    /// Sends one datagram and waits until the receiver has it.
    pub fn send_and_receive(&self) -> Result<(), NetError> {
        let destination = self.destination()?;
        const PAYLOAD: &[u8] = b"bpf-token-probe";
        self.sender
            .send_to(PAYLOAD, destination)
            .map_err(|source| NetError::Io {
                step: "sending the test datagram",
                source,
            })?;
        let mut buf = [0u8; 64];
        loop {
            let (len, from) = self
                .receiver
                .recv_from(&mut buf)
                .map_err(|source| NetError::Io {
                    step: "waiting for the test datagram (5 s timeout)",
                    source,
                })?;
            if &buf[..len] == PAYLOAD && Some(from) == self.sender.local_addr().ok() {
                return Ok(());
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(
        "interface {name:?} not found in this network namespace; list interfaces with `ip link` (inside token_userns_demo's sandbox only `lo` exists)"
    )]
    NoSuchInterface { name: String },
    #[error("{step}: {source}")]
    Sys {
        step: &'static str,
        source: SysError,
    },
    #[error("--veth {name:?}: {why}")]
    BadInterfaceName { name: String, why: String },
    #[error("creating the veth pair (host end {host_name}): {source}")]
    Veth {
        host_name: String,
        source: Diagnosed,
    },
    #[error("{step}: {source}")]
    Io {
        step: &'static str,
        source: io::Error,
    },
}
