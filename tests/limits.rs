//! `--memory-max` and `--pids-max` on the real kernel, as root: the limits hold (BPF maps
//! included), the sandbox's cgroups never outlive a run however it ends, and bad values are
//! refused before anything is forked.
//!
//! The commands that push against the limits are this test binary itself, run inside the
//! sandbox as one of the `role_*` functions below (ignored in normal runs; selected with
//! `--ignored --exact`), from a world-readable copy the sandbox's mapped user can execute.

mod support;

use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{DEMO, run_clean, run_command_clean, shared};

const MAP_MIB: u32 = 8;

/// Inside the sandbox: BPF array maps of 8 MiB through the token until `TOKEN_LIMITS_MAPS_MIB`
/// MiB exist or the kernel refuses one; prints the outcome on one line.
#[test]
#[ignore = "a command run inside the sandbox by memory_max_limits_the_bpf_maps_of_the_sandbox"]
fn role_create_maps() {
    use bpf_token_launcher::bpf::token::Token;
    use bpf_token_launcher::sys::bpf::{MapCreateAttr, map_create};
    use std::os::fd::AsFd as _;
    let goal: u32 = std::env::var("TOKEN_LIMITS_MAPS_MIB")
        .unwrap()
        .parse()
        .unwrap();
    let bpffs = std::env::var("LIBBPF_BPF_TOKEN_PATH").expect("run inside the sandbox");
    let token = Token::from_bpffs_path(std::path::Path::new(&bpffs)).unwrap();
    let attr = MapCreateAttr {
        // BPF_MAP_TYPE_ARRAY, the one map type the default policy delegates.
        map_type: 2,
        key_size: 4,
        value_size: 4096,
        max_entries: MAP_MIB * 1024 * 1024 / 4096,
        name: b"limits_test",
        ..MapCreateAttr::default()
    };
    let mut maps = Vec::new();
    let mut refused = None;
    while (maps.len() as u32) * MAP_MIB < goal {
        match map_create(&attr, Some(token.as_fd())) {
            Ok(map) => maps.push(map),
            Err(err) => {
                refused = Some(err.errno);
                break;
            }
        }
    }
    let created = maps.len() as u32 * MAP_MIB;
    // At the limit, the next page this process touches could wake the OOM killer: free the
    // maps (the kernel frees them from a work queue) before printing.
    drop(maps);
    std::thread::sleep(Duration::from_millis(200));
    match refused {
        Some(errno) => println!("maps: refused after {created} MiB: {errno:?}"),
        None => println!("maps: created {created} MiB"),
    }
}

/// Inside the sandbox: forks `TOKEN_LIMITS_FORKS` children that sleep until the sandbox ends;
/// prints how many started and how many forks failed, and with which errno.
#[test]
#[ignore = "a command run inside the sandbox by pids_max_refuses_forks_beyond_the_limit"]
fn role_fork_children() {
    let wanted: u32 = std::env::var("TOKEN_LIMITS_FORKS")
        .unwrap()
        .parse()
        .unwrap();
    let (mut started, mut refused) = (0, Vec::new());
    for _ in 0..wanted {
        // SAFETY: the child only calls pause and _exit, both async-signal-safe.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => loop {
                // Killed with the sandbox's PID namespace when the command ends.
                unsafe { libc::pause() };
            },
            Ok(nix::unistd::ForkResult::Parent { .. }) => started += 1,
            Err(errno) => refused.push(format!("{errno:?}")),
        }
    }
    refused.dedup();
    println!(
        "forks: {started} started, {} refused with {}",
        wanted - started,
        refused.join(",")
    );
}

/// The role's command line: a world-readable copy of this binary running one ignored test.
fn role_command(copy: &support::WorldReadableCopy, role: &str) -> Vec<String> {
    [
        copy.path.to_str().unwrap(),
        "--ignored",
        "--exact",
        role,
        "--nocapture",
        "--test-threads=1",
        "-q",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn demo(options: &[&str], command: &[String], env: &[(&str, &str)]) -> support::Run {
    let mut cmd = Command::new(DEMO);
    cmd.args(options)
        .arg("--")
        .args(command)
        .envs(env.iter().copied());
    let run = run_command_clean(&mut cmd);
    // The sandbox's cgroups are gone once the supervisor has returned.
    if let Some(pid) = run.supervisor_pid() {
        assert_no_cgroup_of(pid, &run);
    }
    run
}

trait SupervisorPid {
    fn supervisor_pid(&self) -> Option<u32>;
}

impl SupervisorPid for support::Run {
    /// From the `-v` trace: `[  1.0 ms  supervisor  1234] ...`.
    fn supervisor_pid(&self) -> Option<u32> {
        self.stderr.lines().find_map(|l| {
            let rest = l.split(" supervisor ").nth(1)?;
            rest.trim_start().split(']').next()?.trim().parse().ok()
        })
    }
}

/// Every directory `tkn-<pid>` could have been created as: under this process's cgroup in
/// each hierarchy (the supervisor is its child and shares them), and under the cgroup2 root.
fn cgroup_candidates(pid: u32) -> Vec<PathBuf> {
    let name = format!("tkn-{pid}");
    let mounts = bpf_token_launcher::mountinfo::read(None).expect("read the mount table");
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mut found = Vec::new();
    for line in own.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (
            fields.next().unwrap(),
            fields.next().unwrap(),
            fields.next().unwrap().trim_start_matches('/'),
        );
        let mount = mounts.iter().find(|m| {
            if controllers.is_empty() {
                m.fs_type == "cgroup2"
            } else {
                m.fs_type == "cgroup"
                    && controllers
                        .split(',')
                        .all(|c| m.super_options.split(',').any(|o| o == c))
            }
        });
        if let Some(mount) = mount {
            found.push(mount.mount_point.join(path).join(&name));
            found.push(mount.mount_point.join(&name));
        }
    }
    found.sort();
    found.dedup();
    found
}

fn existing_cgroups_of(pid: u32) -> Vec<PathBuf> {
    cgroup_candidates(pid)
        .into_iter()
        .filter(|p| p.exists())
        .collect()
}

fn assert_no_cgroup_of(pid: u32, context: &dyn std::fmt::Debug) {
    let left = existing_cgroups_of(pid);
    assert!(
        left.is_empty(),
        "cgroups of supervisor {pid} left after the run: {left:?}\n{context:#?}"
    );
}

/// Waits up to `timeout` for the supervisor's cgroups to disappear.
fn wait_no_cgroup_of(pid: u32, timeout: Duration) -> Vec<PathBuf> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = existing_cgroups_of(pid);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `maps:` line a role printed.
fn maps_line(run: &support::Run) -> &str {
    run.stdout
        .lines()
        .find(|l| l.starts_with("maps: "))
        .unwrap_or_else(|| panic!("no maps: line\n{run:#?}"))
}

#[test]
fn memory_max_limits_the_bpf_maps_of_the_sandbox() {
    let _host = shared();
    let this = std::env::current_exe().unwrap();
    let copy = support::world_readable_copy(this.to_str().unwrap());
    let command = role_command(&copy, "role_create_maps");
    let env = [("TOKEN_LIMITS_MAPS_MIB", "128")];
    // Without a limit, 128 MiB of maps go through (RLIMIT_MEMLOCK, 8 MiB here, is not what
    // the kernel checks): the limited run below can fail.
    let free = demo(&["-v"], &command, &env);
    assert_eq!(free.code, Some(0), "{free:#?}");
    assert_eq!(maps_line(&free), "maps: created 128 MiB", "{free:#?}");

    let limited = demo(&["-v", "--memory-max", "64M"], &command, &env);
    // The kernel either refuses the charge (ENOMEM, below) or, when a charge cannot fail, lets
    // the cgroup's OOM killer end a process of the sandbox (seen under load: PID 1 went, 137).
    // Either way the limit held and the supervisor says so.
    assert!(
        limited
            .stderr
            .contains("the sandbox reached --memory-max 64 MiB"),
        "{limited:#?}"
    );
    if limited.code == Some(137) && limited.stderr.contains("the OOM killer killed") {
        assert!(
            !limited.stdout.contains("maps: created 128 MiB"),
            "{limited:#?}"
        );
        return;
    }
    assert_eq!(limited.code, Some(0), "{limited:#?}");
    let line = maps_line(&limited);
    let rest = line
        .strip_prefix("maps: refused after ")
        .unwrap_or_else(|| panic!("the limit did not stop the maps: {line}\n{limited:#?}"));
    let (mib, errno) = rest.split_once(" MiB: ").unwrap();
    let mib: u32 = mib.parse().unwrap();
    // The kernel charges the maps to the sandbox's memory cgroup (with __GFP_ACCOUNT) and
    // answers ENOMEM once the charge would pass the limit.
    assert_eq!(errno, "ENOMEM", "{limited:#?}");
    assert!(
        mib < 64,
        "{mib} MiB of maps under a 64 MiB limit\n{limited:#?}"
    );
    assert!(
        limited
            .stderr
            .contains("the sandbox reached --memory-max 64 MiB"),
        "{limited:#?}"
    );
    assert!(limited.stderr.contains("memory"), "{limited:#?}");
}

#[test]
fn pids_max_refuses_forks_beyond_the_limit_and_the_run_ends_cleanly() {
    let _host = shared();
    let this = std::env::current_exe().unwrap();
    let copy = support::world_readable_copy(this.to_str().unwrap());
    let command = role_command(&copy, "role_fork_children");
    let started = Instant::now();
    let run = demo(
        &["-v", "--pids-max", "8"],
        &command,
        &[("TOKEN_LIMITS_FORKS", "50")],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(started.elapsed() < Duration::from_secs(10), "{run:#?}");
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("forks: "))
        .unwrap_or_else(|| panic!("no forks: line\n{run:#?}"));
    let (counts, errno) = line
        .strip_prefix("forks: ")
        .unwrap()
        .split_once(" refused with ")
        .unwrap();
    let (ok, _) = counts.split_once(" started, ").unwrap();
    let ok: u32 = ok.parse().unwrap();
    // The sandbox's init and the command (with libtest's thread) take some of the 8.
    assert!(
        ok <= 6,
        "{ok} children started under --pids-max 8\n{run:#?}"
    );
    assert_eq!(errno, "EAGAIN", "{run:#?}");
    assert!(
        run.stderr.contains("the sandbox reached --pids-max 8"),
        "{run:#?}"
    );
    let sandbox = run.child_pid().unwrap();
    let left = support::descendants(sandbox);
    assert!(left.is_empty(), "{left:?} survived\n{run:#?}");
}

#[test]
fn the_cgroups_exist_during_the_run_and_are_gone_after_it() {
    let _host = shared();
    let run = demo(
        &["-v", "--memory-max", "256M", "--pids-max", "64"],
        &["cat".to_owned(), "/proc/self/cgroup".to_owned()],
        &[],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    let pid = run.supervisor_pid().unwrap();
    // The trace names each cgroup: `cgroup: v1 memory /sys/fs/cgroup/memory/.../tkn-<pid> (...)`.
    let members: Vec<(&str, &str)> = run
        .stderr
        .lines()
        .filter_map(|l| {
            let mut words = l.split("] cgroup: ").nth(1)?.split(' ');
            let (_version, controllers, path) = (words.next()?, words.next()?, words.next()?);
            Some((controllers, path))
        })
        .collect();
    for controller in ["memory", "pids"] {
        assert!(
            members
                .iter()
                .any(|(c, _)| c.split('+').any(|c| c == controller)),
            "no {controller} cgroup in the trace\n{run:#?}"
        );
    }
    // The command ran in each of them: its /proc/self/cgroup shows their paths.
    for (_, path) in &members {
        assert!(path.ends_with(&format!("/tkn-{pid}")), "{path}");
        assert!(
            run.stdout.lines().any(|l| l
                .splitn(3, ':')
                .nth(2)
                .is_some_and(|own| path.ends_with(own))),
            "the command did not run in {path}\n{run:#?}"
        );
    }
}

#[test]
fn a_timed_out_run_leaves_no_cgroup() {
    let _host = shared();
    let started = Instant::now();
    let run = demo(
        &[
            "-v",
            "--timeout",
            "0.5",
            "--memory-max",
            "64M",
            "--pids-max",
            "16",
        ],
        &[
            "sh".to_owned(),
            "-c".to_owned(),
            "sleep 30 & sleep 30".to_owned(),
        ],
        &[],
    );
    assert_eq!(run.code, Some(124), "{run:#?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{run:#?}");
}

#[test]
fn a_killed_supervisor_leaves_no_cgroup_and_no_process() {
    let _host = shared();
    let mut running = support::RunningSandbox::start_with(
        &["--memory-max", "64M", "--pids-max", "16"],
        &["sh", "-c", "sleep 60 & sleep 60"],
    );
    let supervisor = running.supervisor.id();
    let cgroups = existing_cgroups_of(supervisor);
    // On this machine kind: v1 memory and v1 pids (or one v2 cgroup for both).
    assert!(!cgroups.is_empty(), "no cgroup while the sandbox runs");
    let sandbox_processes = support::descendants(running.sandbox_pid);
    kill(Pid::from_raw(supervisor as i32), Signal::SIGKILL).unwrap();
    let status = running.supervisor.wait().unwrap();
    assert_eq!(status.signal(), Some(9));
    // No destructor ran: the keeper removes them.
    let left = wait_no_cgroup_of(supervisor, Duration::from_secs(5));
    assert!(
        left.is_empty(),
        "left after SIGKILL: {left:?} (had {cgroups:?})"
    );
    for pid in sandbox_processes.into_iter().chain([running.sandbox_pid]) {
        assert!(
            support::wait_gone(pid, Duration::from_secs(2)),
            "process {pid} survived its supervisor"
        );
    }
}

/// A supervisor and its keeper both killed leave a cgroup nobody holds: the next run with
/// limits kills what is in it and removes it.
#[test]
fn the_next_run_removes_an_abandoned_cgroup() {
    // Exclusive: a concurrent run of another test would remove it first.
    let _host = support::exclusive();
    // A pid that is surely dead: a child that has been reaped.
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    // In the pids hierarchy, under this process's cgroup (the next supervisor's parent).
    let stale = own_cgroup_dir("pids").join(format!("tkn-{dead_pid}"));
    std::fs::create_dir(&stale).unwrap();
    // With a process inside, as a killed sandbox's straggler would be.
    let straggler = Command::new("sleep").arg("60").spawn().unwrap();
    let mut straggler = Straggler(straggler, stale.clone());
    std::fs::write(stale.join("cgroup.procs"), straggler.0.id().to_string()).unwrap();
    let run = run_clean(DEMO, &["-v", "--pids-max", "16", "--", "true"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        !stale.exists(),
        "{} is still there\n{run:#?}",
        stale.display()
    );
    assert!(
        run.stderr.contains("removed the abandoned cgroup"),
        "{run:#?}"
    );
    let status = straggler.0.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "the straggler was not killed");
}

/// The abandoned cgroup's process and directory, removed even when the test fails.
struct Straggler(std::process::Child, PathBuf);

impl Drop for Straggler {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir(&self.1);
    }
}

/// This process's cgroup directory in the hierarchy that has `controller` (v2 if its
/// cgroup lists it, else the v1 hierarchy mounted with it).
fn own_cgroup_dir(controller: &str) -> PathBuf {
    let mounts = bpf_token_launcher::mountinfo::read(None).unwrap();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path_of = |wanted: &dyn Fn(&str) -> bool| {
        own.lines().find_map(|l| {
            let mut fields = l.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            wanted(controllers).then(|| path.trim_start_matches('/').to_owned())
        })
    };
    if let (Some(mount), Some(path)) = (
        mounts.iter().find(|m| m.fs_type == "cgroup2"),
        path_of(&|c: &str| c.is_empty()),
    ) {
        let dir = mount.mount_point.join(path);
        let offered = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap();
        if offered.split_whitespace().any(|c| c == controller) {
            return dir;
        }
    }
    let mount = mounts
        .iter()
        .find(|m| m.fs_type == "cgroup" && m.super_options.split(',').any(|o| o == controller))
        .unwrap_or_else(|| panic!("no hierarchy has {controller}"));
    let path = path_of(&|c: &str| c.split(',').any(|c| c == controller)).unwrap();
    mount.mount_point.join(path)
}

/// `--cgroup-parent` with a cgroup2 directory: the sandbox child is born in a child of it
/// (`CLONE_INTO_CGROUP`), which is removed after the run.
#[test]
fn a_cgroup2_parent_gets_the_sandbox_in_a_child_cgroup() {
    let _host = shared();
    let mounts = bpf_token_launcher::mountinfo::read(None).unwrap();
    let root = &mounts
        .iter()
        .find(|m| m.fs_type == "cgroup2")
        .expect("a cgroup2 mount")
        .mount_point;
    let run = demo(
        &["-v", "--cgroup-parent", root.to_str().unwrap()],
        &["cat".to_owned(), "/proc/self/cgroup".to_owned()],
        &[],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    let pid = run.supervisor_pid().unwrap();
    assert!(
        run.stdout.lines().any(|l| l == format!("0::/tkn-{pid}")),
        "{run:#?}"
    );
    assert!(run.stderr.contains("(CLONE_INTO_CGROUP)"), "{run:#?}");
    assert!(!root.join(format!("tkn-{pid}")).exists());
}

#[test]
fn json_status_reports_the_limits_and_the_cgroups() {
    let _host = shared();
    let (run, text) =
        support::run_with_status_fd(&["-v", "--json-status", "3", "--pids-max", "8", "--", "true"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let limits: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "limits")
        .unwrap_or_else(|| panic!("no limits event in:\n{text}"));
    assert_eq!(limits["pids_max"], 8, "{text}");
    assert_eq!(limits["memory_max"], serde_json::Value::Null, "{text}");
    let cgroups = limits["cgroups"].as_array().unwrap();
    assert_eq!(cgroups.len(), 1, "{text}");
    assert_eq!(cgroups[0]["controllers"], serde_json::json!(["pids"]));
    assert_eq!(cgroups[0]["settings"]["pids.max"], "8");
    let pid = run.supervisor_pid().unwrap();
    assert!(
        cgroups[0]["path"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/tkn-{pid}")),
        "{text}"
    );
}

/// The sandbox's root is host uid 0 with `--uid 0`, and host uid 0 owns the cgroup files: the
/// command can raise its own limit (shown here), and the user is told so.
#[test]
fn uid_0_is_warned_that_the_limits_are_not_binding() {
    let _host = shared();
    let script = "p=$(awk -F: '$2 == \"memory\" {print $3}' /proc/self/cgroup); \
        echo 1073741824 > /sys/fs/cgroup/memory$p/memory.limit_in_bytes && echo raised";
    let run = demo(
        &["-v", "--uid", "0", "--gid", "0", "--memory-max", "64M"],
        &["sh".to_owned(), "-c".to_owned(), script.to_owned()],
        &[],
    );
    assert!(
        run.stderr
            .contains("--uid 0: the command owns the host's cgroup files"),
        "{run:#?}"
    );
    if own_cgroup_dir("memory")
        .join("memory.limit_in_bytes")
        .exists()
    {
        assert_eq!(run.stdout.trim(), "raised", "{run:#?}");
        // The default identity (an unprivileged host uid) cannot.
        let run = demo(
            &["-v", "--memory-max", "64M"],
            &["sh".to_owned(), "-c".to_owned(), script.to_owned()],
            &[],
        );
        assert_eq!(run.stdout.trim(), "", "{run:#?}");
        assert!(run.stderr.contains("Permission denied"), "{run:#?}");
    }
}

#[test]
fn bad_limits_are_refused_before_forking() {
    let _host = shared();
    for (args, message) in [
        (&["--memory-max", "0"][..], "at least 1 MiB"),
        (&["--memory-max", "lots"][..], "is not a size"),
        (&["--memory-max", "12Q"][..], "is not a size"),
        (&["--pids-max", "1"][..], "at least 2"),
        (&["--pids-max", "-3"][..], ""),
        (
            &["--cgroup-parent", "/tmp"][..],
            "not in a cgroup2 filesystem",
        ),
        (&["--cgroup-parent", "relative"][..], "absolute path"),
    ] {
        let mut full = vec!["-v"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--", "true"]);
        let run = run_clean(DEMO, &full);
        assert_eq!(run.code, Some(2), "{args:?}\n{run:#?}");
        assert!(run.stderr.contains(message), "{args:?}\n{run:#?}");
        assert_eq!(run.child_pid(), None, "{args:?} forked\n{run:#?}");
    }
}

/// A read-only cgroup filesystem, as in most containers: the error names the file, the errno
/// and the fix, the run stops before forking the sandbox, and the cgroup already made in the
/// other hierarchy is removed.
#[test]
fn a_read_only_cgroup_filesystem_is_explained() {
    let _host = shared();
    let pids = own_cgroup_dir("pids");
    let mount = bpf_token_launcher::mountinfo::read(None)
        .unwrap()
        .into_iter()
        .filter(|m| pids.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len())
        .unwrap()
        .mount_point;
    // In a mount namespace of its own, so the host's mount stays writable.
    let script = format!(
        "mount -o remount,bind,ro {} && exec {DEMO} -v --memory-max 64M --pids-max 8 -- true",
        mount.display()
    );
    let child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let run = support::Run::from_output(child.wait_with_output().unwrap());
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains("EROFS (Read-only file system)")
            && run
                .stderr
                .contains("read-only, as in most containers; fix: "),
        "{run:#?}"
    );
    assert!(run.stderr.contains(&format!("tkn-{pid}")), "{run:#?}");
    assert_eq!(run.child_pid(), None, "forked\n{run:#?}");
    assert_no_cgroup_of(pid, &run);
}

#[test]
fn check_says_whether_the_limits_can_be_used() {
    let _host = shared();
    let check = Command::new(DEMO)
        .args(["--check", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = check.id();
    let run = support::Run::from_output(check.wait_with_output().unwrap());
    assert_eq!(run.code, Some(0), "{run:#?}");
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect(&run.stdout);
    let finding = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "resource limits (cgroups)")
        .unwrap_or_else(|| panic!("no finding\n{run:#?}"))
        .clone();
    // This machine kind (and CI) can: v1 memory and pids, or v2.
    assert_eq!(finding["status"], "ok", "{finding:#}");
    let detail = finding["detail"].as_str().unwrap();
    assert!(
        detail.contains("memory") && detail.contains("pids"),
        "{detail}"
    );
    // The check's own cgroups are gone.
    assert_no_cgroup_of(pid, &run);
    // A parent that cannot carry the controllers is reported as such, with the fix, and does
    // not make the machine unfit for the demo.
    let mounts = bpf_token_launcher::mountinfo::read(None).unwrap();
    let root = mounts
        .iter()
        .find(|m| m.fs_type == "cgroup2")
        .unwrap()
        .mount_point
        .clone();
    let has_memory = std::fs::read_to_string(root.join("cgroup.controllers"))
        .unwrap()
        .split_whitespace()
        .any(|c| c == "memory");
    if !has_memory {
        let run = run_clean(
            DEMO,
            &["--check", "--cgroup-parent", root.to_str().unwrap()],
        );
        assert_eq!(run.code, Some(0), "{run:#?}");
        let line = run
            .stdout
            .lines()
            .find(|l| l.contains("resource limits (cgroups)"))
            .unwrap();
        assert!(line.starts_with("n/a"), "{}", run.stdout);
        assert!(run.stdout.contains("fix: "), "{}", run.stdout);
    }
}
