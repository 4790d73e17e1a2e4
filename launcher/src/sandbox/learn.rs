//! `--learn FILE [--minimize]`: the least privilege a command needs, found by running it.
//!
//! The learning run is an ordinary sandbox run of the command with every set delegated
//! (`any`) and the sandbox's `bpf()` gateway logging every call ([`crate::policy::learn`]),
//! those carrying a token of their own included; the sandbox's init writes the log to a memfd
//! the supervisor made, which the supervisor reads once the sandbox is gone. What the calls
//! asked for is the learned policy.
//!
//! `--minimize` then finds out, by running the command again, which of those items it really
//! needs. A first rerun with exactly the learned items checks that they reproduce the learning
//! run's exit status (a call the gateway cannot see, a `BPF_BTF_GET_FD_BY_ID` with a token
//! say, would show here). Then one rerun per item, in kind and value order, without that item
//! and without every item dropped before it: an item whose absence leaves the exit status
//! unchanged is dropped (the command tolerated the failed call: a loader's feature probe, for
//! instance), one whose absence changes it is kept. So the final set is exactly the one the
//! last accepted run had, never a guess; at most one rerun per item, plus the check. Because
//! the removal is greedy in one pass, an item kept early could in principle have become
//! optional after a later drop; the kept items' comments name the run that needed each.
//!
//! Every run is a whole sandbox run through [`supervisor::run`], one after the other from this
//! single-threaded process. The reruns get `/dev/null` as stdin, stdout and (unless `-v`)
//! stderr: their output would repeat the learning run's, and their failures are expected.
//! A rerun killed by a signal the supervisor forwards (Ctrl-C, `kill`) stops the minimization:
//! the learned, unminimized set is written, saying so.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::policy::calls::PolicyItem;
use crate::policy::export;
use crate::policy::learn::{self, CallLog, Hopeless, Learned};
use crate::policy::risk::CapsKept;
use crate::policy::{AnnotatedEntry, AnnotatedPolicy, DelegateKind, Delegation, EnumNames};
use crate::sandbox::relay::{ChildExit, FORWARDED};
use crate::sandbox::supervisor::{self, SandboxAction, SupervisorError, SupervisorOptions};
use crate::sys::SysError;

/// What one run of a `--learn` series records, and how its output is handled.
#[derive(Debug, Clone)]
pub struct Recording {
    /// A memfd the sandbox's init writes the gateway's call log to.
    log: Arc<OwnedFd>,
    /// For reruns: `/dev/null`, the command's stdin and stdout, and its stderr unless
    /// `keep_stderr`.
    quiet: Option<Arc<OwnedFd>>,
    keep_stderr: bool,
}

impl Recording {
    fn new(quiet: bool, keep_stderr: bool) -> Result<Self, LearnError> {
        let log =
            nix::sys::memfd::memfd_create(c"call-log", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                .map_err(|errno| {
                    LearnError::Memfd(SysError {
                        call: "memfd_create",
                        errno,
                    })
                })?;
        let quiet = if quiet {
            let null = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map_err(LearnError::DevNull)?;
            Some(Arc::new(OwnedFd::from(null)))
        } else {
            None
        };
        Ok(Self {
            log: Arc::new(log),
            quiet,
            keep_stderr,
        })
    }

    /// The descriptor the sandbox's init writes the log to.
    pub fn call_log(&self) -> BorrowedFd<'_> {
        self.log.as_fd()
    }

    /// In the sandbox child, before anything: a rerun's standard descriptors become
    /// `/dev/null` (best effort: a failure leaves the caller's).
    pub fn redirect_stdio(&self) {
        if let Some(null) = &self.quiet {
            let _ = nix::unistd::dup2_stdin(null.as_fd());
            let _ = nix::unistd::dup2_stdout(null.as_fd());
            if !self.keep_stderr {
                let _ = nix::unistd::dup2_stderr(null.as_fd());
            }
        }
    }

    /// The log as the sandbox left it: `None` when it wrote none (the command never ran).
    fn read_back(&self) -> Result<Option<Vec<u8>>, LearnError> {
        let file = File::from(self.log.try_clone().map_err(LearnError::ReadLog)?);
        let mut bytes = vec![0u8; learn::MAX_JSON + 1];
        let mut len = 0;
        while len < bytes.len() {
            match file.read_at(&mut bytes[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LearnError::ReadLog(e)),
            }
        }
        bytes.truncate(len);
        Ok((!bytes.is_empty()).then_some(bytes))
    }
}

/// In the sandbox's init, after the command ended: the log (or, when the gateway did not run,
/// a note saying so) into `fd`. Best effort: a failure is a warning, and the supervisor then
/// reports the missing log.
pub fn write_call_log(fd: BorrowedFd<'_>, log: Option<&CallLog>) {
    let json = log.map_or_else(CallLog::json_without_gateway, CallLog::to_json);
    let written = fd
        .try_clone_to_owned()
        .and_then(|owned| File::from(owned).write_all(json.to_string().as_bytes()));
    if let Err(error) = written {
        log::warn!("--learn: writing the call log for the supervisor failed: {error}");
    }
}

/// One run of the command and what the gateway saw.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// 1 for the learning run, then one more per rerun.
    pub run: u32,
    pub delegation: Delegation,
    pub exit: ChildExit,
    pub log: CallLog,
    pub elapsed: Duration,
}

/// What the minimization decided for one learned item.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Its absence left the exit status unchanged: left out.
    Optional(RunResult),
    /// Its absence changed the exit status: kept.
    Needed(RunResult),
    /// Kept without a run: every other item was dropped, and a delegation cannot be empty
    /// (the sandbox's token needs one delegated item).
    LastItem,
    /// Kept without a run: the minimization stopped before.
    NotTried,
}

/// Why the minimization stopped early or did not start.
#[derive(Debug, Clone)]
pub enum Stopped {
    /// The learning run failed: every rerun would fail too, whatever it lacks.
    LearningFailed,
    /// The learned set does not reproduce the learning run's exit status.
    LearnedSetDiffers,
    /// A rerun was killed by a signal the supervisor forwards (Ctrl-C, `kill`).
    Interrupted { run: u32, exit: ChildExit },
}

/// `--minimize`'s runs.
#[derive(Debug, Clone)]
pub struct Minimization {
    /// The rerun with exactly the learned items.
    pub check: Option<RunResult>,
    pub verdicts: Vec<(PolicyItem, Verdict)>,
    pub stopped: Option<Stopped>,
}

/// Everything a `--learn` series found.
#[derive(Debug, Clone)]
pub struct LearnOutcome {
    pub command: Vec<OsString>,
    pub caps: CapsKept,
    pub learning: RunResult,
    pub learned: Learned,
    pub minimization: Option<Minimization>,
    /// Runs of the command, the learning run included.
    pub runs: u32,
    pub elapsed: Duration,
}

/// Runs the learning series for `options` (a command: [`SandboxAction::Exec`]); its
/// delegation is ignored (the learning run delegates everything). `progress` gets a line per
/// step for the user; `verbose` keeps the reruns' stderr. Single-threaded caller only, as
/// [`supervisor::run`].
pub fn learn(
    options: &SupervisorOptions,
    minimize: bool,
    verbose: bool,
    progress: &mut dyn FnMut(String),
) -> Result<LearnOutcome, LearnError> {
    let SandboxAction::Exec { argv, .. } = &options.action else {
        return Err(LearnError::NotACommand);
    };
    let started = Instant::now();
    let names = EnumNames::for_running_kernel();
    let caps = options.capabilities.caps_kept();
    let mut runs = 0;
    let mut run = |delegation: Delegation, quiet: bool| -> Result<RunResult, LearnError> {
        runs += 1;
        run_once(options, runs, delegation, quiet, verbose)
    };
    let learning = run(Delegation::ANY, false)?;
    let learned = learning.log.learn(caps, names);
    log::debug!(
        "--learn: the command exited with status {} and asked for {}",
        learning.exit.exit_code(),
        describe_items(&learned.items, names)
    );
    let minimization = if minimize {
        Some(minimize_items(
            &learning, &learned, names, &mut run, progress,
        )?)
    } else {
        None
    };
    Ok(LearnOutcome {
        command: argv.clone(),
        caps,
        learning,
        learned,
        minimization,
        runs,
        elapsed: started.elapsed(),
    })
}

fn minimize_items(
    learning: &RunResult,
    learned: &Learned,
    names: &EnumNames,
    run: &mut dyn FnMut(Delegation, bool) -> Result<RunResult, LearnError>,
    progress: &mut dyn FnMut(String),
) -> Result<Minimization, LearnError> {
    let mut minimization = Minimization {
        check: None,
        verdicts: learned
            .items
            .iter()
            .map(|item| (*item, Verdict::NotTried))
            .collect(),
        stopped: None,
    };
    let baseline = learning.exit.exit_code();
    if baseline != 0 {
        minimization.stopped = Some(Stopped::LearningFailed);
        return Ok(minimization);
    }
    if learned.items.is_empty() {
        return Ok(minimization);
    }
    progress(format!(
        "--minimize: up to {} more runs of the command (their output is discarded)",
        learned.items.len() + 1
    ));
    let check = run(learned.delegation(), true)?;
    let check_code = check.exit.exit_code();
    progress(format!(
        "--minimize: run {} with the learned set: exit status {check_code}",
        check.run
    ));
    let interrupted = interruption(&check, baseline);
    minimization.check = Some(check.clone());
    if let Some(stopped) = interrupted {
        minimization.stopped = Some(stopped);
        return Ok(minimization);
    }
    if check_code != baseline {
        minimization.stopped = Some(Stopped::LearnedSetDiffers);
        return Ok(minimization);
    }
    let mut kept: Vec<PolicyItem> = learned.items.clone();
    for index in 0..minimization.verdicts.len() {
        let item = minimization.verdicts[index].0;
        let without: Vec<PolicyItem> = kept.iter().copied().filter(|i| *i != item).collect();
        if without.is_empty() {
            minimization.verdicts[index].1 = Verdict::LastItem;
            continue;
        }
        let result = run(learn::delegation_of(&without), true)?;
        let code = result.exit.exit_code();
        if let Some(stopped) = interruption(&result, baseline) {
            minimization.stopped = Some(stopped);
            return Ok(minimization);
        }
        let optional = code == baseline;
        progress(format!(
            "--minimize: run {} without {} {}: exit status {code}, {}",
            result.run,
            item.kind.option(),
            item.name(names),
            if optional { "optional" } else { "needed" }
        ));
        minimization.verdicts[index].1 = if optional {
            kept = without;
            Verdict::Optional(result)
        } else {
            Verdict::Needed(result)
        };
    }
    Ok(minimization)
}

/// A run ended by a signal the supervisor forwards, where the learning run was not: the user
/// interrupted the series (or killed the command), which says nothing about the delegation.
fn interruption(result: &RunResult, baseline: i32) -> Option<Stopped> {
    let code = result.exit.exit_code();
    let forwarded = FORWARDED.iter().any(|s| code == 128 + *s as i32);
    let killed = matches!(result.exit, ChildExit::Signaled(_));
    ((forwarded || killed) && code != baseline).then_some(Stopped::Interrupted {
        run: result.run,
        exit: result.exit,
    })
}

fn run_once(
    options: &SupervisorOptions,
    run: u32,
    delegation: Delegation,
    quiet: bool,
    verbose: bool,
) -> Result<RunResult, LearnError> {
    let SandboxAction::Exec { argv, gateway, .. } = &options.action else {
        return Err(LearnError::NotACommand);
    };
    let recording = Recording::new(quiet, verbose)?;
    let options = SupervisorOptions {
        delegation,
        // --json-status describes the learning run only.
        status: if run == 1 {
            options.status.clone()
        } else {
            None
        },
        action: SandboxAction::Exec {
            argv: argv.clone(),
            gateway: *gateway,
            recording: Some(recording.clone()),
        },
        ..options.clone()
    };
    log::debug!(
        "--learn: run {run} with {}",
        delegation.flags(EnumNames::for_running_kernel()).join(" ")
    );
    let started = Instant::now();
    let exit = supervisor::run(&options).map_err(|source| LearnError::Run { run, source })?;
    let elapsed = started.elapsed();
    let bytes = recording
        .read_back()?
        .ok_or(LearnError::NoLog { run, exit, quiet })?;
    let log = CallLog::from_json(&bytes)
        .map_err(|why| LearnError::BadLog { run, why })?
        .ok_or(LearnError::NoGateway { run })?;
    log::debug!(
        "--learn: run {run} {exit} after {} ms; {} bpf() calls of {} kinds",
        elapsed.as_millis(),
        log.calls(),
        log.kinds().len()
    );
    Ok(RunResult {
        run,
        delegation,
        exit,
        log,
        elapsed,
    })
}

impl LearnOutcome {
    /// The items the file delegates: the learned ones less those the minimization dropped.
    pub fn final_items(&self) -> Vec<PolicyItem> {
        match &self.minimization {
            None => self.learned.items.clone(),
            Some(m) => m
                .verdicts
                .iter()
                .filter(|(_, verdict)| !matches!(verdict, Verdict::Optional(_)))
                .map(|(item, _)| *item)
                .collect(),
        }
    }

    pub fn delegation(&self) -> Delegation {
        learn::delegation_of(&self.final_items())
    }

    /// The exit status to leave with: the command's in the learning run, or a rerun's that was
    /// interrupted.
    pub fn exit_code(&self) -> i32 {
        match self.minimization.as_ref().and_then(|m| m.stopped.as_ref()) {
            Some(Stopped::Interrupted { exit, .. }) => exit.exit_code(),
            _ => self.learning.exit.exit_code(),
        }
    }

    /// The policy file, with comments saying which process asked for what, and what the
    /// minimization found.
    pub fn policy_file(&self, names: &EnumNames) -> AnnotatedPolicy {
        let log = &self.learning.log;
        let mut header = vec![
            format!("Delegation policy for: {}", shell_words(&self.command)),
            format!(
                "Learnt by token_userns_demo --learn{}: the command ran once with every set delegated (any)",
                if self.minimization.is_some() {
                    " --minimize"
                } else {
                    ""
                }
            ),
            format!(
                "and exited with status {}; the bpf() gateway saw {} calls of {} kinds, listed under the items they asked for.",
                self.learning.exit.exit_code(),
                log.calls(),
                log.kinds().len()
            ),
        ];
        if self.caps.perfmon || self.caps.sys_admin {
            header.push(format!(
                "The command kept{}{}: use the file with the same --cap-add.",
                if self.caps.perfmon {
                    " CAP_PERFMON"
                } else {
                    ""
                },
                if self.caps.sys_admin {
                    " CAP_SYS_ADMIN"
                } else {
                    ""
                }
            ));
        }
        if log.unrecorded() > 0 {
            header.push(format!(
                "{} calls of kinds beyond the first {} were not logged: this file may lack what they asked for.",
                log.unrecorded(),
                learn::MAX_KINDS
            ));
        }
        match &self.minimization {
            None => header.push(
                "Not minimized: every item asked for is here, optional ones too (--minimize finds which the command really needs).".to_owned(),
            ),
            Some(m) => header.extend(self.minimization_header(m)),
        }
        header.push(format!(
            "{} run{} of the command in {:.1} s. Use: token_userns_demo --policy THIS_FILE -- COMMAND",
            self.runs,
            if self.runs == 1 { "" } else { "s" },
            self.elapsed.as_secs_f64()
        ));
        let unhelped: Vec<String> = self
            .learned
            .hopeless
            .iter()
            .filter(|(_, why)| !matches!(why, Hopeless::NeedsPerfmon { .. }))
            .map(|(index, why)| {
                format!(
                    "  {}: {}",
                    log.kinds()[*index].describe(names),
                    why.explain(names)
                )
            })
            .collect();
        if !unhelped.is_empty() {
            header.push("Calls no delegation can help, left out:".to_owned());
            header.extend(unhelped);
        }
        let mut entries: Vec<AnnotatedEntry> = Vec::new();
        let verdicts = self.minimization.as_ref().map(|m| &m.verdicts);
        for item in &self.learned.items {
            let mut notes: Vec<String> = self.askers(*item, names);
            let verdict = verdicts.and_then(|v| v.iter().find(|(i, _)| i == item).map(|(_, v)| v));
            let active = !matches!(verdict, Some(Verdict::Optional(_)));
            if let Some(verdict) = verdict {
                notes.push(self.explain_verdict(*item, verdict, names));
            }
            entries.push(AnnotatedEntry {
                item: *item,
                active,
                notes,
            });
        }
        // Program types that need CAP_PERFMON, which the command did not keep: shown, left out.
        for (index, why) in &self.learned.hopeless {
            let Hopeless::NeedsPerfmon { prog_type } = why else {
                continue;
            };
            let kind = &log.kinds()[*index];
            let note = format!("asked for by {}", kind.describe(names));
            match entries.iter_mut().find(|e| e.item == *prog_type) {
                Some(entry) if !entry.active => entry.notes.push(note),
                Some(_) => {}
                None => entries.push(AnnotatedEntry {
                    item: *prog_type,
                    active: false,
                    notes: vec![note, format!("left out: {}", why.explain(names))],
                }),
            }
        }
        AnnotatedPolicy { header, entries }
    }

    fn minimization_header(&self, m: &Minimization) -> Vec<String> {
        let optional = m
            .verdicts
            .iter()
            .filter(|(_, v)| matches!(v, Verdict::Optional(_)))
            .count();
        let mut lines = Vec::new();
        match &m.stopped {
            Some(Stopped::LearningFailed) => lines.push(
                "Not minimized: the command failed while learning, so every rerun would fail whatever it lacked.".to_owned(),
            ),
            Some(Stopped::LearnedSetDiffers) => {
                let check = m.check.as_ref().expect("the check ran");
                lines.push(format!(
                    "Not minimized: with exactly these items (run {}) the command exited with status {} instead of {}:",
                    check.run,
                    check.exit.exit_code(),
                    self.learning.exit.exit_code()
                ));
                lines.push("it needs something the gateway cannot see, or it does not behave the same from run to run.".to_owned());
            }
            Some(Stopped::Interrupted { run, exit }) => lines.push(format!(
                "Minimization interrupted: run {run} {exit}; every learned item is kept."
            )),
            None => {
                lines.push(format!(
                    "--minimize reran it with exactly the learned items{}, then once without each item in turn",
                    m.check
                        .as_ref()
                        .map(|c| format!(" (run {}, status {})", c.run, c.exit.exit_code()))
                        .unwrap_or_default()
                ));
                lines.push(
                    "(and without those already dropped): an item whose absence left the exit status unchanged is dropped".to_owned(),
                );
                lines.push(format!(
                    "as optional (the command went on without the call that needed it), the others are kept: {} kept, {optional} dropped.",
                    m.verdicts.len() - optional
                ));
            }
        }
        lines
    }

    /// One line per kind of call that asked for `item` (the first four).
    fn askers(&self, item: PolicyItem, names: &EnumNames) -> Vec<String> {
        const SHOWN: usize = 4;
        let askers: Vec<_> = self.learning.log.askers(item, &self.learned).collect();
        let mut notes: Vec<String> = askers
            .iter()
            .take(SHOWN)
            .map(|kind| format!("asked for by {}", kind.describe(names)))
            .collect();
        if askers.len() > SHOWN {
            notes.push(format!("and {} more kinds of call", askers.len() - SHOWN));
        }
        notes
    }

    fn explain_verdict(&self, item: PolicyItem, verdict: &Verdict, names: &EnumNames) -> String {
        let baseline = self.learning.exit.exit_code();
        let failed_calls = |result: &RunResult| -> String {
            let learned = result.log.learn(self.caps, names);
            let calls: Vec<String> = result
                .log
                .uncovered(&result.delegation, &learned)
                .into_iter()
                .filter(|(_, missing)| missing.contains(&item))
                .map(|(kind, _)| format!("{} ({})", kind.shape.describe(names), kind.count()))
                .collect();
            if calls.is_empty() {
                String::new()
            } else {
                format!("; the calls left without it: {}", calls.join("; "))
            }
        };
        match verdict {
            Verdict::Optional(result) => format!(
                "dropped by --minimize as optional: without it, run {} still exited with status {}{}",
                result.run,
                result.exit.exit_code(),
                failed_calls(result)
            ),
            Verdict::Needed(result) => format!(
                "needed: without it, run {} exited with status {} instead of {baseline}{}",
                result.run,
                result.exit.exit_code(),
                failed_calls(result)
            ),
            Verdict::LastItem => {
                "kept without a run: every other item was dropped, and a delegation cannot be empty"
                    .to_owned()
            }
            Verdict::NotTried => "kept: not tried (the minimization stopped first)".to_owned(),
        }
    }

    /// What to tell the user at the end: where the file went, and the same policy as flags,
    /// systemd lines and LXD/Incus keys.
    pub fn summary(&self, file: &Path, names: &EnumNames) -> Vec<String> {
        let delegation = self.delegation();
        let mut lines = Vec::new();
        let mut head = format!(
            "learned policy written to {} ({} run{} in {:.1} s",
            file.display(),
            self.runs,
            if self.runs == 1 { "" } else { "s" },
            self.elapsed.as_secs_f64()
        );
        if let Some(m) = &self.minimization {
            let optional = m
                .verdicts
                .iter()
                .filter(|(_, v)| matches!(v, Verdict::Optional(_)))
                .count();
            match &m.stopped {
                None => head.push_str(&format!(
                    "; {} items needed, {optional} optional",
                    m.verdicts.len() - optional
                )),
                Some(Stopped::LearningFailed) => {
                    head.push_str("; not minimized: the command failed");
                }
                Some(Stopped::LearnedSetDiffers) => {
                    head.push_str(
                        "; not minimized: the learned set does not reproduce the run, see the file",
                    );
                }
                Some(Stopped::Interrupted { .. }) => head.push_str("; minimization interrupted"),
            }
        }
        head.push(')');
        lines.push(head);
        if delegation.is_empty() {
            lines.push("  the command made no bpf() call a delegation can help: it needs none (the file delegates nothing, which --policy refuses)".to_owned());
            return lines;
        }
        lines.push(format!("  flags:   {}", delegation.flags(names).join(" ")));
        let block = |label: &str, entries: Vec<String>| -> Vec<String> {
            entries
                .into_iter()
                .enumerate()
                .map(|(i, line)| {
                    if i == 0 {
                        format!("  {label:<8} {line}")
                    } else {
                        format!("  {:<8} {line}", "")
                    }
                })
                .collect()
        };
        lines.extend(block("systemd:", export::systemd(&delegation, names)));
        lines.extend(block("LXD:", export::lxd(&delegation, names)));
        lines.extend(block("Incus:", export::incus(&delegation, names)));
        lines
    }
}

fn describe_items(items: &[PolicyItem], names: &EnumNames) -> String {
    if items.is_empty() {
        return "nothing".to_owned();
    }
    DelegateKind::ALL
        .into_iter()
        .filter_map(|kind| {
            let of_kind: Vec<String> = items
                .iter()
                .filter(|i| i.kind == kind)
                .map(|i| i.name(names))
                .collect();
            (!of_kind.is_empty()).then(|| format!("{} {}", kind.option(), of_kind.join(":")))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The command as a shell would take it back, roughly: words with anything but plain
/// characters single-quoted. Cut at 400 characters (it goes into a comment).
fn shell_words(argv: &[OsString]) -> String {
    let words: Vec<String> = argv
        .iter()
        .map(|arg| {
            let text = String::from_utf8_lossy(arg.as_bytes());
            let plain = !text.is_empty()
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                text.into_owned()
            } else {
                format!("'{}'", text.replace('\'', "'\\''"))
            }
        })
        .collect();
    learn::clean_text(&words.join(" "))
        .chars()
        .take(400)
        .collect()
}

/// Where `--learn` writes its file, checked before anything runs.
///
/// The directory is opened once, at the check, and the file is created and renamed through
/// that descriptor: the command runs in between as the invoking user (`$SUDO_UID`), who could
/// otherwise swap a directory of the path for a symbolic link and make root write the file
/// wherever the link points.
#[derive(Debug, Clone)]
pub struct PolicyDestination {
    path: PathBuf,
    dir: PathBuf,
    dir_fd: Arc<OwnedFd>,
}

impl PolicyDestination {
    /// Refuses a path that is a directory, a symbolic link or not a regular file, or whose
    /// directory does not take a new file (creating and removing a scratch file there proves
    /// it, read-only file systems included): better now than after the command ran.
    pub fn check(path: &Path) -> Result<Self, String> {
        let shown = path.display();
        let name = path
            .file_name()
            .filter(|_| !path.as_os_str().as_bytes().ends_with(b"/"))
            .ok_or_else(|| format!("--learn {shown}: give a file name"))?;
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!(
                    "--learn {shown} is a symbolic link: give the file's own path"
                ));
            }
            Ok(meta) if meta.is_dir() => {
                return Err(format!("--learn {shown} is a directory: give a file name"));
            }
            Ok(meta) if !meta.is_file() => {
                return Err(format!("--learn {shown} is not a regular file"));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("--learn {shown}: {e}")),
        }
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let dir_fd = nix::fcntl::open(
            &dir,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| {
            format!(
                "--learn {shown}: cannot write a file in {} ({e})",
                dir.display()
            )
        })?;
        let destination = Self {
            path: path.to_owned(),
            dir,
            dir_fd: Arc::new(dir_fd),
        };
        let scratch = Self::scratch_name(name);
        match destination.create(&scratch) {
            Ok(file) => {
                drop(file);
                let _ = nix::unistd::unlinkat(
                    destination.dir_fd.as_fd(),
                    scratch.as_os_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                );
                Ok(destination)
            }
            Err(e) => Err(format!(
                "--learn {shown}: cannot write a file in {} ({e})",
                destination.dir.display()
            )),
        }
    }

    fn scratch_name(name: &std::ffi::OsStr) -> OsString {
        let mut scratch = OsString::from(".");
        scratch.push(name);
        scratch.push(format!(".learn-{}", std::process::id()));
        scratch
    }

    /// A new file in the checked directory, never through a link.
    fn create(&self, name: &std::ffi::OsStr) -> std::io::Result<File> {
        use nix::fcntl::OFlag;
        let fd = nix::fcntl::openat(
            self.dir_fd.as_fd(),
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )?;
        Ok(File::from(fd))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of the directory's descriptor (for a caller closing every other one).
    pub fn directory_fd(&self) -> i32 {
        use std::os::fd::AsRawFd as _;
        self.dir_fd.as_raw_fd()
    }

    /// Writes `text` to a new file next to the destination and renames it over the
    /// destination, so the file is never seen half-written and a symbolic link put there
    /// meanwhile is replaced, not followed.
    ///
    /// The file belongs to the directory's owner (root runs this; the file is the user's).
    pub fn write(&self, text: &str) -> std::io::Result<()> {
        let name = self.path.file_name().unwrap_or_default();
        let scratch = Self::scratch_name(name);
        let result = (|| {
            let mut file = self.create(&scratch)?;
            file.write_all(text.as_bytes())?;
            let owner = nix::sys::stat::fstat(self.dir_fd.as_fd())?;
            nix::unistd::fchown(
                file.as_fd(),
                Some(nix::unistd::Uid::from_raw(owner.st_uid)),
                Some(nix::unistd::Gid::from_raw(owner.st_gid)),
            )?;
            file.sync_all()?;
            nix::fcntl::renameat(
                self.dir_fd.as_fd(),
                scratch.as_os_str(),
                self.dir_fd.as_fd(),
                name,
            )?;
            Ok(())
        })();
        if result.is_err() {
            let _ = nix::unistd::unlinkat(
                self.dir_fd.as_fd(),
                scratch.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
        result
    }
}

/// A `--learn` series that could not learn.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error("--learn runs a command (give it after --)")]
    NotACommand,
    #[error("--learn: creating the memfd for the call log: {0}")]
    Memfd(SysError),
    #[error("--learn: opening /dev/null for the reruns' output: {0}")]
    DevNull(std::io::Error),
    #[error("--learn: reading the call log back: {0}")]
    ReadLog(std::io::Error),
    #[error("--learn: run {run}: {source}")]
    Run { run: u32, source: SupervisorError },
    #[error(
        "--learn: run {run}: the sandbox {exit} before it could run the command{}, so nothing was learnt",
        if *quiet { " (-v shows the sandbox's messages of reruns)" } else { " (see its message above)" }
    )]
    NoLog {
        run: u32,
        exit: ChildExit,
        quiet: bool,
    },
    #[error("--learn: run {run}: the sandbox's call log cannot be used: {why}")]
    BadLog { run: u32, why: String },
    #[error(
        "--learn: run {run}: the bpf() gateway could not start (see the warning above), and learning needs it to see the command's calls"
    )]
    NoGateway { run: u32 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_quoted_where_a_shell_would_need_it() {
        let argv: Vec<OsString> = ["/bin/sh", "-c", "exit 3", "it's"]
            .into_iter()
            .map(OsString::from)
            .collect();
        assert_eq!(shell_words(&argv), r"/bin/sh -c 'exit 3' 'it'\''s'");
    }

    #[test]
    fn destinations_are_checked_before_anything_runs() {
        let dir = std::env::temp_dir().join(format!("learn-dest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("policy.toml");
        let destination = PolicyDestination::check(&file).unwrap();
        assert!(!file.exists(), "the check leaves nothing behind");
        destination.write("cmds = [\"prog_load\"]\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "cmds = [\"prog_load\"]\n"
        );
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no scratch file left"
        );
        // A symbolic link is refused, not followed.
        let link = dir.join("link.toml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let err = PolicyDestination::check(&link).unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
        let err = PolicyDestination::check(&dir).unwrap_err();
        assert!(err.contains("directory"), "{err}");
        let err = PolicyDestination::check(&dir.join("missing/policy.toml")).unwrap_err();
        assert!(err.contains("cannot write a file in"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
