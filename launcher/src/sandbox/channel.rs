//! The supervisor/sandbox channel: a `SOCK_SEQPACKET` socket pair carrying typed messages.
//!
//! Each message is one packet (a tag byte); the bpffs context descriptor travels as
//! `SCM_RIGHTS` with its message. Each side has its own type with one method per step, so a
//! message out of order is reported as "expected X, got Y" instead of being misread.
//!
//! The descriptor is passed with nix's `sendmsg`/`recvmsg` rather than the `sendfd` crate:
//! `sendfd` 0.4 receives without `MSG_CMSG_CLOEXEC` and does not report `MSG_CTRUNC`.

use std::cell::Cell;
use std::fmt;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd};
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};

use crate::sys::{Errno, SysError};

/// The messages, in protocol order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageKind {
    /// Supervisor → sandbox: uid_map, setgroups and gid_map of the new user namespace are
    /// written (the supervisor writes them as soon as `clone3` returns).
    IdMapsWritten = 2,
    /// Sandbox → supervisor: a bpffs context from `fsopen`, with the descriptor attached.
    BpffsContext = 3,
    /// Supervisor → sandbox: delegation set, superblock created; mount it.
    SuperblockCreated = 4,
    /// Sandbox → supervisor: the bpffs is mounted at its path; check what the kernel shows.
    BpffsMounted = 5,
    /// Supervisor → sandbox: the mounted delegation is exactly the one asked for; go on.
    DelegationVerified = 6,
    /// Sandbox → supervisor, as the sandbox exits: how the command ended. The sandbox is the
    /// PID namespace's init, which cannot die of the command's signal (the kernel ignores
    /// signals an init sends itself), so its own exit status can only say 128 + N.
    CommandEnded = 7,
}

impl MessageKind {
    fn from_tag(tag: u8) -> Option<Self> {
        [
            Self::IdMapsWritten,
            Self::BpffsContext,
            Self::SuperblockCreated,
            Self::BpffsMounted,
            Self::DelegationVerified,
            Self::CommandEnded,
        ]
        .into_iter()
        .find(|k| *k as u8 == tag)
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::IdMapsWritten => "IdMapsWritten",
            Self::BpffsContext => "BpffsContext (with an fd)",
            Self::SuperblockCreated => "SuperblockCreated",
            Self::BpffsMounted => "BpffsMounted",
            Self::DelegationVerified => "DelegationVerified",
            Self::CommandEnded => "CommandEnded",
        })
    }
}

/// What arrived instead of the expected message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Message(MessageKind),
    UnknownTag(u8),
    Truncated,
    MissingFd,
}

impl fmt::Display for Received {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Message(kind) => write!(f, "{kind}"),
            Self::UnknownTag(tag) => write!(f, "an unknown message tag {tag}"),
            Self::Truncated => f.write_str("a truncated message or descriptor list"),
            Self::MissingFd => f.write_str("the message without its descriptor"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("protocol error: expected {expected}, got {got}")]
    Unexpected {
        expected: MessageKind,
        got: Received,
    },
    #[error(
        "the {peer} closed the channel while {expected} was expected (it exited or was killed)"
    )]
    Closed {
        peer: &'static str,
        expected: MessageKind,
    },
    #[error(
        "the {peer} did not send {expected} before the --timeout deadline (stopped or stalled)"
    )]
    TimedOut {
        peer: &'static str,
        expected: MessageKind,
    },
    #[error("{0}")]
    Sys(SysError),
}

/// How the command ended, as the sandbox reports it ([`MessageKind::CommandEnded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandEnd {
    Exited(u8),
    Signaled(u8),
}

/// Both ends, before the fork.
pub struct ChannelPair {
    pub supervisor: SupervisorChannel,
    pub sandbox: SandboxChannel,
}

/// `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)`.
pub fn channel_pair() -> Result<ChannelPair, ChannelError> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|errno| {
        ChannelError::Sys(SysError {
            call: "socketpair(AF_UNIX, SOCK_SEQPACKET)",
            errno,
        })
    })?;
    Ok(ChannelPair {
        supervisor: SupervisorChannel(Endpoint {
            fd: a,
            peer: "sandbox child",
            deadline: Cell::new(None),
        }),
        sandbox: SandboxChannel(Endpoint {
            fd: b,
            peer: "supervisor",
            deadline: Cell::new(None),
        }),
    })
}

struct Endpoint {
    fd: OwnedFd,
    peer: &'static str,
    /// Receives give up at this instant (the supervisor's `--timeout`, which covers the setup:
    /// a sandbox stopped by a same-uid host process must not hang the supervisor).
    deadline: Cell<Option<Instant>>,
}

/// The most payload a message carries after its tag.
const MAX_PAYLOAD: usize = 2;

impl Endpoint {
    fn send(&self, kind: MessageKind, fd: Option<BorrowedFd<'_>>) -> Result<(), ChannelError> {
        self.send_with(kind, &[], fd)
    }

    fn send_with(
        &self,
        kind: MessageKind,
        payload: &[u8],
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), ChannelError> {
        debug_assert!(payload.len() <= MAX_PAYLOAD);
        let packet = [&[kind as u8], payload].concat();
        let iov = [IoSlice::new(&packet)];
        let raw: Vec<RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
        let cmsgs: Vec<ControlMessage<'_>> = if raw.is_empty() {
            vec![]
        } else {
            vec![ControlMessage::ScmRights(&raw)]
        };
        loop {
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                &cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => break,
                Err(Errno::EINTR) => {}
                Err(Errno::EPIPE | Errno::ECONNRESET) => {
                    return Err(ChannelError::Closed {
                        peer: self.peer,
                        expected: kind,
                    });
                }
                Err(errno) => {
                    return Err(ChannelError::Sys(SysError {
                        call: "sendmsg",
                        errno,
                    }));
                }
            }
        }
        log::trace!("sent {kind}");
        Ok(())
    }

    /// Waits until a message can be read or the deadline passes.
    fn wait_readable(&self, expected: MessageKind) -> Result<(), ChannelError> {
        let Some(deadline) = self.deadline.get() else {
            return Ok(());
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ChannelError::TimedOut {
                    peer: self.peer,
                    expected,
                });
            }
            // Rounded up so a sub-millisecond remainder does not spin.
            let ms = i32::try_from(left.as_millis().saturating_add(1)).unwrap_or(i32::MAX);
            let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) | Err(Errno::EINTR) => {}
                // Readable, or hung up: the receive below tells which.
                Ok(_) => return Ok(()),
                Err(errno) => {
                    return Err(ChannelError::Sys(SysError {
                        call: "poll",
                        errno,
                    }));
                }
            }
        }
    }

    /// Receives one message, which must be `expected`; returns its descriptor if it carried one.
    fn receive(&self, expected: MessageKind) -> Result<Option<OwnedFd>, ChannelError> {
        let (payload, fd) = self.receive_with(expected, 0, MsgFlags::empty())?;
        debug_assert!(payload.is_empty());
        Ok(fd)
    }

    /// Receives one message of kind `expected` with exactly `payload_len` bytes after its tag.
    fn receive_with(
        &self,
        expected: MessageKind,
        payload_len: usize,
        extra_flags: MsgFlags,
    ) -> Result<(Vec<u8>, Option<OwnedFd>), ChannelError> {
        self.wait_readable(expected)?;
        let mut tag = [0u8; 2 + MAX_PAYLOAD];
        let mut cmsg_space = nix::cmsg_space!([RawFd; 1]);
        let (len, flags, fds) = loop {
            let mut iov = [IoSliceMut::new(&mut tag)];
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg_space),
                MsgFlags::MSG_CMSG_CLOEXEC | extra_flags,
            ) {
                Ok(msg) => {
                    let mut fds = Vec::new();
                    for cmsg in msg.cmsgs().map_err(|errno| {
                        ChannelError::Sys(SysError {
                            call: "recvmsg",
                            errno,
                        })
                    })? {
                        if let ControlMessageOwned::ScmRights(received) = cmsg {
                            // SAFETY: the kernel installed these descriptors for us; we own them now.
                            fds.extend(
                                received
                                    .into_iter()
                                    .map(|raw| unsafe { OwnedFd::from_raw_fd(raw) }),
                            );
                        }
                    }
                    break (msg.bytes, msg.flags, fds);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    return Err(ChannelError::Closed {
                        peer: self.peer,
                        expected,
                    });
                }
                // A peer that exits with a message of ours still unread resets the connection
                // instead of closing it: the same end for the protocol.
                Err(Errno::ECONNRESET) => {
                    return Err(ChannelError::Closed {
                        peer: self.peer,
                        expected,
                    });
                }
                Err(errno) => {
                    return Err(ChannelError::Sys(SysError {
                        call: "recvmsg",
                        errno,
                    }));
                }
            }
        };
        if len == 0 {
            return Err(ChannelError::Closed {
                peer: self.peer,
                expected,
            });
        }
        let got = MessageKind::from_tag(tag[0]).ok_or(ChannelError::Unexpected {
            expected,
            got: Received::UnknownTag(tag[0]),
        })?;
        if got != expected {
            return Err(ChannelError::Unexpected {
                expected,
                got: Received::Message(got),
            });
        }
        if len != 1 + payload_len || flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
            return Err(ChannelError::Unexpected {
                expected,
                got: Received::Truncated,
            });
        }
        let wants_fd = expected == MessageKind::BpffsContext;
        let mut fds = fds.into_iter();
        let fd = fds.next();
        match (wants_fd, &fd, fds.next()) {
            (true, Some(_), None) | (false, None, None) => {}
            (true, None, _) => {
                return Err(ChannelError::Unexpected {
                    expected,
                    got: Received::MissingFd,
                });
            }
            _ => {
                return Err(ChannelError::Unexpected {
                    expected,
                    got: Received::Truncated,
                });
            }
        }
        log::trace!("received {got}");
        Ok((tag[1..len].to_vec(), fd))
    }
}

/// The supervisor's end.
pub struct SupervisorChannel(Endpoint);

impl SupervisorChannel {
    pub fn id_maps_written(&self) -> Result<(), ChannelError> {
        self.0.send(MessageKind::IdMapsWritten, None)
    }

    pub fn wait_bpffs_context(&self) -> Result<OwnedFd, ChannelError> {
        let fd = self.0.receive(MessageKind::BpffsContext)?;
        Ok(fd.expect("receive checked the descriptor is present"))
    }

    pub fn superblock_created(&self) -> Result<(), ChannelError> {
        self.0.send(MessageKind::SuperblockCreated, None)
    }

    pub fn wait_bpffs_mounted(&self) -> Result<(), ChannelError> {
        self.0.receive(MessageKind::BpffsMounted).map(drop)
    }

    pub fn delegation_verified(&self) -> Result<(), ChannelError> {
        self.0.send(MessageKind::DelegationVerified, None)
    }

    /// Every wait from now on gives up at `deadline` with [`ChannelError::TimedOut`].
    pub fn set_deadline(&self, deadline: Option<Instant>) {
        self.0.deadline.set(deadline);
    }

    /// After the sandbox has exited: how its command ended, if it said so before exiting (a
    /// sandbox that failed before starting the command, or was killed, did not).
    pub fn command_end(&self) -> Option<CommandEnd> {
        self.0.deadline.set(None);
        let (payload, _) = self
            .0
            .receive_with(MessageKind::CommandEnded, 2, MsgFlags::MSG_DONTWAIT)
            .ok()?;
        match payload[..] {
            [0, code] => Some(CommandEnd::Exited(code)),
            [1, signal] => Some(CommandEnd::Signaled(signal)),
            _ => None,
        }
    }
}

/// The sandbox's end.
pub struct SandboxChannel(Endpoint);

impl SandboxChannel {
    pub fn wait_id_maps(&self) -> Result<(), ChannelError> {
        self.0.receive(MessageKind::IdMapsWritten).map(drop)
    }

    pub fn send_bpffs_context(&self, context: BorrowedFd<'_>) -> Result<(), ChannelError> {
        self.0.send(MessageKind::BpffsContext, Some(context))
    }

    pub fn wait_superblock(&self) -> Result<(), ChannelError> {
        self.0.receive(MessageKind::SuperblockCreated).map(drop)
    }

    pub fn bpffs_mounted(&self) -> Result<(), ChannelError> {
        self.0.send(MessageKind::BpffsMounted, None)
    }

    pub fn wait_delegation_verified(&self) -> Result<(), ChannelError> {
        self.0.receive(MessageKind::DelegationVerified).map(drop)
    }

    /// Just before the sandbox exits: how the command ended.
    pub fn command_ended(&self, end: CommandEnd) -> Result<(), ChannelError> {
        let payload = match end {
            CommandEnd::Exited(code) => [0, code],
            CommandEnd::Signaled(signal) => [1, signal],
        };
        self.0.send_with(MessageKind::CommandEnded, &payload, None)
    }

    /// Whether the supervisor still holds its end: the socket shows no hang-up. The parent-death
    /// signal only fires for a parent that dies after it is armed, so it is armed first and this
    /// checked after.
    pub fn supervisor_alive(&self) -> bool {
        let mut fds = [PollFd::new(self.0.fd.as_fd(), PollFlags::empty())];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => !fds[0]
                .revents()
                .is_some_and(|events| events.contains(PollFlags::POLLHUP)),
            // Cannot tell: the next receive reports a closed channel anyway.
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_in_order_pass_and_carry_the_descriptor() {
        let pair = channel_pair().unwrap();
        pair.supervisor.id_maps_written().unwrap();
        pair.sandbox.wait_id_maps().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        pair.sandbox.send_bpffs_context(file.as_fd()).unwrap();
        let fd = pair.supervisor.wait_bpffs_context().unwrap();
        pair.supervisor.superblock_created().unwrap();
        pair.sandbox.wait_superblock().unwrap();
        pair.sandbox.bpffs_mounted().unwrap();
        pair.supervisor.wait_bpffs_mounted().unwrap();
        pair.supervisor.delegation_verified().unwrap();
        pair.sandbox.wait_delegation_verified().unwrap();
        let flags = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(
            flags & libc::FD_CLOEXEC,
            0,
            "received descriptors must be close-on-exec"
        );
    }

    #[test]
    fn out_of_order_message_names_both() {
        let pair = channel_pair().unwrap();
        pair.supervisor.superblock_created().unwrap();
        let err = pair.sandbox.wait_id_maps().unwrap_err();
        assert_eq!(
            err.to_string(),
            "protocol error: expected IdMapsWritten, got SuperblockCreated"
        );
    }

    #[test]
    fn missing_descriptor_is_reported() {
        let pair = channel_pair().unwrap();
        pair.sandbox
            .0
            .send(MessageKind::BpffsContext, None)
            .unwrap();
        let err = pair.supervisor.wait_bpffs_context().unwrap_err();
        assert!(
            err.to_string()
                .ends_with("got the message without its descriptor"),
            "{err}"
        );
    }

    #[test]
    fn a_silent_peer_times_out_at_the_deadline() {
        let pair = channel_pair().unwrap();
        let start = Instant::now();
        pair.supervisor
            .set_deadline(Some(start + std::time::Duration::from_millis(50)));
        let err = pair.supervisor.wait_bpffs_mounted().unwrap_err();
        assert!(matches!(err, ChannelError::TimedOut { .. }), "{err}");
        assert!(start.elapsed() >= std::time::Duration::from_millis(50));
        assert!(err.to_string().contains("--timeout"), "{err}");
    }

    #[test]
    fn the_command_end_travels_with_its_signal() {
        let pair = channel_pair().unwrap();
        assert_eq!(pair.supervisor.command_end(), None);
        pair.sandbox
            .command_ended(CommandEnd::Signaled(15))
            .unwrap();
        assert_eq!(
            pair.supervisor.command_end(),
            Some(CommandEnd::Signaled(15))
        );
    }

    #[test]
    fn closed_peer_is_reported_not_hung() {
        let ChannelPair {
            supervisor,
            sandbox,
        } = channel_pair().unwrap();
        assert!(sandbox.supervisor_alive());
        drop(supervisor);
        assert!(!sandbox.supervisor_alive());
        let err = sandbox.wait_id_maps().unwrap_err();
        assert!(matches!(err, ChannelError::Closed { .. }), "{err}");
        assert!(
            err.to_string().contains("supervisor closed the channel"),
            "{err}"
        );
    }
}
