//! The kernel's BPF token rules, each a named trial on the real kernel, each going through the
//! launcher library. Run as root: `cargo test -p conformance`.
//!
//! The scenarios fork children into new namespaces with `fork_into`, a raw `clone3` that needs a
//! single-threaded caller, so the trials run one by one on the main thread. Every mount is made
//! in a child's private mount namespace or as a detached `fsmount`, and XDP only in a child's own
//! network namespace; after each trial the host's mount table and `lo` are checked unchanged and
//! no child is left.

use std::collections::BTreeSet;
use std::process::Command;

use libtest_mimic::{Arguments, Failed, Trial};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

mod coverage;
mod harness;
mod names;
mod token_create;
mod token_use;
mod who;

type Scenario = fn() -> Result<(), Failed>;

const SCENARIOS: &[(&str, Scenario)] = &[
    // Who does what.
    (
        "delegated_token_loads_counter_and_counts_on_lo",
        who::delegated_token_loads_counter_and_counts_on_lo,
    ),
    (
        "who_child_delegating_is_eperm",
        who::who_child_delegating_is_eperm,
    ),
    (
        "who_child_creating_superblock_is_eperm",
        who::who_child_creating_superblock_is_eperm,
    ),
    (
        "who_reconfigure_after_creation_changes_nothing",
        who::who_reconfigure_after_creation_changes_nothing,
    ),
    (
        "who_fsopen_without_mount_namespace_is_eperm",
        who::who_fsopen_without_mount_namespace_is_eperm,
    ),
    (
        "who_fsmount_without_cap_sys_admin_is_eperm",
        who::who_fsmount_without_cap_sys_admin_is_eperm,
    ),
    // BPF_TOKEN_CREATE.
    (
        "token_create_from_o_path_fd_is_ebadf",
        token_create::token_create_from_o_path_fd_is_ebadf,
    ),
    (
        "token_create_without_delegation_is_enoent",
        token_create::token_create_without_delegation_is_enoent,
    ),
    (
        "token_create_from_subdirectory_is_einval",
        token_create::token_create_from_subdirectory_is_einval,
    ),
    (
        "token_create_from_non_bpffs_is_einval",
        token_create::token_create_from_non_bpffs_is_einval,
    ),
    (
        "token_create_with_flags_is_einval",
        token_create::token_create_with_flags_is_einval,
    ),
    (
        "token_create_in_initial_namespace_is_eopnotsupp",
        token_create::token_create_in_initial_namespace_is_eopnotsupp,
    ),
    (
        "token_create_from_other_namespace_is_eperm",
        token_create::token_create_from_other_namespace_is_eperm,
    ),
    (
        "token_create_without_cap_bpf_is_eperm",
        token_create::token_create_without_cap_bpf_is_eperm,
    ),
    // Using a token.
    (
        "use_prog_type_outside_delegation_is_eperm",
        token_use::use_prog_type_outside_delegation_is_eperm,
    ),
    (
        "use_map_type_outside_delegation_is_eperm",
        token_use::use_map_type_outside_delegation_is_eperm,
    ),
    (
        "use_command_outside_delegation_is_eperm",
        token_use::use_command_outside_delegation_is_eperm,
    ),
    (
        "use_attach_type_zero_needs_cgroup_inet_ingress",
        token_use::use_attach_type_zero_needs_cgroup_inet_ingress,
    ),
    (
        "use_token_fd_without_flag_is_ignored",
        token_use::use_token_fd_without_flag_is_ignored,
    ),
    (
        "use_non_token_fd_with_flag_is_einval",
        token_use::use_non_token_fd_with_flag_is_einval,
    ),
    (
        "use_after_dropping_capabilities_is_eperm",
        token_use::use_after_dropping_capabilities_is_eperm,
    ),
    (
        "use_from_sibling_user_namespace_is_eperm",
        token_use::use_from_sibling_user_namespace_is_eperm,
    ),
    (
        "use_without_token_in_user_namespace_is_eperm",
        token_use::use_without_token_in_user_namespace_is_eperm,
    ),
    (
        "use_second_xdp_link_on_lo_is_ebusy",
        token_use::use_second_xdp_link_on_lo_is_ebusy,
    ),
    // Option names and values.
    (
        "names_are_case_insensitive",
        names::names_are_case_insensitive,
    ),
    (
        "names_any_and_all_ones_show_as_any",
        names::names_any_and_all_ones_show_as_any,
    ),
    (
        "names_shown_in_enum_order",
        names::names_shown_in_enum_order,
    ),
    (
        "names_number_replaces_earlier_items",
        names::names_number_replaces_earlier_items,
    ),
    (
        "names_repeated_option_ors_masks",
        names::names_repeated_option_ors_masks,
    ),
    // Every diagnosis has a test somewhere under tests/.
    (
        "every_diagnosis_is_produced_by_a_test",
        coverage::every_diagnosis_is_produced_by_a_test,
    ),
];

fn main() {
    let mut args = Arguments::from_args();
    // One by one on the main thread: fork_into needs a single-threaded caller.
    args.test_threads = Some(1);
    let trials = SCENARIOS
        .iter()
        .map(|&(name, scenario)| Trial::test(name, move || checked(scenario)))
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

/// Runs one scenario as root, then checks it left nothing behind on the host.
fn checked(scenario: Scenario) -> Result<(), Failed> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root on the real kernel (Linux 6.9+ with BPF tokens): run `sudo cargo test -p conformance`; these trials are never skipped".into());
    }
    let mounts = host_mounts()?;
    let lo_xdp = host_lo_xdp();
    let result = scenario();
    let leftovers = left_behind(&mounts, lo_xdp);
    match (result, leftovers) {
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(more)) => Err(format!("{}\nand: {}", e.message().unwrap_or(""), more).into()),
        (Ok(()), leftovers) => leftovers.map_err(Into::into),
    }
}

fn left_behind(
    mounts_before: &BTreeSet<String>,
    lo_xdp_before: Option<bool>,
) -> Result<(), String> {
    let mut problems = Vec::new();
    match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        Err(nix::errno::Errno::ECHILD) => {}
        Ok(WaitStatus::StillAlive) => problems.push("a child process is still running".to_owned()),
        other => problems.push(format!("a child was left unreaped: {other:?}")),
    }
    let mounts = host_mounts().map_err(|e| e.to_string())?;
    let added: Vec<&String> = mounts.difference(mounts_before).collect();
    let removed: Vec<&String> = mounts_before.difference(&mounts).collect();
    if !added.is_empty() || !removed.is_empty() {
        problems.push(format!(
            "the host mount table changed: added {added:?}, removed {removed:?}"
        ));
    }
    if host_lo_xdp() != lo_xdp_before {
        problems.push("XDP on the host's lo changed".to_owned());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The host's mount table (this process's, which is the host's): mount point and options of
/// every line, with the ids left out.
fn host_mounts() -> Result<BTreeSet<String>, String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    Ok(text
        .lines()
        .map(|l| l.split(' ').skip(2).collect::<Vec<_>>().join(" "))
        .collect())
}

/// Whether the host's `lo` has an XDP program (`None` if `ip` cannot tell).
fn host_lo_xdp() -> Option<bool> {
    let out = Command::new("ip")
        .args(["-d", "link", "show", "dev", "lo"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    out.status
        .success()
        .then(|| text.contains("xdp") || text.contains("prog/"))
}
