//! How the kernel reads and shows `delegate_*` values: `bpf_parse_param` and
//! `seq_print_delegate_opts` in kernel/bpf/inode.c. These trials send raw strings with
//! `fsconfig_set_string` (the library's own parser refuses numbers mixed with names) and read
//! the options back from `/proc/<child>/mountinfo`.

use std::ffi::CStr;
use std::os::fd::AsFd as _;

use bpf_token_launcher::bpf::bpffs;
use bpf_token_launcher::policy::DelegateKind::{self, Attachs, Cmds, Maps, Progs};
use bpf_token_launcher::sys;
use libtest_mimic::Failed;

use crate::harness::{
    CHILD_MOUNT_POINT, Context as _, Namespaces, child_mounted_delegation, spawn,
};

/// Sets `options` on a context of a child, creates and mounts it in the child's mount
/// namespace, and returns the `delegate_*` options its mountinfo shows.
fn mounted_with(options: &[(&CStr, &CStr)]) -> Result<Vec<(DelegateKind, String)>, Failed> {
    let child = spawn(Namespaces::UserMount, |peer| {
        let contexts = crate::harness::child_open_contexts(peer, 1)?;
        peer.recv("created")?;
        let mount = bpffs::mount(contexts[0].as_fd()).context("bpffs::mount")?;
        sys::mount::move_mount_to(mount.as_fd(), CHILD_MOUNT_POINT).context("move_mount")?;
        peer.send("mounted", "")?;
        peer.recv("done")?;
        Ok(())
    })?;
    let (_, contexts) = child.peer.recv_fds("contexts")?;
    let context = contexts.first().ok_or("no context")?;
    for (key, value) in options {
        sys::mount::fsconfig_set_string(context.as_fd(), key, value).context(&format!(
            "{}={}",
            key.to_string_lossy(),
            value.to_string_lossy()
        ))?;
    }
    sys::mount::fsconfig_create(context.as_fd()).context("FSCONFIG_CMD_CREATE")?;
    child.peer.send("created", "")?;
    child.peer.recv("mounted")?;
    let shown = child_mounted_delegation(&child)?;
    child.peer.send("done", "")?;
    child.finish()?;
    Ok(shown)
}

fn expect_shown(
    shown: &[(DelegateKind, String)],
    expected: &[(DelegateKind, &str)],
) -> Result<(), Failed> {
    let expected: Vec<(DelegateKind, String)> = expected
        .iter()
        .map(|(k, v)| (*k, (*v).to_owned()))
        .collect();
    if shown != expected {
        return Err(format!("mountinfo shows {shown:?}, expected {expected:?}").into());
    }
    Ok(())
}

/// `find_btf_enum_const` compares names with `strcasecmp` after the enum prefix.
pub fn names_are_case_insensitive() -> Result<(), Failed> {
    let shown = mounted_with(&[(c"delegate_progs", c"XDP:Socket_Filter")])?;
    expect_shown(&shown, &[(Progs, "socket_filter:xdp")])
}

/// `seq_print_delegate_opts` prints `any` when every value the kernel knows is set, whether it
/// was given as `any` or as a number with all bits.
pub fn names_any_and_all_ones_show_as_any() -> Result<(), Failed> {
    let shown = mounted_with(&[
        (c"delegate_cmds", c"any"),
        (c"delegate_maps", c"0xffffffffffffffff"),
    ])?;
    expect_shown(&shown, &[(Cmds, "any"), (Maps, "any")])
}

/// `seq_print_delegate_opts` walks the kernel's BTF enum, so names come out in enum order
/// whatever order they were given in.
pub fn names_shown_in_enum_order() -> Result<(), Failed> {
    let shown = mounted_with(&[
        (c"delegate_cmds", c"btf_load:prog_load:map_create"),
        (c"delegate_attachs", c"xdp:cgroup_inet_ingress"),
    ])?;
    expect_shown(
        &shown,
        &[
            (Cmds, "map_create:prog_load:btf_load"),
            (Attachs, "cgroup_inet_ingress:xdp"),
        ],
    )
}

/// In `bpf_parse_param` an item that is not a name goes through `kstrtou64(p, 0, &msk)`, which
/// overwrites the mask built so far: `hash:0x4` is just bit 2, `array`.
pub fn names_number_replaces_earlier_items() -> Result<(), Failed> {
    let shown = mounted_with(&[(c"delegate_maps", c"hash:0x4")])?;
    expect_shown(&shown, &[(Maps, "array")])
}

/// Each `fsconfig` of the same key ORs its mask into the stored one (`*delegate_msk |= msk`).
pub fn names_repeated_option_ors_masks() -> Result<(), Failed> {
    let shown = mounted_with(&[(c"delegate_maps", c"hash"), (c"delegate_maps", c"array")])?;
    expect_shown(&shown, &[(Maps, "hash:array")])
}
