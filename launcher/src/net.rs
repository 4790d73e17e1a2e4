//! Network interfaces and the test datagram.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

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
    #[error("{step}: {source}")]
    Io {
        step: &'static str,
        source: io::Error,
    },
}
