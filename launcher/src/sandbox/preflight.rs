//! `token_userns_demo --check`: can this machine run the demo, and if not, why not.
//!
//! Each requirement is checked the way the demo would meet it, and the delegation itself is
//! not guessed from version numbers: a throw-away sandbox runs the whole demo on its own `lo`
//! (namespaces, delegated bpffs, token, load, attach, one datagram counted). Failures are
//! named with the rows of [`crate::diagnosis`], as the demo's own errors are.

use std::fmt;
use std::io::{Read as _, Seek as _};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use crate::bpf::{bpffs, btf};
use crate::diagnosis::{self, Cause, Diagnosed, Diagnosis, Step};
use crate::policy::risk::{self, CapsKept, DelegationRisk};
use crate::policy::{Delegation, EnumNames};
use crate::sandbox::supervisor::{
    self, ChildExit, SandboxAction, SupervisorError, SupervisorOptions,
};
use crate::sandbox::userns::{self, HostIdentity};
use crate::sys::{self, Errno, ErrnoName};

/// Whether a requirement is met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Missing,
    /// Not checked because an earlier requirement is missing.
    Skipped,
    /// An optional feature that cannot be used here; the demo runs without it.
    Unavailable,
}

/// One line of the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    pub name: &'static str,
    pub status: Status,
    /// What was found (for `ok`) or what failed (for `missing`).
    pub detail: String,
    /// The diagnosis key ([`Diagnosis::key`]) of a failure, when the table knows it.
    pub diagnosis: Option<String>,
    pub fix: Option<String>,
}

impl Finding {
    fn ok(name: &'static str, detail: String) -> Self {
        Self {
            name,
            status: Status::Ok,
            detail,
            diagnosis: None,
            fix: None,
        }
    }

    fn missing(name: &'static str, detail: String, fix: &str) -> Self {
        Self {
            name,
            status: Status::Missing,
            detail,
            diagnosis: None,
            fix: Some(fix.to_owned()),
        }
    }

    /// A failure whose message may end with the row's fix: the fix gets its own field.
    fn diagnosed(name: &'static str, detail: String, row: Option<&Diagnosis>) -> Self {
        let detail = match row {
            Some(d) => detail
                .strip_suffix(&format!("; fix: {}", d.fix))
                .map_or(detail.clone(), str::to_owned),
            None => detail,
        };
        Self {
            name,
            status: Status::Missing,
            detail,
            diagnosis: row.map(Diagnosis::key),
            fix: row.map(|d| d.fix.to_owned()),
        }
    }

    fn unavailable(name: &'static str, detail: String, fix: &str) -> Self {
        Self {
            name,
            status: Status::Unavailable,
            detail,
            diagnosis: None,
            fix: Some(fix.to_owned()),
        }
    }

    fn skipped(name: &'static str, why: &str) -> Self {
        Self {
            name,
            status: Status::Skipped,
            detail: why.to_owned(),
            diagnosis: None,
            fix: None,
        }
    }
}

/// All findings, in the order the demo needs them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// True when every requirement is met: the demo can run.
    pub ok: bool,
    pub checks: Vec<Finding>,
    /// What the checked delegation lets a sandboxed command reach beyond itself, with the
    /// command's default capabilities.
    pub risk: DelegationRisk,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for check in &self.checks {
            let status = match check.status {
                Status::Ok => "ok",
                Status::Missing => "MISSING",
                Status::Skipped => "skipped",
                Status::Unavailable => "n/a",
            };
            writeln!(f, "{status:<8} {:<width$}  {}", check.name, check.detail)?;
            if let Some(fix) = &check.fix {
                writeln!(f, "{:<8} {:<width$}  fix: {fix}", "", "")?;
            }
        }
        for line in self.risk.lines() {
            writeln!(f, "risk     {line}")?;
        }
        if self.ok {
            writeln!(f, "the demo can run on this machine")
        } else {
            writeln!(f, "the demo cannot run on this machine: see MISSING above")
        }
    }
}

/// What the throw-away sandbox delegates and as whom it runs.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub delegation: Delegation,
    pub identity: HostIdentity,
    /// `--cgroup-parent`: where the resource-limit check creates its cgroup.
    pub cgroup_parent: Option<PathBuf>,
}

/// Runs every check. Needs a single-threaded caller (the sandbox probe forks).
pub fn check(options: &CheckOptions) -> Report {
    let mut checks = vec![
        kernel_version(),
        bpf_syscall(),
        kernel_btf(),
        supervisor_privilege(),
    ];
    checks.extend(namespace_limits());
    checks.push(memlock());
    checks.push(resource_limits(options.cgroup_parent.as_deref()));
    let blocked = checks.iter().any(|c| c.status == Status::Missing);
    if blocked {
        let why = "not run: a requirement above is missing";
        checks.push(Finding::skipped(NAMESPACES, why));
        checks.push(Finding::skipped(DELEGATION, why));
        checks.push(Finding::skipped(XDP, why));
    } else {
        checks.extend(sandbox_probe(options));
    }
    Report {
        ok: checks
            .iter()
            .all(|c| matches!(c.status, Status::Ok | Status::Unavailable)),
        checks,
        risk: risk::assess(
            &options.delegation,
            CapsKept::DROPPED,
            EnumNames::for_running_kernel(),
        ),
    }
}

const NAMESPACES: &str = "sandbox namespaces";
const DELEGATION: &str = "bpffs delegation and token";
const XDP: &str = "XDP load, attach, count";

/// `major.minor` of a release string such as `6.18.0-rc1`.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn kernel_version() -> Finding {
    const NAME: &str = "kernel";
    let release = bpffs::kernel_release();
    match parse_release(&release) {
        Some(version) if version >= (6, 9) => Finding::ok(
            NAME,
            format!("Linux {release} (BPF tokens need 6.9 or later)"),
        ),
        Some(_) => Finding::missing(
            NAME,
            format!("Linux {release}: BPF tokens need 6.9 or later"),
            "boot a Linux 6.9+ kernel",
        ),
        None => Finding::missing(
            NAME,
            format!("cannot read the version in `{release}`"),
            "boot a Linux 6.9+ kernel",
        ),
    }
}

fn bpf_syscall() -> Finding {
    const NAME: &str = "bpf() and BPF_TOKEN_CREATE";
    let probe = sys::bpf::probe_token_create();
    if probe.errno == Errno::EBADF {
        return Finding::ok(
            NAME,
            format!(
                "{} failed with {}: the kernel knows the command",
                probe.call,
                ErrnoName(probe.errno)
            ),
        );
    }
    let diagnosed = Diagnosed::new(Step::BpfSyscall, probe);
    Finding::diagnosed(NAME, diagnosed.to_string(), diagnosed.diagnosis)
}

fn kernel_btf() -> Finding {
    const NAME: &str = "kernel BTF";
    let path = std::path::Path::new(btf::VMLINUX_BTF);
    match std::fs::metadata(path) {
        Ok(meta) => Finding::ok(
            NAME,
            format!("{} ({} KiB)", path.display(), meta.len() / 1024),
        ),
        Err(e) => {
            let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
            let diagnosed = Diagnosed::new(
                Step::KernelBtf,
                sys::SysError {
                    call: "stat(/sys/kernel/btf/vmlinux)",
                    errno,
                },
            );
            Finding::diagnosed(NAME, diagnosed.to_string(), diagnosed.diagnosis)
        }
    }
}

fn supervisor_privilege() -> Finding {
    const NAME: &str = "supervisor privilege";
    match userns::check_supervisor_privilege() {
        Ok(()) => Finding::ok(
            NAME,
            "CAP_SYS_ADMIN in the initial user namespace".to_owned(),
        ),
        Err(e) => Finding::missing(
            NAME,
            e.to_string(),
            "run the check as root: sudo token_userns_demo --check",
        ),
    }
}

/// The `user.max_*_namespaces` limits the sandbox needs above zero. The unprivileged-userns
/// switches (`kernel.apparmor_restrict_unprivileged_userns`, `kernel.unprivileged_userns_clone`)
/// restrict callers without CAP_SYS_ADMIN only; the root supervisor creates the namespaces, so
/// they are shown but do not decide (the sandbox probe below does).
fn namespace_limits() -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut limits = Vec::new();
    let mut zero = Vec::new();
    for name in ["user", "mnt", "net", "pid"] {
        let key = format!("user.max_{name}_namespaces");
        match read_sysctl(&key) {
            Some(0) => zero.push(key),
            Some(value) => limits.push(format!("{key}={value}")),
            None => limits.push(format!("{key} unreadable")),
        }
    }
    let name = "namespace limits";
    if zero.is_empty() {
        findings.push(Finding::ok(name, limits.join(", ")));
    } else {
        let row = diagnosis::row(Cause::UserNamespaceLimit);
        findings.push(Finding::diagnosed(
            name,
            format!("{} is 0: {}", zero.join(", "), row.cause),
            Some(row),
        ));
    }
    let switches: Vec<String> = [
        "kernel.apparmor_restrict_unprivileged_userns",
        "kernel.unprivileged_userns_clone",
    ]
    .into_iter()
    .filter_map(|key| read_sysctl(key).map(|v| format!("{key}={v}")))
    .collect();
    findings.push(Finding::ok(
        "unprivileged userns switches",
        if switches.is_empty() {
            "none on this kernel".to_owned()
        } else {
            format!(
                "{} (they restrict unprivileged callers only)",
                switches.join(", ")
            )
        },
    ));
    findings
}

fn read_sysctl(key: &str) -> Option<u64> {
    let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// BPF memory is charged to the memory cgroup since 5.11; RLIMIT_MEMLOCK only matters before.
fn memlock() -> Finding {
    const NAME: &str = "locked memory";
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)
        .map_or_else(
            |e| format!("unreadable ({e})"),
            |(soft, _)| {
                if soft == libc::RLIM_INFINITY {
                    "unlimited".to_owned()
                } else {
                    format!("{} KiB", soft / 1024)
                }
            },
        );
    Finding::ok(
        NAME,
        format!(
            "RLIMIT_MEMLOCK {limit}; not used for BPF memory since Linux 5.11 (the memory cgroup is charged instead)"
        ),
    )
}

/// `--memory-max` / `--pids-max`: whether the cgroups they need can be created here (they
/// are, then removed). Optional: the demo runs without them.
fn resource_limits(parent: Option<&std::path::Path>) -> Finding {
    const NAME: &str = "resource limits (cgroups)";
    match crate::sandbox::cgroup::probe(parent) {
        Ok(how) => Finding::ok(NAME, how),
        Err(err) => {
            let text = err.to_string();
            let (detail, fix) = text.split_once("; fix: ").unwrap_or((
                text.as_str(),
                "see the message; the sandbox runs without --memory-max and --pids-max",
            ));
            Finding::unavailable(
                NAME,
                format!("--memory-max and --pids-max cannot be used: {detail}"),
                fix,
            )
        }
    }
}

/// The demo in a throw-away sandbox, its stderr captured in a memfd.
fn sandbox_probe(options: &CheckOptions) -> Vec<Finding> {
    let stderr = match nix::sys::memfd::memfd_create(
        c"token-check-sandbox-stderr",
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
    ) {
        Ok(fd) => Arc::new(fd),
        Err(errno) => {
            return vec![Finding::missing(
                NAMESPACES,
                format!("memfd_create failed: {}", ErrnoName(errno)),
                "report this: the check could not capture the sandbox's messages",
            )];
        }
    };
    let supervisor_options = SupervisorOptions {
        delegation: options.delegation,
        veth: None,
        status: None,
        timeout: Some(std::time::Duration::from_secs(10)),
        identity: options.identity,
        bpffs_path: PathBuf::from("/sys/fs/bpf"),
        action: SandboxAction::Probe {
            stderr: Arc::clone(&stderr),
        },
        capabilities: crate::sandbox::confine::CapabilityChoice::default(),
        new_session: false,
        limits: None,
    };
    let result = supervisor::run(&supervisor_options);
    drop(supervisor_options);
    let sandbox_said = read_back(&stderr);
    if !sandbox_said.is_empty() {
        log::debug!("the probe sandbox wrote:\n{}", sandbox_said.trim_end());
    }
    classify(result, &sandbox_said)
}

fn read_back(memfd: &Arc<OwnedFd>) -> String {
    let mut file = std::fs::File::from(memfd.try_clone().expect("dup of the memfd"));
    let mut text = String::new();
    let _ = file.rewind().and_then(|()| file.read_to_string(&mut text));
    text
}

fn ok_namespaces() -> Finding {
    Finding::ok(
        NAMESPACES,
        "user, mount and network namespaces created; id maps written".to_owned(),
    )
}

fn ok_delegation() -> Finding {
    Finding::ok(
        DELEGATION,
        "bpffs delegated, created and mounted in the sandbox; token created".to_owned(),
    )
}

/// Turns the probe's outcome into the three findings: which stage failed, and why.
fn classify(result: Result<ChildExit, SupervisorError>, sandbox_said: &str) -> Vec<Finding> {
    let not_reached = |name| Finding::skipped(name, "not reached");
    match result {
        Ok(ChildExit::Exited(0)) => vec![
            ok_namespaces(),
            ok_delegation(),
            Finding::ok(
                XDP,
                "the counter was loaded with the token, attached to the sandbox's lo and counted the datagram".to_owned(),
            ),
        ],
        Err(SupervisorError::UserNs(userns::UserNsError::Create(d))) => vec![
            Finding::diagnosed(NAMESPACES, d.to_string(), d.diagnosis),
            not_reached(DELEGATION),
            not_reached(XDP),
        ],
        Err(SupervisorError::Bpffs(e)) => vec![
            ok_namespaces(),
            Finding::diagnosed(DELEGATION, e.to_string(), e.diagnosis()),
            not_reached(XDP),
        ],
        Err(other @ (SupervisorError::ChildDied { .. } | SupervisorError::PolicyMismatch(_))) => {
            from_sandbox_message(&other.to_string(), sandbox_said)
        }
        Ok(exit) => from_sandbox_message(&format!("sandbox child {exit}"), sandbox_said),
        Err(other) => vec![
            Finding::missing(
                NAMESPACES,
                other.to_string(),
                "see the message; run with -v for every step",
            ),
            not_reached(DELEGATION),
            not_reached(XDP),
        ],
    }
}

/// The sandbox failed on its side: its own error line says where.
fn from_sandbox_message(outcome: &str, sandbox_said: &str) -> Vec<Finding> {
    let line = sandbox_said
        .lines()
        .find_map(|l| l.strip_prefix("token_userns_demo: error: "))
        .map_or_else(|| outcome.to_owned(), str::to_owned);
    let row = diagnosis::find_in(&line);
    let stage = match row.map(|d| d.step) {
        Some(Step::CreateNetworkNamespace) => 0,
        Some(Step::Load | Step::AttachXdp) => 2,
        _ if line.starts_with("load:")
            || line.starts_with("attach:")
            || line.starts_with("count:")
            || line.starts_with("counter read:") =>
        {
            2
        }
        _ => 1,
    };
    let names = [NAMESPACES, DELEGATION, XDP];
    let mut findings = Vec::new();
    for (i, name) in names.into_iter().enumerate() {
        findings.push(match i.cmp(&stage) {
            std::cmp::Ordering::Less if i == 0 => ok_namespaces(),
            std::cmp::Ordering::Less => ok_delegation(),
            std::cmp::Ordering::Equal => {
                let mut finding = Finding::diagnosed(name, line.clone(), row);
                if row.is_none() {
                    finding.fix = Some("see the message; run with -v for every step".to_owned());
                }
                finding
            }
            std::cmp::Ordering::Greater => Finding::skipped(name, "not reached"),
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_versions_are_parsed() {
        assert_eq!(parse_release("6.18.0"), Some((6, 18)));
        assert_eq!(parse_release("6.8.0-49-generic"), Some((6, 8)));
        assert_eq!(parse_release("6.9-rc1"), Some((6, 9)));
        assert_eq!(parse_release("x"), None);
    }

    #[test]
    fn a_sandbox_load_error_marks_the_xdp_stage() {
        let row = diagnosis::row(Cause::TokenMissingDelegation);
        let said = format!(
            "[sandbox] trace\ntoken_userns_demo: error: load: loading the counter: creating map `COUNTER`: bpf(BPF_MAP_CREATE) failed: EPERM (Operation not permitted): {}: x; fix: {}\n",
            row.cause, row.fix
        );
        let findings = from_sandbox_message("exited with 1", &said);
        let statuses: Vec<Status> = findings.iter().map(|f| f.status).collect();
        assert_eq!(statuses, [Status::Ok, Status::Ok, Status::Missing]);
        assert_eq!(
            findings[2].diagnosis.as_deref(),
            Some("token-missing-delegation")
        );
    }

    #[test]
    fn a_sandbox_token_error_marks_the_delegation_stage() {
        let row = diagnosis::row(Cause::TokenNoDelegation);
        let said = format!(
            "token_userns_demo: error: token: creating a BPF token from /sys/fs/bpf: bpf(BPF_TOKEN_CREATE) failed: ENOENT (No such file or directory): {}; fix: {}\n",
            row.cause, row.fix
        );
        let findings = from_sandbox_message("exited with 1", &said);
        let statuses: Vec<Status> = findings.iter().map(|f| f.status).collect();
        assert_eq!(statuses, [Status::Ok, Status::Missing, Status::Skipped]);
        assert_eq!(findings[1].fix.as_deref(), Some(row.fix));
    }

    #[test]
    fn the_report_is_ok_only_when_every_check_is() {
        let report = Report {
            ok: false,
            checks: vec![
                Finding::ok("a", "fine".to_owned()),
                Finding::missing("bb", "gone".to_owned(), "get it"),
            ],
            risk: risk::assess(
                &Delegation::default(),
                CapsKept::DROPPED,
                &EnumNames::builtin(),
            ),
        };
        assert_eq!(
            report.to_string(),
            "ok       a   fine\nMISSING  bb  gone\n             fix: get it\nthe demo cannot run on this machine: see MISSING above\n"
        );
    }
}
