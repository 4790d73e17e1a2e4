//! Machine-readable events for CI (`--json-status FD`, as bubblewrap's `--json-status-fd`): one
//! JSON object per line.
//!
//! - `{"event":"sandbox-ready","supervisor_pid":..,"sandbox_pid":..,"namespaces":{"user":..,
//!   "mnt":..,"net":..,"pid":..},"bpffs_path":..,"delegation":{"delegate_cmds":..,..},"veth":..}`
//!   once the delegated bpffs is verified, before the command starts; `veth` is null or
//!   `{"host":"tkn123","host_address":"169.254.1.1","sandbox":..,"sandbox_address":..,
//!   "subnet":"169.254.1.0/30"}`;
//! - `{"event":"exited","exit_code":..,"signal":..,"timed_out":..}` at the end.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::net::VethPair;
use crate::policy::{DelegateKind, Delegation, EnumNames};
use crate::relay::ChildExit;

/// Where events go; cheap to clone (the options that carry it are cloned).
#[derive(Debug, Clone)]
pub struct StatusSink(Arc<File>);

impl StatusSink {
    pub fn new(file: File) -> Self {
        Self(Arc::new(file))
    }

    fn emit(&self, event: &Value) {
        // A reader that went away must not stop the sandbox: the event is lost, the run goes on.
        if let Err(e) = writeln!(&*self.0, "{event}") {
            log::warn!("--json-status: writing an event failed: {e}");
        }
    }

    pub fn sandbox_ready(
        &self,
        sandbox: Pid,
        bpffs_path: &Path,
        delegation: &Delegation,
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
            "veth": veth.map(|v| json!({
                "host": v.host_name,
                "host_address": v.subnet.map(|s| s.host_address().to_string()),
                "sandbox": v.sandbox_name,
                "sandbox_address": v.subnet.map(|s| s.sandbox_address().to_string()),
                "subnet": v.subnet.map(|s| s.to_string()),
            })),
        }));
    }

    pub fn exited(&self, exit: ChildExit) {
        let signal = match exit {
            ChildExit::Signaled(signal) => Some(signal.as_str()),
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
