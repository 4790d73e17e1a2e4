//! Machine-readable events for CI (`--json-status FD`, as bubblewrap's `--json-status-fd`): one
//! JSON object per line.
//!
//! - `{"event":"sandbox-ready","supervisor_pid":..,"sandbox_pid":..,"namespaces":{"user":..,
//!   "mnt":..,"net":..,"pid":..},"bpffs_path":..,"delegation":{"delegate_cmds":..,..},
//!   "capabilities_dropped":[..],"risk":{..},"veth":..}` once the delegated bpffs is verified,
//!   before the command starts (`risk`: what the delegation lets the command reach,
//!   [`risk::assess`]; `veth` is null or `{"host":"tkn123","host_address":"169.254.1.1",
//!   "sandbox":..,"sandbox_address":..,"subnet":"169.254.1.0/30"}`);
//! - `{"event":"limits","memory_max":..,"pids_max":..,"cgroups":[{"version":"v1","controllers":
//!   ["memory"],"path":..,"settings":{"memory.limit_in_bytes":..}},..]}` before that, only when
//!   the run has a cgroup (`--memory-max`, `--pids-max`, `--cgroup-parent`);
//! - `{"event":"gateway","notified":..,"patched":..,"token_injected":..,"uncovered_calls":[..],
//!   ..}` when a command made calls through the `bpf()` gateway, just before `exited`: each
//!   uncovered call has `command`, `map_type`/`prog_type`/`expected_attach_type` (names or null), `missing`
//!   (`{"delegate_progs":[..],..}`) or `attr_too_short`, the first caller's `pid` and `comm`,
//!   and `calls`;
//! - `{"event":"exited","exit_code":..,"signal":..,"timed_out":..}` at the end; `signal` names
//!   the signal that killed the command (or the sandbox), else it is null.
//!
//! Writing an event never blocks the run: a reader that stopped reading (a full pipe) loses
//! events, with a warning, instead of stalling the sandbox, which `--timeout` could not help.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use nix::unistd::Pid;
use serde_json::{Value, json};

use nix::sys::signal::Signal;

use crate::policy::risk;
use crate::policy::{DelegateKind, Delegation, EnumNames};
use crate::sandbox::cgroup::SandboxCgroup;
use crate::sandbox::channel::CommandEnd;
use crate::sandbox::confine::CapabilityChoice;
use crate::sandbox::net::VethPair;
use crate::sandbox::relay::ChildExit;

/// Where events go; cheap to clone (the options that carry it are cloned).
#[derive(Debug, Clone)]
pub struct StatusSink(Arc<File>);

impl StatusSink {
    pub fn new(file: File) -> Self {
        Self(Arc::new(file))
    }

    fn emit(&self, event: &Value) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd as _;
        let line = format!("{event}\n");
        // A pipe or socket that polls writable takes a write this small (under PIPE_BUF)
        // without blocking; a regular file always does.
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLOUT)];
        let writable = matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
            && fds[0]
                .revents()
                .is_some_and(|events| events.contains(PollFlags::POLLOUT));
        if !writable {
            log::warn!(
                "--json-status: the reader is not reading (descriptor not writable); event lost"
            );
            return;
        }
        // A reader that went away must not stop the sandbox: the event is lost, the run goes on.
        match (&*self.0).write(line.as_bytes()) {
            Ok(n) if n == line.len() => {}
            Ok(n) => log::warn!(
                "--json-status: only {n} of {} bytes of an event were written",
                line.len()
            ),
            Err(e) => log::warn!("--json-status: writing an event failed: {e}"),
        }
    }

    pub fn sandbox_ready(
        &self,
        sandbox: Pid,
        bpffs_path: &Path,
        delegation: &Delegation,
        capabilities: &CapabilityChoice,
        names: &EnumNames,
        veth: Option<&VethPair>,
    ) {
        let namespace = |ns: &str| {
            std::fs::read_link(format!("/proc/{sandbox}/ns/{ns}"))
                .ok()
                .and_then(|link| namespace_inode(&link.to_string_lossy()))
        };
        let options: serde_json::Map<String, Value> = DelegateKind::ALL
            .into_iter()
            .filter(|kind| !delegation.get(*kind).is_empty())
            .map(|kind| {
                let value = names.render(kind, delegation.get(kind));
                (kind.option().to_owned(), Value::from(value))
            })
            .collect();
        self.emit(&json!({
            "event": "sandbox-ready",
            "supervisor_pid": std::process::id(),
            "sandbox_pid": sandbox.as_raw(),
            "namespaces": {
                "user": namespace("user"),
                "mnt": namespace("mnt"),
                "net": namespace("net"),
                "pid": namespace("pid"),
            },
            "bpffs_path": bpffs_path,
            "delegation": options,
            "capabilities_dropped": capabilities.dropped_names(),
            "risk": risk::assess(delegation, capabilities.caps_kept(), names),
            "veth": veth.map(|v| json!({
                "host": v.host_name,
                "host_address": v.subnet.map(|s| s.host_address().to_string()),
                "sandbox": v.sandbox_name,
                "sandbox_address": v.subnet.map(|s| s.sandbox_address().to_string()),
                "subnet": v.subnet.map(|s| s.to_string()),
            })),
        }));
    }

    /// The sandbox's cgroups and limits, once the sandbox child is in them.
    pub fn limits(&self, cgroup: &SandboxCgroup) {
        let mut event = cgroup.to_json();
        event["event"] = Value::from("limits");
        self.emit(&event);
    }

    /// `command` is how the command ended as the sandbox reported it (the sandbox's own exit
    /// status says 128 + N for a command killed by signal N).
    pub fn exited(&self, exit: ChildExit, command: Option<CommandEnd>) {
        let signal = match (exit, command) {
            (ChildExit::Signaled(signal), _) => Some(signal.as_str()),
            (ChildExit::Exited(_), Some(CommandEnd::Signaled(number))) => {
                Signal::try_from(i32::from(number)).ok().map(Signal::as_str)
            }
            _ => None,
        };
        self.emit(&json!({
            "event": "exited",
            "exit_code": exit.exit_code(),
            "signal": signal,
            "timed_out": matches!(exit, ChildExit::TimedOut(_)),
        }));
    }
}

impl StatusSink {
    /// The sandbox's `bpf()` gateway at the command's end (written by the sandbox before it
    /// exits, so it precedes `exited`): its counts and the calls the delegation did not cover.
    pub fn gateway(&self, report: &Value) {
        let mut event = json!({ "event": "gateway" });
        if let (Some(event), Some(report)) = (event.as_object_mut(), report.as_object()) {
            event.extend(report.clone());
        }
        self.emit(&event);
    }
}

/// `user:[4026531837]` → 4026531837.
fn namespace_inode(link: &str) -> Option<u64> {
    link.split_once(":[")?.1.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn namespace_links_give_their_inode() {
        assert_eq!(
            super::namespace_inode("net:[4026531840]"),
            Some(4_026_531_840)
        );
        assert_eq!(super::namespace_inode("garbage"), None);
    }
}
