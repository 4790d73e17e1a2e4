//! Glue for the scenarios: a child process in new namespaces, a message channel to it that also
//! carries descriptors, and the child's reports of what the library returned.
//!
//! The child runs a closure and always ends with `_exit` (never returning into libtest-mimic,
//! whose copy of the parent's state it shares). It reports observations as tagged messages over
//! a `SOCK_SEQPACKET` pair; the parent asserts on them, so a failed check is a failed trial with
//! a message. Errors on either side are `String`s, which `?` turns into libtest-mimic's `Failed`.

use std::ffi::CStr;
use std::fmt::Display;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use bpf_token_launcher::bpf::bpffs::{self, BpffsError};
use bpf_token_launcher::bpf::loader::LoadError;
use bpf_token_launcher::bpf::token::{Token, TokenError};
use bpf_token_launcher::diagnosis::{ALL_CAUSES, Cause, Diagnosed};
use bpf_token_launcher::mountinfo;
use bpf_token_launcher::policy::{DelegateKind, Delegation, EnumNames, delegate_options};
use bpf_token_launcher::sandbox::net;
use bpf_token_launcher::sandbox::userns::{self, HostIdentity, OVERFLOW_ID};
use bpf_token_launcher::sys::{self, Errno, SysError};
use libtest_mimic::Failed;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, getpid, getppid};

/// How long either side waits for a message or for the child's exit.
const TIMEOUT: Duration = Duration::from_secs(20);
/// The largest message; longer texts are cut.
const MAX_MESSAGE: usize = 32 * 1024;
/// Where a child attaches its bpffs inside its private mount namespace (the host's `/tmp` is
/// untouched: the child's `/` is `MS_REC | MS_PRIVATE`).
pub const CHILD_MOUNT_POINT: &CStr = c"/tmp";

/// Adds what was being done to an error, on either side.
pub trait Context<T> {
    fn context(self, what: &str) -> Result<T, String>;
}

impl<T, E: Display> Context<T> for Result<T, E> {
    fn context(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// One end of the parent/child channel.
pub struct Peer {
    sock: OwnedFd,
}

impl Peer {
    pub fn send(&self, tag: &str, payload: &str) -> Result<(), String> {
        self.send_fds(tag, payload, &[])
    }

    /// Sends `tag` and `payload` as one packet, with `fds` as `SCM_RIGHTS`.
    pub fn send_fds(&self, tag: &str, payload: &str, fds: &[BorrowedFd<'_>]) -> Result<(), String> {
        let mut text = format!("{tag}\n{payload}");
        if text.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        let rights = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
        let iov = [IoSlice::new(text.as_bytes())];
        loop {
            match sendmsg::<()>(
                self.sock.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Err(Errno::EINTR) => {}
                result => return result.map(drop).context(&format!("sending {tag:?}")),
            }
        }
    }

    /// Receives the next message, which must be `tag`: its payload and descriptors.
    pub fn recv_fds(&self, tag: &str) -> Result<(String, Vec<OwnedFd>), String> {
        let mut fd = [PollFd::new(self.sock.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(TIMEOUT).expect("20 s fits");
        loop {
            match poll(&mut fd, timeout) {
                Ok(0) => return Err(format!("timed out after {TIMEOUT:?} waiting for {tag:?}")),
                Ok(_) => break,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(format!("poll while waiting for {tag:?}: {e}")),
            }
        }
        let (text, fds) = self.recv_now()?;
        let (got, payload) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        if text.is_empty() {
            return Err(format!("the other side closed the channel before {tag:?}"));
        }
        if got == "failed" && tag != "failed" {
            return Err(format!(
                "the child failed (while the parent waited for {tag:?}): {payload}"
            ));
        }
        if got != tag {
            return Err(format!("expected message {tag:?}, got {got:?}: {payload}"));
        }
        Ok((payload.to_owned(), fds))
    }

    fn recv_now(&self) -> Result<(String, Vec<OwnedFd>), String> {
        let mut buf = vec![0u8; MAX_MESSAGE + 64];
        let mut cmsg_space = nix::cmsg_space!([RawFd; 8]);
        loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg_space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(Errno::EINTR) => {}
                Err(e) => return Err(format!("recvmsg: {e}")),
                Ok(msg) => {
                    if msg
                        .flags
                        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC)
                    {
                        return Err("a truncated message".to_owned());
                    }
                    let mut fds = Vec::new();
                    for cmsg in msg.cmsgs().context("recvmsg control data")? {
                        if let ControlMessageOwned::ScmRights(received) = cmsg {
                            // SAFETY: the kernel installed these descriptors for us; we own them.
                            fds.extend(
                                received
                                    .into_iter()
                                    .map(|raw| unsafe { OwnedFd::from_raw_fd(raw) }),
                            );
                        }
                    }
                    let len = msg.bytes;
                    return Ok((String::from_utf8_lossy(&buf[..len]).into_owned(), fds));
                }
            }
        }
    }

    pub fn recv(&self, tag: &str) -> Result<String, String> {
        let (payload, fds) = self.recv_fds(tag)?;
        if !fds.is_empty() {
            return Err(format!(
                "message {tag:?} carried {} unexpected descriptors",
                fds.len()
            ));
        }
        Ok(payload)
    }

    /// Receives a message carrying exactly one descriptor.
    pub fn recv_fd(&self, tag: &str) -> Result<OwnedFd, String> {
        let (_, mut fds) = self.recv_fds(tag)?;
        match (fds.pop(), fds.is_empty()) {
            (Some(fd), true) => Ok(fd),
            _ => Err(format!(
                "message {tag:?} should carry exactly one descriptor"
            )),
        }
    }

    /// Sends what a library call returned: `ok`, or the refusal.
    pub fn report<T>(&self, tag: &str, outcome: &Result<T, Refusal>) -> Result<(), String> {
        match outcome {
            Ok(_) => self.send(tag, "ok"),
            Err(refusal) => self.send(tag, &refusal.encode()),
        }
    }

    /// Receives a report: `Ok(())` for a success, else the refusal.
    pub fn recv_outcome(&self, tag: &str) -> Result<Result<(), Refusal>, String> {
        let payload = self.recv(tag)?;
        if payload == "ok" {
            Ok(Ok(()))
        } else {
            Ok(Err(Refusal::decode(&payload)?))
        }
    }

    /// Receives a report that must be a refusal.
    pub fn recv_refusal(&self, tag: &str) -> Result<Refusal, String> {
        match self.recv_outcome(tag)? {
            Ok(()) => Err(format!(
                "{tag}: the call succeeded, but the kernel should refuse it"
            )),
            Err(refusal) => Ok(refusal),
        }
    }

    /// Receives a report that must be a success.
    pub fn recv_ok(&self, tag: &str) -> Result<(), String> {
        match self.recv_outcome(tag)? {
            Ok(()) => Ok(()),
            Err(refusal) => Err(format!("{tag}: expected success, got {refusal}")),
        }
    }
}

/// What a refused library call reported: which error, the errno, the diagnosis and its detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The library's error variant, e.g. `BpffsError::Configure`, or the raw call.
    pub error: String,
    pub errno: Errno,
    pub cause: Option<Cause>,
    pub detail: Option<String>,
    /// The whole message, for failure reports.
    pub message: String,
}

impl Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?} {:?}: {}",
            self.error, self.errno, self.cause, self.message
        )
    }
}

impl Refusal {
    pub fn diagnosed(error: &str, source: &Diagnosed, message: impl Display) -> Self {
        Self {
            error: error.to_owned(),
            errno: source.errno(),
            cause: source.cause(),
            detail: source.detail.as_deref().map(str::to_owned),
            message: message.to_string(),
        }
    }

    /// A raw call without a diagnosis; `error` is the call's name.
    pub fn sys(source: SysError) -> Self {
        Self {
            error: source.call.to_owned(),
            errno: source.errno,
            cause: None,
            detail: None,
            message: source.to_string(),
        }
    }

    pub fn bpffs(e: &BpffsError) -> Self {
        let variant = match e {
            BpffsError::Open(_) => "BpffsError::Open",
            BpffsError::Configure { .. } => "BpffsError::Configure",
            BpffsError::Create(_) => "BpffsError::Create",
            BpffsError::Mount(_) => "BpffsError::Mount",
            BpffsError::NotBpfContext { .. } => "BpffsError::NotBpfContext",
            BpffsError::Probe(_) => "BpffsError::Probe",
        };
        match e.diagnosed() {
            Some(diagnosed) => Self::diagnosed(variant, diagnosed, e),
            None => Self {
                error: variant.to_owned(),
                errno: Errno::UnknownErrno,
                cause: None,
                detail: None,
                message: e.to_string(),
            },
        }
    }

    pub fn token(e: &TokenError) -> Self {
        match e {
            TokenError::Create { source, .. } => Self::diagnosed("TokenError::Create", source, e),
            TokenError::Open { .. } => Self {
                error: "TokenError::Open".to_owned(),
                errno: e.errno().unwrap_or(Errno::UnknownErrno),
                cause: None,
                detail: None,
                message: e.to_string(),
            },
        }
    }

    pub fn load(e: &LoadError) -> Self {
        let (variant, source) = match e {
            LoadError::Btf { source, .. } => ("LoadError::Btf", source),
            LoadError::MapCreate { source, .. } => ("LoadError::MapCreate", source),
            LoadError::ProgLoad { source, .. } => ("LoadError::ProgLoad", source),
            other => {
                return Self {
                    error: "LoadError (other)".to_owned(),
                    errno: other.errno().unwrap_or(Errno::UnknownErrno),
                    cause: None,
                    detail: None,
                    message: other.to_string(),
                };
            }
        };
        Self::diagnosed(variant, source, e)
    }

    /// Checks the error variant, errno and diagnosis.
    pub fn expect(&self, error: &str, errno: Errno, cause: Option<Cause>) -> Result<(), Failed> {
        if self.error != error || self.errno != errno || self.cause != cause {
            return Err(format!(
                "expected {error} {errno:?} {cause:?}, got {} {:?} {:?}: {}",
                self.error, self.errno, self.cause, self.message
            )
            .into());
        }
        Ok(())
    }

    /// Checks that the diagnosis detail contains `text`.
    pub fn expect_detail(&self, text: &str) -> Result<(), Failed> {
        match &self.detail {
            Some(detail) if detail.contains(text) => Ok(()),
            _ => Err(format!(
                "expected a detail naming {text:?}, got {:?} ({})",
                self.detail, self.message
            )
            .into()),
        }
    }

    fn encode(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}\n{}",
            self.error,
            self.errno as i32,
            self.cause
                .map_or_else(|| "-".to_owned(), |c| format!("{c:?}")),
            self.detail.as_deref().unwrap_or("-").replace('\n', " "),
            self.message
        )
    }

    fn decode(text: &str) -> Result<Self, String> {
        let mut lines = text.splitn(5, '\n');
        let mut next = || {
            lines
                .next()
                .ok_or_else(|| format!("malformed report {text:?}"))
        };
        let error = next()?.to_owned();
        let errno = Errno::from_raw(
            next()?
                .parse()
                .map_err(|_| format!("malformed errno in {text:?}"))?,
        );
        let cause = match next()? {
            "-" => None,
            name => Some(
                ALL_CAUSES
                    .into_iter()
                    .find(|c| format!("{c:?}") == name)
                    .ok_or_else(|| format!("unknown cause {name:?}"))?,
            ),
        };
        let detail = match next()? {
            "-" => None,
            d => Some(d.to_owned()),
        };
        let message = next()?.to_owned();
        Ok(Self {
            error,
            errno,
            cause,
            detail,
            message,
        })
    }
}

/// The namespaces of a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespaces {
    /// A user namespace only (it keeps the host's mount namespace).
    User,
    /// User and mount namespaces, as the product's sandbox.
    UserMount,
    /// Also its own network namespace with `lo` up (for XDP).
    UserMountNet,
}

/// A child process in new namespaces, root inside them and host uid/gid 65534 outside.
/// Dropping it kills and reaps the child.
pub struct Child {
    pid: Pid,
    pub peer: Peer,
    reaped: bool,
}

/// Forks a child into `namespaces`; it sets itself up as the product's sandbox does
/// (`supervisor.rs`, `sandbox()`), then runs `body`.
pub fn spawn(
    namespaces: Namespaces,
    body: impl FnOnce(&Peer) -> Result<(), String>,
) -> Result<Child, Failed> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map(Iterator::count)
        .ok();
    if threads != Some(1) {
        return Err(format!(
            "fork_into needs a single-threaded caller; this process has {threads:?} threads"
        )
        .into());
    }
    let (parent_end, child_end) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .context("socketpair")?;
    let flags = match namespaces {
        Namespaces::User => CloneFlags::CLONE_NEWUSER,
        Namespaces::UserMount | Namespaces::UserMountNet => {
            CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS
        }
    };
    let parent = getpid();
    // SAFETY: the trials run one by one on the main thread (test_threads = 1, checked above).
    let forked = unsafe { sys::process::fork_into(flags, "clone3(CLONE_NEWUSER [| CLONE_NEWNS])") }
        .context("fork_into")?;
    match forked {
        ForkResult::Child => {
            drop(parent_end);
            let peer = Peer { sock: child_end };
            let run = std::panic::AssertUnwindSafe(|| {
                set_up_child(namespaces, parent, &peer)?;
                body(&peer)
            });
            let code = match std::panic::catch_unwind(run) {
                Ok(Ok(())) => 0,
                Ok(Err(e)) => {
                    let _ = peer.send("failed", &e);
                    1
                }
                Err(panic) => {
                    let text = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default();
                    let _ = peer.send("failed", &format!("panicked: {text}"));
                    2
                }
            };
            // Never return into the harness; `_exit` also keeps the parent's buffered output
            // from being written a second time.
            // SAFETY: _exit ends the process at once; nothing runs after it.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child: pid } => {
            drop(child_end);
            let child = Child {
                pid,
                peer: Peer { sock: parent_end },
                reaped: false,
            };
            let identity = HostIdentity {
                uid: OVERFLOW_ID,
                gid: OVERFLOW_ID,
            };
            userns::write_id_maps(pid, identity).context("write_id_maps")?;
            child.peer.send("id-maps", "")?;
            Ok(child)
        }
    }
}

/// The child's setup, in the product's order: parent-death signal, `/` private (nothing mounted
/// here may propagate to the host), the network namespace, then root in the user namespace.
fn set_up_child(namespaces: Namespaces, parent: Pid, peer: &Peer) -> Result<(), String> {
    let die_with_parent = || -> Result<(), String> {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("prctl(PR_SET_PDEATHSIG)")?;
        if getppid() != parent {
            return Err("the parent is gone".to_owned());
        }
        Ok(())
    };
    die_with_parent()?;
    if namespaces != Namespaces::User {
        sys::mount::make_tree_private().context("making / private")?;
    }
    if namespaces == Namespaces::UserMountNet {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
        net::bring_up_loopback().context("bringing up lo")?;
    }
    peer.recv("id-maps")?;
    userns::become_namespace_root().context("become_namespace_root")?;
    // The kernel clears the parent-death signal when credentials change.
    die_with_parent()
}

impl Child {
    pub const fn pid(&self) -> Pid {
        self.pid
    }

    /// Waits for the child to exit 0.
    pub fn finish(mut self) -> Result<(), Failed> {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok(WaitStatus::StillAlive) => {
                    return Err(
                        format!("child {} did not exit within {TIMEOUT:?}", self.pid).into(),
                    );
                }
                Ok(status) => break status,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(format!("waitpid({}): {e}", self.pid).into()),
            }
        };
        self.reaped = true;
        if status == WaitStatus::Exited(self.pid, 0) {
            return Ok(());
        }
        // A child that failed after the parent's last read left its reason in the channel.
        let reason = self
            .peer
            .recv_now()
            .map(|(text, _)| text)
            .unwrap_or_default();
        Err(format!(
            "child ended with {status:?}: {}",
            reason.trim_start_matches("failed\n")
        )
        .into())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

// ---- the delegation steps, split between the child and the parent as the kernel wants ----

/// Child: `fsopen("bpf")` `count` times and hands the contexts to the parent.
pub fn child_open_contexts(peer: &Peer, count: usize) -> Result<Vec<OwnedFd>, String> {
    let contexts = (0..count)
        .map(|_| bpffs::open_context().context("bpffs::open_context"))
        .collect::<Result<Vec<_>, _>>()?;
    let fds: Vec<BorrowedFd<'_>> = contexts.iter().map(|c| c.as_fd()).collect();
    peer.send_fds("contexts", "", &fds)?;
    Ok(contexts)
}

/// Child: the delegated bpffs instances, one per delegation the parent sets, mounted detached.
pub fn child_delegated_mounts(peer: &Peer, count: usize) -> Result<Vec<OwnedFd>, String> {
    let contexts = child_open_contexts(peer, count)?;
    peer.recv("created")?;
    contexts
        .iter()
        .map(|c| bpffs::mount(c.as_fd()).context("bpffs::mount"))
        .collect()
}

/// Child: one delegated bpffs, mounted detached.
pub fn child_delegated_mount(peer: &Peer) -> Result<OwnedFd, String> {
    Ok(child_delegated_mounts(peer, 1)?.remove(0))
}

/// Parent: sets one delegation on each of the child's contexts and creates the superblocks.
pub fn parent_delegate(child: &Child, delegations: &[Delegation]) -> Result<(), Failed> {
    let (_, contexts) = child.peer.recv_fds("contexts")?;
    if contexts.len() != delegations.len() {
        return Err(format!(
            "got {} contexts for {} delegations",
            contexts.len(),
            delegations.len()
        )
        .into());
    }
    for (context, delegation) in contexts.iter().zip(delegations) {
        bpffs::delegate_and_create(context.as_fd(), delegation)
            .context("bpffs::delegate_and_create")?;
    }
    Ok(child.peer.send("created", "")?)
}

/// A token from a bpffs root given as a descriptor, opened again through `/proc/self/fd/N` as
/// the product does: `fsmount` returns an `O_PATH` descriptor, which `fdget` in
/// `bpf_token_create` does not accept (see `token_create_from_o_path_fd_is_ebadf`).
pub fn token_from_mount(mount: BorrowedFd<'_>) -> Result<Token, Refusal> {
    let path = format!("/proc/self/fd/{}", mount.as_raw_fd());
    Token::from_bpffs_path(Path::new(&path)).map_err(|e| Refusal::token(&e))
}

/// Parent: the `delegate_*` options of the bpffs the child attached at [`CHILD_MOUNT_POINT`],
/// from `/proc/<child>/mountinfo`, one `(option, value)` per item as the kernel shows them.
pub fn child_mounted_delegation(child: &Child) -> Result<Vec<(DelegateKind, String)>, Failed> {
    let mounts = mountinfo::read(Some(child.pid())).context("mountinfo::read")?;
    let point = Path::new(CHILD_MOUNT_POINT.to_str().expect("ASCII"));
    let entry = mounts
        .iter()
        .rev()
        .find(|m| m.mount_point == point && m.fs_type == "bpf")
        .ok_or_else(|| {
            format!(
                "no bpffs at {} in /proc/{}/mountinfo",
                point.display(),
                child.pid()
            )
        })?;
    Ok(delegate_options(&entry.super_options)
        .map(|(kind, value)| (kind, value.to_owned()))
        .collect())
}

/// A delegation written in the kernel's names, e.g. `("map_create:prog_load", "array", "xdp", "xdp")`
/// (empty for none), parsed with the running kernel's enum names.
pub fn delegation(cmds: &str, maps: &str, progs: &str, attachs: &str) -> Delegation {
    let names = EnumNames::for_running_kernel();
    let mut delegation = Delegation::default();
    for (kind, text) in DelegateKind::ALL
        .into_iter()
        .zip([cmds, maps, progs, attachs])
    {
        if !text.is_empty() {
            let mask = names
                .parse(kind, text)
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            delegation.set(kind, mask);
        }
    }
    delegation
}

/// The four masks in the token's fdinfo form, for reports.
pub fn masks_text(d: &Delegation) -> String {
    DelegateKind::ALL
        .into_iter()
        .map(|kind| format!("{}={}", kind.fdinfo_key(), d.get(kind).fdinfo_form()))
        .collect::<Vec<_>>()
        .join(" ")
}
