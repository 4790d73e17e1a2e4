//! Resource limits for the sandbox: a transient cgroup per run (`--memory-max`, `--pids-max`).
//!
//! Why a cgroup: since Linux 5.11 the kernel charges BPF maps to the memory cgroup of the process
//! that creates them (`bpf_map_save_memcg` records it; the map's memory is allocated with
//! `__GFP_ACCOUNT`) instead of to `RLIMIT_MEMLOCK`, so a memory cgroup is the only limit on the
//! maps a token holder creates. Without one the sandbox's maps count against whatever cgroup the
//! supervisor runs in, often an unlimited one.
//!
//! Where: a child `tkn-<supervisor pid>` of the supervisor's own cgroup, in every hierarchy that
//! has a controller a limit needs:
//! - cgroup v2 when the supervisor's cgroup lists the controller in `cgroup.controllers`. The
//!   controllers must then be enabled in that cgroup's `cgroup.subtree_control`, which cgroup v2
//!   refuses (EBUSY) for a cgroup with processes of its own, the root excepted ("no internal
//!   processes"). `--cgroup-parent DIR` names another cgroup2 directory to create the child in;
//!   the error says so.
//! - otherwise the cgroup v1 hierarchy mounted with that controller: on hybrid systems `memory`
//!   and `pids` are v1 hierarchies and the cgroup2 mount (`/sys/fs/cgroup/unified`) has neither.
//!   cgroup v1 charges kernel memory, BPF maps included, to `memory.limit_in_bytes` too.
//!
//! Placement: in v2 the sandbox child is born in its cgroup (`CLONE_INTO_CGROUP`); in v1 the
//! supervisor writes the child's pid to `cgroup.procs` right after the fork, while the child
//! still waits for its id maps and has run nothing of the command's.
//!
//! Removal, on every exit path ([`Drop`]): whatever is left is killed (`cgroup.kill` in v2;
//! in v1, which has no such file, `SIGKILL` to every pid in `cgroup.procs` until it is empty),
//! then the directory is removed, retrying while the kernel answers EBUSY (tasks still
//! exiting). The command's PID namespace already guarantees that every process of the command
//! dies with the sandbox's init (`zap_pid_ns_processes`); the cgroup's kill is a second,
//! independent guarantee, and the only one for the demo, which runs without a PID namespace.
//!
//! A supervisor killed by `SIGKILL` runs no destructor. Its sandbox dies with it
//! (`PR_SET_PDEATHSIG`), and its cgroups are removed by the *keeper*: a small process forked by
//! [`SandboxCgroup::create`], outside the cgroups and in a session of its own, that waits for
//! the end of a pipe only the supervisor holds, then kills and removes what is left. Each
//! cgroup directory is also `flock`ed for as long as its supervisor or keeper lives, so a run
//! that finds a `tkn-<pid>` directory nobody holds (its supervisor and keeper both died) and
//! whose pid is gone removes it before creating its own.
//!
//! Nothing here runs when no limit is asked for: the default launch does not touch cgroups.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{ForkResult, Pid};

use crate::mountinfo::{self, MountEntry};
use crate::sys::{self, Errno, ErrnoName, SysError};

/// The limits asked for, and where to create the cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory for everything in the sandbox: processes, page cache, kernel memory
    /// (BPF maps included). Swap is limited to nothing where the kernel lets us.
    pub memory_max: Option<u64>,
    /// Tasks (processes and threads) in the sandbox, its init included.
    pub pids_max: Option<u64>,
    /// A cgroup2 directory to create the sandbox's cgroup in, instead of the supervisor's own
    /// cgroup. Given alone, the sandbox still gets a cgroup (for its kill guarantee).
    pub parent: Option<PathBuf>,
}

impl Limits {
    /// The smallest `--pids-max`: the sandbox's init and the command.
    pub const MIN_PIDS: u64 = 2;
    /// `PID_MAX_LIMIT`: the kernel refuses a larger `pids.max`.
    pub const MAX_PIDS: u64 = 4 * 1024 * 1024;
    /// The smallest `--memory-max`: far below it the sandbox's own setup is killed by the OOM
    /// killer before the command starts (64 KiB was, 512 KiB was not), which would only look
    /// like a crash.
    pub const MIN_MEMORY: u64 = 1024 * 1024;

    /// Whether the run needs a cgroup at all.
    pub const fn wanted(&self) -> bool {
        self.memory_max.is_some() || self.pids_max.is_some() || self.parent.is_some()
    }

    fn controllers(&self) -> Vec<&'static str> {
        let mut controllers = Vec::new();
        if self.memory_max.is_some() {
            controllers.push("memory");
        }
        if self.pids_max.is_some() {
            controllers.push("pids");
        }
        controllers
    }
}

/// `--memory-max`: bytes, with an optional binary suffix `K`, `M`, `G` or `T` (`256M`).
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let not_a_size = || {
        format!("{text:?} is not a size (a number of bytes, optionally with K, M, G or T: 256M)")
    };
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, suffix) = trimmed.split_at(split);
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(not_a_size()),
    };
    if digits.is_empty() {
        return Err(not_a_size());
    }
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{text:?}: too large"))?;
    if bytes < Limits::MIN_MEMORY {
        return Err(format!(
            "{text:?}: the sandbox needs at least {} (its own init and the command's start)",
            format_bytes(Limits::MIN_MEMORY)
        ));
    }
    Ok(bytes)
}

/// `--pids-max`: a number of tasks, at least the sandbox's init and the command.
pub fn parse_pids(text: &str) -> Result<u64, String> {
    let n: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of processes"))?;
    if n < Limits::MIN_PIDS {
        return Err(format!(
            "{text:?}: at least {} (the sandbox's init and the command)",
            Limits::MIN_PIDS
        ));
    }
    if n > Limits::MAX_PIDS {
        return Err(format!(
            "{text:?}: at most {} (the kernel's PID_MAX_LIMIT)",
            Limits::MAX_PIDS
        ));
    }
    Ok(n)
}

/// `--cgroup-parent`: an existing directory of a cgroup2 filesystem. Checked before forking.
pub fn check_parent(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!(
            "--cgroup-parent {path:?} must be an absolute path (e.g. /sys/fs/cgroup/tkn)"
        ));
    }
    let dir = open_dir(path).map_err(|e| format!("--cgroup-parent {path:?}: {e}"))?;
    match sys::cgroup::filesystem_type(dir.as_fd()) {
        Ok(sys::cgroup::CGROUP2_SUPER_MAGIC) => Ok(()),
        Ok(sys::cgroup::CGROUP_SUPER_MAGIC) => Err(format!(
            "--cgroup-parent {path:?} is in a cgroup v1 hierarchy; it takes a cgroup2 directory (v1 controllers are used under the supervisor's own cgroups)"
        )),
        Ok(_) => Err(format!(
            "--cgroup-parent {path:?} is not in a cgroup2 filesystem"
        )),
        Err(e) => Err(format!("--cgroup-parent {path:?}: {e}")),
    }
}

/// The cgroup interface a directory belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Version {
    #[serde(rename = "v1")]
    V1,
    #[serde(rename = "v2")]
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        })
    }
}

/// Where one of the sandbox's cgroups goes: a hierarchy, the cgroup to create it in, and the
/// controllers it carries there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub version: Version,
    pub parent: PathBuf,
    pub controllers: Vec<&'static str>,
}

/// Chooses the hierarchy of each controller the limits need, from the caller's
/// `/proc/self/cgroup` and mount table; `read` reads a cgroup file (`cgroup.controllers`).
pub fn plan(
    limits: &Limits,
    proc_self_cgroup: &str,
    mounts: &[MountEntry],
    read: impl Fn(&Path) -> io::Result<String>,
) -> Result<Vec<Target>, CgroupError> {
    let own_path = |wanted: &dyn Fn(&str) -> bool| {
        proc_self_cgroup.lines().find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            wanted(controllers).then(|| path.trim_start_matches('/').to_owned())
        })
    };
    let v2_dir = match &limits.parent {
        Some(parent) => Some(parent.clone()),
        None => mounts
            .iter()
            .find(|m| m.fs_type == "cgroup2")
            .zip(own_path(&|controllers| controllers.is_empty()))
            .map(|(mount, path)| mount.mount_point.join(path)),
    };
    let v2_controllers: Vec<String> = match &v2_dir {
        Some(dir) => {
            let file = dir.join("cgroup.controllers");
            match read(&file) {
                Ok(text) => text.split_whitespace().map(str::to_owned).collect(),
                Err(source) if limits.parent.is_some() => {
                    return Err(CgroupError::Read { path: file, source });
                }
                // The supervisor's own cgroup2 directory unreadable (a cgroup2 mount showing
                // another part of the tree): the v1 hierarchies may still have the controllers.
                Err(_) => Vec::new(),
            }
        }
        None => Vec::new(),
    };
    let mut v2 = Vec::new();
    let mut v1: Vec<Target> = Vec::new();
    for controller in limits.controllers() {
        if v2_controllers.iter().any(|c| c == controller) {
            v2.push(controller);
            continue;
        }
        let in_list = |list: &str| list.split(',').any(|c| c == controller);
        let mount = mounts
            .iter()
            .find(|m| m.fs_type == "cgroup" && in_list(&m.super_options));
        if let Some(parent) = &limits.parent {
            return Err(CgroupError::ParentLacksController {
                controller,
                parent: parent.clone(),
                offered: v2_controllers.join(" "),
                v1_mount: mount.map(|m| m.mount_point.clone()),
            });
        }
        let Some((mount, path)) = mount.zip(own_path(&in_list)) else {
            return Err(CgroupError::ControllerMissing {
                controller,
                v2: v2_dir.clone().map(|dir| (dir, v2_controllers.join(" "))),
            });
        };
        let parent = mount.mount_point.join(path);
        match v1.iter_mut().find(|t| t.parent == parent) {
            // Controllers mounted together (`-o memory,pids`) share one directory.
            Some(target) => target.controllers.push(controller),
            None => v1.push(Target {
                version: Version::V1,
                parent,
                controllers: vec![controller],
            }),
        }
    }
    let mut targets = Vec::new();
    if !v2.is_empty() || limits.parent.is_some() {
        targets.push(Target {
            version: Version::V2,
            parent: v2_dir.expect("a controller was found in it, or it was given"),
            controllers: v2,
        });
    }
    targets.extend(v1);
    Ok(targets)
}

/// One of the sandbox's cgroup directories, locked while this process (or its keeper) lives.
#[derive(Debug)]
pub struct Member {
    pub version: Version,
    pub controllers: Vec<&'static str>,
    pub path: PathBuf,
    /// The limit files written, with their values.
    pub settings: Vec<(&'static str, String)>,
    dir: OwnedFd,
}

/// The sandbox's cgroups: created before the fork, removed on drop.
#[derive(Debug)]
pub struct SandboxCgroup {
    limits: Limits,
    members: Vec<Member>,
    /// The process that created them: only it removes them (a forked copy of this value, in
    /// the sandbox child, only closes its descriptors).
    creator: Pid,
    keeper: Option<Keeper>,
    /// False in a forked copy told so with [`Self::disarm`]: the pid alone cannot tell, since a
    /// supervisor that is PID 1 of its own namespace has the same pid as the sandbox child,
    /// PID 1 of the new one.
    armed: bool,
}

#[derive(Debug)]
struct Keeper {
    pid: Pid,
    /// The write end of the pipe the keeper waits on: closed, it tells the keeper to clean up.
    pipe: OwnedFd,
}

/// How long removal waits for the killed tasks to leave the cgroup.
const REMOVE_DEADLINE: Duration = Duration::from_secs(5);

impl SandboxCgroup {
    /// Creates the cgroups for `limits` under the supervisor's own cgroups (or
    /// `limits.parent`), writes the limits, and starts the keeper. Removes stale `tkn-*`
    /// cgroups of dead supervisors found there first.
    ///
    /// Forks (the keeper): the caller must be single-threaded.
    pub fn create(limits: &Limits) -> Result<Self, CgroupError> {
        let mut cgroup = Self::create_without_keeper(limits)?;
        cgroup.start_keeper()?;
        Ok(cgroup)
    }

    fn create_without_keeper(limits: &Limits) -> Result<Self, CgroupError> {
        let proc_self = Path::new("/proc/self/cgroup");
        let text = std::fs::read_to_string(proc_self).map_err(|source| CgroupError::Read {
            path: proc_self.to_owned(),
            source,
        })?;
        let mounts = mountinfo::read(None).map_err(|source| CgroupError::Read {
            path: PathBuf::from("/proc/self/mountinfo"),
            source,
        })?;
        let targets = plan(limits, &text, &mounts, |p| std::fs::read_to_string(p))?;
        let mut cgroup = Self {
            limits: limits.clone(),
            members: Vec::with_capacity(targets.len()),
            creator: nix::unistd::getpid(),
            armed: true,
            keeper: None,
        };
        let name = format!("tkn-{}", std::process::id());
        for target in targets {
            // On error, `cgroup` is dropped and removes the members made so far: each is a
            // member before its limits are written.
            let member = make_member(&target, &name)?;
            cgroup.members.push(member);
            let member = cgroup.members.last_mut().expect("just pushed");
            for (file, value) in limit_settings(member, limits) {
                write_file(&member.path.join(file), &value, Action::WriteLimit)?;
                member.settings.push((file, value));
            }
            log::debug!("cgroup: {member}");
        }
        Ok(cgroup)
    }

    /// The cgroup2 directory to start the sandbox child in (`CLONE_INTO_CGROUP`), if any.
    pub fn clone_target(&self) -> Option<BorrowedFd<'_>> {
        self.members
            .iter()
            .find(|m| m.version == Version::V2)
            .map(|m| m.dir.as_fd())
    }

    /// Puts the freshly forked sandbox child in every cgroup it was not born in (`born_in_v2`:
    /// whether `CLONE_INTO_CGROUP` placed it in the v2 one). Call it before the child may run
    /// anything of the command's.
    pub fn place(&self, child: Pid, born_in_v2: bool) -> Result<(), CgroupError> {
        for member in &self.members {
            if member.version == Version::V2 && born_in_v2 {
                log::debug!(
                    "sandbox child {child} started in {} (CLONE_INTO_CGROUP)",
                    member.path.display()
                );
                continue;
            }
            let procs = member.path.join("cgroup.procs");
            write_file(&procs, &child.to_string(), Action::Place)?;
            log::debug!("sandbox child {child} moved into {}", member.path.display());
        }
        Ok(())
    }

    pub const fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// For `--json-status`: the limits and every cgroup directory.
    pub fn to_json(&self) -> serde_json::Value {
        let members: Vec<serde_json::Value> = self
            .members
            .iter()
            .map(|m| {
                let settings: serde_json::Map<String, serde_json::Value> = m
                    .settings
                    .iter()
                    .map(|(file, value)| ((*file).to_owned(), value.clone().into()))
                    .collect();
                serde_json::json!({
                    "version": m.version,
                    "controllers": m.controllers,
                    "path": m.path,
                    "settings": settings,
                })
            })
            .collect();
        serde_json::json!({
            "memory_max": self.limits.memory_max,
            "pids_max": self.limits.pids_max,
            "cgroups": members,
        })
    }

    /// Forks the keeper: a process outside the sandbox's cgroups that removes them once the
    /// supervisor is gone, however it ended.
    fn start_keeper(&mut self) -> Result<(), CgroupError> {
        let (read_end, write_end) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| {
                CgroupError::Keeper(SysError {
                    call: "pipe2",
                    errno,
                })
            })?;
        // SAFETY: the caller is single-threaded (documented on `create`); the keeper only
        // reads, writes cgroup files and exits.
        let forked =
            unsafe { sys::process::fork_into(CloneFlags::empty(), "fork (cgroup keeper)") }
                .map_err(CgroupError::Keeper)?;
        match forked {
            ForkResult::Child => {
                drop(write_end);
                keeper_main(&read_end, &self.members)
            }
            ForkResult::Parent { child } => {
                log::debug!("cgroup keeper is pid {child}");
                self.keeper = Some(Keeper {
                    pid: child,
                    pipe: write_end,
                });
                Ok(())
            }
        }
    }

    /// What the sandbox ran into, from the controllers' event counters: a warning names each
    /// limit that refused something.
    fn report_limits_hit(&self) {
        for member in &self.members {
            let count = |file: &str, key: &str| -> u64 {
                std::fs::read_to_string(member.path.join(file))
                    .ok()
                    .and_then(|text| {
                        text.lines().find_map(|l| {
                            let (k, v) = l.split_once(' ')?;
                            (k == key).then(|| v.trim().parse().ok()).flatten()
                        })
                    })
                    .unwrap_or(0)
            };
            for controller in &member.controllers {
                match (*controller, member.version) {
                    ("pids", _) => {
                        let refused = count("pids.events", "max");
                        if refused > 0 {
                            log::warn!(
                                "the sandbox reached --pids-max {}: {refused} fork/clone calls failed with EAGAIN ({})",
                                self.limits.pids_max.unwrap_or(0),
                                member.path.join("pids.events").display()
                            );
                        }
                    }
                    ("memory", version) => {
                        let (file, oom_kills) = match version {
                            Version::V2 => ("memory.events", count("memory.events", "oom_kill")),
                            Version::V1 => (
                                "memory.failcnt and memory.oom_control",
                                count("memory.oom_control", "oom_kill"),
                            ),
                        };
                        let number = |file: &str| -> u64 {
                            std::fs::read_to_string(member.path.join(file))
                                .ok()
                                .and_then(|t| t.trim().parse().ok())
                                .unwrap_or(0)
                        };
                        let failures = match version {
                            Version::V2 => count("memory.events", "max"),
                            // With memory+swap limited too, the kernel charges (and fails)
                            // that counter first.
                            Version::V1 => {
                                number("memory.failcnt") + number("memory.memsw.failcnt")
                            }
                        };
                        let mut what = Vec::new();
                        if failures > 0 {
                            what.push(format!("the limit was hit {failures} times"));
                        }
                        if oom_kills > 0 {
                            what.push(format!(
                                "the OOM killer killed {oom_kills} of its processes"
                            ));
                        }
                        if !what.is_empty() {
                            log::warn!(
                                "the sandbox reached --memory-max {}: {} (see {} in {})",
                                self.limits
                                    .memory_max
                                    .map_or_else(String::new, format_bytes),
                                what.join(", "),
                                file,
                                member.path.display()
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

impl SandboxCgroup {
    /// In a forked copy (the sandbox child): drops this value closing its descriptors only.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        if !self.armed || nix::unistd::getpid() != self.creator {
            // A forked copy (the sandbox child): closing the descriptors is all it may do.
            return;
        }
        if log::log_enabled!(log::Level::Warn) {
            self.report_limits_hit();
        }
        let mut all_removed = true;
        for member in &self.members {
            match remove(&member.path, member.version, REMOVE_DEADLINE) {
                Ok(()) => log::debug!("cgroup {} removed", member.path.display()),
                Err(err) => {
                    all_removed = false;
                    log::warn!("{err}");
                }
            }
        }
        if let Some(keeper) = self.keeper.take() {
            // The keeper wakes up, finds nothing left, and exits.
            drop(keeper.pipe);
            if all_removed {
                let _ = nix::sys::wait::waitpid(keeper.pid, None);
            }
            // Otherwise it keeps trying on its own after this process has exited.
        }
    }
}

/// The keeper's whole life: wait until every write end of the pipe is closed (the supervisor
/// ended, and the sandbox child closed its copy right after the fork), then remove the cgroups.
fn keeper_main(pipe: &OwnedFd, members: &[Member]) -> ! {
    // Out of the caller's session and process group: Ctrl-C or a kill of the job's group must
    // not take the keeper down with the supervisor it outlives.
    let _ = nix::unistd::setsid();
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
    let mut keep: Vec<BorrowedFd<'_>> = members.iter().map(|m| m.dir.as_fd()).collect();
    keep.push(pipe.as_fd());
    let _ = sys::cgroup::close_all_except(&keep);
    let mut byte = [0u8; 1];
    // Returns at EOF, when nobody holds the write end any more (data is never sent).
    while let Err(Errno::EINTR) = nix::unistd::read(pipe, &mut byte) {}
    for member in members {
        let _ = remove(&member.path, member.version, Duration::from_secs(30));
    }
    sys::process::exit_immediately(0)
}

/// Creates and locks `name` under the target's parent, after enabling the controllers there
/// (v2) and removing abandoned siblings.
fn make_member(target: &Target, name: &str) -> Result<Member, CgroupError> {
    if target.version == Version::V2 && !target.controllers.is_empty() {
        enable_controllers(&target.parent, &target.controllers)?;
    }
    sweep_stale(&target.parent, name);
    let path = target.parent.join(name);
    let dir = match make_locked_dir(&path) {
        // Ours by name, left by an earlier process with this pid (or one in another PID
        // namespace, which holds the lock and is then refused).
        Err(CgroupError::File {
            errno: Errno::EEXIST,
            ..
        }) if remove_if_abandoned(&path) => make_locked_dir(&path)?,
        other => other?,
    };
    Ok(Member {
        version: target.version,
        controllers: target.controllers.clone(),
        path,
        settings: Vec::new(),
        dir,
    })
}

/// The files that set the limits, in the order the kernel accepts them.
fn limit_settings(member: &Member, limits: &Limits) -> Vec<(&'static str, String)> {
    let mut settings = Vec::new();
    let exists = |file: &str| member.path.join(file).exists();
    for controller in &member.controllers {
        match (*controller, member.version) {
            ("memory", Version::V2) => {
                let bytes = limits
                    .memory_max
                    .expect("memory is planned only with a limit");
                settings.push(("memory.max", bytes.to_string()));
                // Without this the kernel may swap the sandbox's anonymous memory out and let
                // it use memory.max again on top.
                if exists("memory.swap.max") {
                    settings.push(("memory.swap.max", "0".to_owned()));
                } else if swap_in_use() {
                    warn_unlimited_swap("memory.swap.max", &member.path);
                }
            }
            ("memory", Version::V1) => {
                let bytes = limits
                    .memory_max
                    .expect("memory is planned only with a limit");
                settings.push(("memory.limit_in_bytes", bytes.to_string()));
                // With swap on, memory+swap equal to the memory limit, so swap adds nothing
                // (written after memory.limit_in_bytes, which must stay below it). Not without
                // swap: it would change nothing, and a charge refused by the memsw counter is
                // counted in no failcnt, so the warning at the end could not see it.
                if swap_in_use() {
                    if exists("memory.memsw.limit_in_bytes") {
                        settings.push(("memory.memsw.limit_in_bytes", bytes.to_string()));
                    } else {
                        warn_unlimited_swap("memory.memsw.limit_in_bytes", &member.path);
                    }
                }
            }
            ("pids", _) => {
                let n = limits.pids_max.expect("pids is planned only with a limit");
                settings.push(("pids.max", n.to_string()));
            }
            _ => {}
        }
    }
    settings
}

/// Whether a swap area is active (`/proc/swaps` lists one after its header).
fn swap_in_use() -> bool {
    std::fs::read_to_string("/proc/swaps")
        .is_ok_and(|text| text.lines().skip(1).any(|l| !l.trim().is_empty()))
}

fn warn_unlimited_swap(file: &str, cgroup: &Path) {
    log::warn!(
        "{} has no {file} (swap accounting is off): the sandbox can use swap beyond --memory-max; boot with swapaccount=1 or turn swap off",
        cgroup.display()
    );
}

/// cgroup v2: a child gets a controller only when its parent lists it in `subtree_control`.
fn enable_controllers(parent: &Path, controllers: &[&'static str]) -> Result<(), CgroupError> {
    let file = parent.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&file).map_err(|source| CgroupError::Read {
        path: file.clone(),
        source,
    })?;
    let missing: Vec<String> = controllers
        .iter()
        .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write_file(&file, &missing.join(" "), Action::EnableControllers)?;
    log::debug!("{}: {}", file.display(), missing.join(" "));
    Ok(())
}

/// `mkdir`, then an exclusive `flock` on the new directory, held through the returned
/// descriptor (and the keeper's copy of it).
fn make_locked_dir(path: &Path) -> Result<OwnedFd, CgroupError> {
    std::fs::create_dir(path).map_err(|e| file_error(path, &e, Action::Create))?;
    let dir = open_dir(path).map_err(|e| file_error(path, &e, Action::Create))?;
    // Blocking: a sweeping run may hold it for a moment, see that this pid lives, and let go.
    sys::cgroup::lock_exclusive(dir.as_fd()).map_err(|source| CgroupError::Lock {
        path: path.to_owned(),
        source,
    })?;
    // A run that judged the directory abandoned between mkdir and flock (it cannot, unless it
    // sees this pid as dead from another PID namespace) has removed it.
    if !path.join("cgroup.procs").exists() {
        return Err(file_error(
            path,
            &io::Error::from_raw_os_error(libc::ENOENT),
            Action::Create,
        ));
    }
    Ok(dir)
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
        .map(OwnedFd::from)
}

/// Removes the `tkn-<pid>` cgroups under `parent` that nobody holds and whose supervisor pid
/// is gone: left by supervisors whose keeper died too. Failures only go to the trace.
fn sweep_stale(parent: &Path, own_name: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = name
            .strip_prefix("tkn-")
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if name == own_name || pid_alive(pid) {
            continue;
        }
        remove_if_abandoned(&entry.path());
    }
}

/// Whether `pid` names a process in this PID namespace (EPERM: it exists, not ours to signal).
fn pid_alive(pid: i32) -> bool {
    pid > 0 && !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

/// Removes a `tkn-*` cgroup if no process holds its lock; true when it is gone.
fn remove_if_abandoned(path: &Path) -> bool {
    let Ok(dir) = open_dir(path) else {
        return !path.exists();
    };
    if !matches!(sys::cgroup::try_lock_exclusive(dir.as_fd()), Ok(true)) {
        return false;
    }
    let version = match sys::cgroup::filesystem_type(dir.as_fd()) {
        Ok(sys::cgroup::CGROUP2_SUPER_MAGIC) => Version::V2,
        _ => Version::V1,
    };
    match remove(path, version, Duration::from_secs(1)) {
        Ok(()) => {
            log::debug!("removed the abandoned cgroup {}", path.display());
            true
        }
        Err(err) => {
            log::debug!("abandoned cgroup: {err}");
            false
        }
    }
}

/// Kills every task in the cgroup and removes it, waiting up to `deadline` for the tasks to
/// leave. A cgroup already gone is fine.
fn remove(path: &Path, version: Version, deadline: Duration) -> Result<(), CgroupError> {
    let until = Instant::now() + deadline;
    let mut pause = Duration::from_micros(50);
    loop {
        kill_all(path, version);
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < until => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(file_error(path, &e, Action::Remove)),
        }
    }
}

/// `cgroup.kill` (v2, 5.14); in v1, or where the file is missing, `SIGKILL` to every pid listed
/// in `cgroup.procs`, repeated until the list is empty (a task may fork while we read).
fn kill_all(path: &Path, version: Version) {
    if version == Version::V2 && std::fs::write(path.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for _ in 0..100 {
        let Ok(procs) = std::fs::read_to_string(path.join("cgroup.procs")) else {
            return;
        };
        // A task of another pid namespace is listed as 0, and kill(0) would signal our own
        // process group: only positive pids.
        let pids: Vec<i32> = procs
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|pid| *pid > 0)
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

fn write_file(path: &Path, value: &str, action: Action) -> Result<(), CgroupError> {
    use std::io::Write as _;
    // One write(2): cgroup files take a whole value per call.
    File::options()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| file_error(path, &e, action))
}

fn file_error(path: &Path, error: &io::Error, action: Action) -> CgroupError {
    CgroupError::File {
        action,
        path: path.to_owned(),
        errno: Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO)),
    }
}

/// `268435456` → `256 MiB`.
pub fn format_bytes(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.version)?;
        if !self.controllers.is_empty() {
            write!(f, "{} ", self.controllers.join("+"))?;
        }
        write!(f, "{}", self.path.display())?;
        if !self.settings.is_empty() {
            let settings: Vec<String> = self
                .settings
                .iter()
                .map(|(file, value)| format!("{file}={value}"))
                .collect();
            write!(f, " ({})", settings.join(", "))?;
        }
        Ok(())
    }
}

/// `--check`: whether `--memory-max` and `--pids-max` can be used here, shown by creating the
/// cgroups they would need (with generous limits and no process) and removing them.
pub fn probe(parent: Option<&Path>) -> Result<String, CgroupError> {
    let limits = Limits {
        memory_max: Some(1 << 30),
        pids_max: Some(1024),
        parent: parent.map(Path::to_owned),
    };
    let cgroup = SandboxCgroup::create_without_keeper(&limits)?;
    let how: Vec<String> = cgroup
        .members
        .iter()
        .map(|m| {
            format!(
                "cgroup {} {} under {}",
                m.version,
                m.controllers.join("+"),
                m.path.parent().unwrap_or(&m.path).display()
            )
        })
        .collect();
    drop(cgroup);
    Ok(format!(
        "--memory-max and --pids-max usable: {} (BPF map memory counts against the memory limit)",
        how.join("; ")
    ))
}

/// What was being done to a cgroup file when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    EnableControllers,
    WriteLimit,
    Place,
    Remove,
}

impl Action {
    const fn verb(self) -> &'static str {
        match self {
            Self::Create => "creating the sandbox's cgroup",
            Self::EnableControllers => "enabling controllers for child cgroups in",
            Self::WriteLimit => "writing the limit",
            Self::Place => "moving the sandbox child into",
            Self::Remove => "removing the sandbox's cgroup",
        }
    }
}

/// A failure to set up or remove the sandbox's cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}", controller_missing(controller, v2.as_ref()))]
    ControllerMissing {
        controller: &'static str,
        /// The cgroup2 directory looked at, and the controllers it offers.
        v2: Option<(PathBuf, String)>,
    },
    #[error("{}", parent_lacks_controller(controller, parent, offered, v1_mount.as_deref()))]
    ParentLacksController {
        controller: &'static str,
        parent: PathBuf,
        offered: String,
        /// Where a cgroup v1 hierarchy has the controller instead (hybrid systems).
        v1_mount: Option<PathBuf>,
    },
    #[error("{} {}: {}: {}", action.verb(), path.display(), ErrnoName(*errno), hint(*action, *errno, path))]
    File {
        action: Action,
        path: PathBuf,
        errno: Errno,
    },
    #[error("locking {}: {source}", path.display())]
    Lock { path: PathBuf, source: SysError },
    #[error("starting the process that removes the cgroups if the supervisor is killed: {0}")]
    Keeper(SysError),
}

fn parent_lacks_controller(
    controller: &str,
    parent: &Path,
    offered: &str,
    v1_mount: Option<&Path>,
) -> String {
    let offered = if offered.is_empty() { "none" } else { offered };
    let fix = match v1_mount {
        Some(mount) => format!(
            "this system runs {controller} as a cgroup v1 hierarchy ({}), which no cgroup2 directory can use; fix: leave out --cgroup-parent, so the sandbox's cgroup goes under the supervisor's own v1 cgroups",
            mount.display()
        ),
        None => format!(
            "fix: enable it in the parent's cgroup.subtree_control (echo +{controller} > {}/cgroup.subtree_control) or choose another directory",
            parent.parent().unwrap_or(parent).display()
        ),
    };
    format!(
        "--cgroup-parent {}: the {controller} controller is not available there (cgroup.controllers: {offered}); {fix}",
        parent.display()
    )
}

fn controller_missing(controller: &str, v2: Option<&(PathBuf, String)>) -> String {
    let v2 = match v2 {
        Some((dir, offered)) => format!(
            "the supervisor's cgroup2 directory {} offers {}",
            dir.display(),
            if offered.is_empty() {
                "no controllers".to_owned()
            } else {
                format!("only \"{offered}\"")
            }
        ),
        None => "no cgroup2 filesystem is mounted".to_owned(),
    };
    format!(
        "no cgroup hierarchy has the {controller} controller for the supervisor: {v2}, and no cgroup v1 hierarchy is mounted with it; fix: in a container, ask the runtime for a cgroup with the {controller} controller (cgroup v2 with a private cgroup namespace); on a host, enable it in the parent cgroup's cgroup.subtree_control (cgroup v2) or mount it (mount -t cgroup -o {controller} cgroup /sys/fs/cgroup/{controller}), or pass --cgroup-parent with a cgroup2 directory that has it"
    )
}

/// The likely cause and fix of a cgroup file operation's errno.
fn hint(action: Action, errno: Errno, path: &Path) -> String {
    let parent = path.parent().unwrap_or(path).display();
    match (action, errno) {
        (_, Errno::EROFS) => "the cgroup filesystem is mounted read-only, as in most containers; fix: run the supervisor on the host, or give the container a writable cgroup of its own (cgroup v2 with a private cgroup namespace, or systemd's Delegate=yes)".to_owned(),
        (_, Errno::EACCES | Errno::EPERM) => "this process may not change that cgroup (not root, or the cgroup is not delegated to it); fix: run the supervisor as root on the host, or pass --cgroup-parent with a cgroup2 directory delegated to it".to_owned(),
        (Action::EnableControllers, Errno::EBUSY) => format!(
            "cgroup v2 lets a cgroup hand controllers to its children only while it has no processes of its own (\"no internal processes\"), and {parent} holds the supervisor; fix: pass --cgroup-parent with an empty cgroup2 directory whose parent offers the controllers (mkdir /sys/fs/cgroup/tkn; --cgroup-parent /sys/fs/cgroup/tkn), or let systemd apply the limits instead of these flags (systemd-run --scope -p MemoryMax=256M -p MemorySwapMax=0 -p TasksMax=64 token_userns_demo ...)"
        ),
        (Action::EnableControllers, Errno::ENOENT | Errno::EINVAL) => format!(
            "a controller is not offered to {parent} (see its cgroup.controllers); fix: enable it in the parent's cgroup.subtree_control or use --cgroup-parent"
        ),
        (Action::EnableControllers, Errno::EOPNOTSUPP) => "the cgroup is in threaded mode, where memory cannot be enabled; fix: use --cgroup-parent with a domain cgroup".to_owned(),
        (Action::Create, Errno::ENOENT) => "the supervisor's cgroup directory does not exist here: the cgroup filesystem shows another part of the tree than /proc/self/cgroup (a container without a cgroup namespace) or the cgroup was removed; fix: pass --cgroup-parent with an existing cgroup2 directory".to_owned(),
        (Action::Create, Errno::EEXIST) => "a supervisor with the same pid in another PID namespace is using this name; fix: run again".to_owned(),
        (Action::Create, Errno::EAGAIN | Errno::ENOSPC) => format!(
            "the parent's cgroup.max.descendants or cgroup.max.depth is reached; fix: raise them in {parent}"
        ),
        (Action::WriteLimit, Errno::ENOENT) => "the controller's file is missing: the controller is not enabled for this cgroup".to_owned(),
        (Action::WriteLimit, Errno::EINVAL) => "the kernel refused the value".to_owned(),
        (Action::WriteLimit, Errno::EBUSY) => "the cgroup already uses more than this limit".to_owned(),
        (Action::Place, Errno::ESRCH) => "the sandbox child is already gone".to_owned(),
        (Action::Place, Errno::EBUSY) => "cgroup v2 refuses processes in a cgroup whose controllers are enabled for children".to_owned(),
        (Action::Remove, Errno::EBUSY) => format!(
            "tasks were still in it after they were killed ({} s); they may be stuck in the kernel; the next run with limits removes it",
            REMOVE_DEADLINE.as_secs()
        ),
        _ => "see the kernel's cgroup documentation for this errno".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_memory("256M"), Ok(256 << 20));
        assert_eq!(parse_memory("64m"), Ok(64 << 20));
        assert_eq!(parse_memory("1G"), Ok(1 << 30));
        assert_eq!(parse_memory("8192K"), Ok(8 << 20));
        assert_eq!(parse_memory("1M"), Ok(1 << 20));
        assert_eq!(parse_memory("16777216"), Ok(16 << 20));
        assert_eq!(parse_memory("2T"), Ok(2 << 40));
    }

    #[test]
    fn bad_sizes_are_refused() {
        for bad in [
            "0",
            "0M",
            "lots",
            "",
            "M",
            "12Q",
            "-5M",
            "1.5G",
            "99999999999999999999T",
        ] {
            assert!(parse_memory(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_memory("512K").unwrap_err().contains("at least 1 MiB"));
        assert!(parse_memory("lots").unwrap_err().contains("is not a size"));
    }

    #[test]
    fn pids_need_the_init_and_the_command() {
        assert_eq!(parse_pids("2"), Ok(2));
        assert_eq!(parse_pids("64"), Ok(64));
        assert!(parse_pids("1").is_err());
        assert!(parse_pids("0").is_err());
        assert!(parse_pids("many").is_err());
        assert!(parse_pids("5000000").is_err());
    }

    #[test]
    fn sizes_are_shown_in_their_unit() {
        assert_eq!(format_bytes(256 << 20), "256 MiB");
        assert_eq!(format_bytes(3 << 30), "3 GiB");
        assert_eq!(format_bytes(1000), "1000 bytes");
    }

    const HYBRID_CGROUP: &str =
        "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n";

    fn mount(point: &str, fs_type: &str, options: &str) -> MountEntry {
        MountEntry {
            mount_id: 1,
            parent_id: 0,
            mount_point: PathBuf::from(point),
            fs_type: fs_type.to_owned(),
            source: "cgroup".to_owned(),
            super_options: options.to_owned(),
        }
    }

    fn hybrid_mounts() -> Vec<MountEntry> {
        vec![
            mount("/sys/fs/cgroup/cpu", "cgroup", "rw,cpu"),
            mount("/sys/fs/cgroup/memory", "cgroup", "rw,memory"),
            mount("/sys/fs/cgroup/pids", "cgroup", "rw,pids"),
            mount("/sys/fs/cgroup/systemd", "cgroup", "rw,name=systemd"),
            mount("/sys/fs/cgroup/unified", "cgroup2", "rw"),
        ]
    }

    fn controllers(text: &'static str) -> impl Fn(&Path) -> io::Result<String> {
        move |_| Ok(text.to_owned())
    }

    fn both() -> Limits {
        Limits {
            memory_max: Some(64 << 20),
            pids_max: Some(8),
            parent: None,
        }
    }

    #[test]
    fn a_hybrid_system_uses_the_v1_hierarchies() {
        let targets = plan(
            &both(),
            HYBRID_CGROUP,
            &hybrid_mounts(),
            controllers("hugetlb\n"),
        )
        .unwrap();
        assert_eq!(
            targets,
            [
                Target {
                    version: Version::V1,
                    parent: PathBuf::from("/sys/fs/cgroup/memory/process_api/abc"),
                    controllers: vec!["memory"],
                },
                Target {
                    version: Version::V1,
                    parent: PathBuf::from("/sys/fs/cgroup/pids"),
                    controllers: vec!["pids"],
                },
            ]
        );
    }

    #[test]
    fn a_unified_system_uses_the_supervisors_v2_cgroup() {
        let mounts = vec![mount("/sys/fs/cgroup", "cgroup2", "rw,nsdelegate")];
        let targets = plan(
            &both(),
            "0::/user.slice/session-1.scope\n",
            &mounts,
            controllers("cpu memory pids\n"),
        )
        .unwrap();
        assert_eq!(
            targets,
            [Target {
                version: Version::V2,
                parent: PathBuf::from("/sys/fs/cgroup/user.slice/session-1.scope"),
                controllers: vec!["memory", "pids"],
            }]
        );
    }

    #[test]
    fn only_the_controllers_asked_for_are_planned() {
        let limits = Limits {
            pids_max: Some(8),
            ..Limits::default()
        };
        let targets = plan(
            &limits,
            HYBRID_CGROUP,
            &hybrid_mounts(),
            controllers("hugetlb"),
        )
        .unwrap();
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].controllers, ["pids"]);
        assert!(
            plan(
                &Limits::default(),
                HYBRID_CGROUP,
                &hybrid_mounts(),
                controllers("")
            )
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn controllers_mounted_together_share_one_cgroup() {
        let mounts = vec![mount("/sys/fs/cgroup/mp", "cgroup", "rw,memory,pids")];
        let targets = plan(&both(), "3:memory,pids:/job\n", &mounts, controllers("")).unwrap();
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].parent, PathBuf::from("/sys/fs/cgroup/mp/job"));
        assert_eq!(targets[0].controllers, ["memory", "pids"]);
    }

    #[test]
    fn a_missing_controller_is_named_with_what_was_found() {
        let mounts = vec![mount("/sys/fs/cgroup/unified", "cgroup2", "rw")];
        let err = plan(&both(), "0::/\n", &mounts, controllers("hugetlb\n")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("no cgroup hierarchy has the memory controller"),
            "{text}"
        );
        assert!(text.contains("offers only \"hugetlb\""), "{text}");
        assert!(text.contains("fix:"), "{text}");
    }

    #[test]
    fn a_parent_must_offer_every_controller() {
        let limits = Limits {
            parent: Some(PathBuf::from("/sys/fs/cgroup/unified")),
            ..both()
        };
        let err = plan(
            &limits,
            HYBRID_CGROUP,
            &hybrid_mounts(),
            controllers("hugetlb"),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                CgroupError::ParentLacksController {
                    controller: "memory",
                    ..
                }
            ),
            "{err}"
        );
        // Alone, a parent gives a cgroup without controllers.
        let limits = Limits {
            parent: Some(PathBuf::from("/sys/fs/cgroup/unified")),
            ..Limits::default()
        };
        let targets = plan(
            &limits,
            HYBRID_CGROUP,
            &hybrid_mounts(),
            controllers("hugetlb"),
        )
        .unwrap();
        assert_eq!(
            targets,
            [Target {
                version: Version::V2,
                parent: PathBuf::from("/sys/fs/cgroup/unified"),
                controllers: vec![],
            }]
        );
    }

    #[test]
    fn errors_name_the_cause_and_the_fix() {
        let err = CgroupError::File {
            action: Action::EnableControllers,
            path: PathBuf::from("/sys/fs/cgroup/system.slice/x.service/cgroup.subtree_control"),
            errno: Errno::EBUSY,
        };
        let text = err.to_string();
        assert!(text.contains("EBUSY"), "{text}");
        assert!(text.contains("no internal processes"), "{text}");
        assert!(text.contains("--cgroup-parent"), "{text}");
        let err = CgroupError::File {
            action: Action::Create,
            path: PathBuf::from("/sys/fs/cgroup/pids/tkn-1"),
            errno: Errno::EROFS,
        };
        assert!(err.to_string().contains("read-only"), "{err}");
    }
}
