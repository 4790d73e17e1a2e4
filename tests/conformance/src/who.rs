//! Who does what: the split of the bpffs delegation between the root parent and the child in its
//! user namespace, and the whole positive path.

use std::os::fd::AsFd as _;

use aya::maps::{Array, MapData};
use bpf_token_launcher::bpf::bpffs;
use bpf_token_launcher::bpf::loader::TokenLoader;
use bpf_token_launcher::counter::{
    self, COUNTER_MAP, COUNTER_OBJECT, COUNTER_PROGRAM, CounterValue,
};
use bpf_token_launcher::diagnosis::Cause;
use bpf_token_launcher::policy::{self, DelegateKind, Delegation};
use bpf_token_launcher::sandbox::net::{self, LoopbackProbe};
use bpf_token_launcher::sys::{self, Errno};
use libtest_mimic::Failed;

use crate::harness::{
    self, CHILD_MOUNT_POINT, Context as _, Namespaces, Refusal, child_delegated_mount,
    child_mounted_delegation, parent_delegate, spawn, token_from_mount,
};

/// The demo counter's least privilege, as `token_userns_demo` computes its default policy.
pub fn counter_policy() -> Delegation {
    policy::least_privilege_for_elf(COUNTER_OBJECT).expect("the embedded counter object parses")
}

/// fsopen in the child, delegation and superblock by the parent, fsmount and token in the child,
/// the counter loaded with the token and attached to the child's own `lo`, one datagram counted.
pub fn delegated_token_loads_counter_and_counts_on_lo() -> Result<(), Failed> {
    let policy = counter_policy();
    let expected = harness::delegation("map_create:prog_load:btf_load", "array", "xdp", "xdp");
    if policy != expected {
        return Err(format!(
            "least privilege of the counter: expected {}, got {}",
            harness::masks_text(&expected),
            harness::masks_text(&policy)
        )
        .into());
    }
    let child = spawn(Namespaces::UserMountNet, |peer| {
        let mount = child_delegated_mount(peer)?;
        let token = token_from_mount(mount.as_fd()).context("token")?;
        let allowed = token.allowed().context("Token::allowed")?;
        peer.send("allowed", &harness::masks_text(&allowed))?;
        let mut loaded = TokenLoader::new(&token)
            .load(COUNTER_OBJECT)
            .context("TokenLoader::load")?;
        let has_btf = loaded.btf_fd().is_some();
        let map = loaded.take_map(COUNTER_MAP).ok_or("no COUNTER map")?;
        let counter: Array<MapData, CounterValue> =
            Array::try_from(map).context("Array::try_from")?;
        let program = loaded
            .program(COUNTER_PROGRAM)
            .ok_or("no xdp_counter program")?;
        let lo = net::interface_index("lo").context("lo")?;
        // BPF_LINK_CREATE takes no token: the program fd and CAP_NET_ADMIN over the child's own
        // network namespace are enough.
        let link = counter::attach_xdp(program.fd(), lo, "lo").context("attach_xdp")?;
        let probe = LoopbackProbe::new().context("LoopbackProbe")?;
        let before = counter.get(&0, 0).context("counter before")?.packets;
        probe.send_and_receive().context("datagram over lo")?;
        let after = counter.get(&0, 0).context("counter after")?.packets;
        drop(link);
        peer.send(
            "counted",
            &format!("btf={has_btf} delta={}", after - before),
        )
    })?;
    parent_delegate(&child, &[policy])?;
    let allowed = child.peer.recv("allowed")?;
    // bpf_token_create (kernel/bpf/token.c) copies the four masks of the bpffs into the token.
    if allowed != harness::masks_text(&policy) {
        return Err(format!(
            "token fdinfo {allowed}, policy {}",
            harness::masks_text(&policy)
        )
        .into());
    }
    // A receiving socket bound on the destination port: no ICMP reply crosses lo, so exactly one
    // packet passes the XDP program.
    let counted = child.peer.recv("counted")?;
    if counted != "btf=true delta=1" {
        return Err(format!(
            "expected the object's BTF loaded and one packet counted, got {counted}"
        )
        .into());
    }
    child.finish()
}

/// Non-zero `delegate_*` options need CAP_SYS_ADMIN in the initial user namespace
/// (`bpf_parse_param` in kernel/bpf/inode.c: `if (msk && !capable(CAP_SYS_ADMIN)) return -EPERM`).
pub fn who_child_delegating_is_eperm() -> Result<(), Failed> {
    let child = spawn(Namespaces::UserMount, |peer| {
        let context = bpffs::open_context().context("open_context")?;
        let outcome = bpffs::delegate_and_create(context.as_fd(), &counter_policy())
            .map_err(|e| Refusal::bpffs(&e));
        peer.report("delegate", &outcome)
    })?;
    child.peer.recv_refusal("delegate")?.expect(
        "BpffsError::Configure",
        Errno::EPERM,
        Some(Cause::DelegationNeedsHostRoot),
    )?;
    child.finish()
}

/// Creating a bpffs superblock for a non-initial user namespace needs CAP_SYS_ADMIN in the
/// initial one (`bpf_fill_super` in kernel/bpf/inode.c: `fc->user_ns != &init_user_ns &&
/// !capable(CAP_SYS_ADMIN)` is EPERM), even with no delegation at all.
pub fn who_child_creating_superblock_is_eperm() -> Result<(), Failed> {
    let child = spawn(Namespaces::UserMount, |peer| {
        let context = bpffs::open_context().context("open_context")?;
        // A zero option is allowed to the child (the EPERM above is only for non-zero masks).
        sys::mount::fsconfig_set_string(context.as_fd(), c"delegate_cmds", c"0")
            .context("delegate_cmds=0")?;
        let empty = Delegation::default();
        let outcome =
            bpffs::delegate_and_create(context.as_fd(), &empty).map_err(|e| Refusal::bpffs(&e));
        peer.report("create", &outcome)
    })?;
    child.peer.recv_refusal("create")?.expect(
        "BpffsError::Create",
        Errno::EPERM,
        Some(Cause::BpffsCreationRefused),
    )?;
    child.finish()
}

/// The delegation is fixed when the superblock is created. The parent's `fspick` + `fsconfig` +
/// `FSCONFIG_CMD_RECONFIGURE` is accepted (host root passes `bpf_parse_param`'s capable() check
/// and `vfs_cmd_reconfigure`'s ns_capable() on the superblock's namespace), but bpffs has no
/// reconfigure operation, so the new options are parsed into a context that is then dropped.
pub fn who_reconfigure_after_creation_changes_nothing() -> Result<(), Failed> {
    let policy = counter_policy();
    let child = spawn(Namespaces::UserMount, |peer| {
        let mount = child_delegated_mount(peer)?;
        sys::mount::move_mount_to(mount.as_fd(), CHILD_MOUNT_POINT).context("move_mount")?;
        peer.send_fds("mounted", "", &[mount.as_fd()])?;
        peer.recv("reconfigured")?;
        let token = token_from_mount(mount.as_fd()).context("token after reconfigure")?;
        peer.send(
            "allowed",
            &harness::masks_text(&token.allowed().context("allowed")?),
        )?;
        // The child's own try: fspick is allowed (CAP_SYS_ADMIN over its own mount namespace),
        // setting a non-zero delegate_* is not (bpf_parse_param: capable(CAP_SYS_ADMIN)).
        let own = sys::mount::fspick(mount.as_fd()).and_then(|fs| {
            sys::mount::fsconfig_set_string(fs.as_fd(), c"delegate_maps", c"hash")?;
            sys::mount::fsconfig_reconfigure(fs.as_fd())
        });
        peer.report("child-reconfigure", &own.map_err(Refusal::sys))
    })?;
    parent_delegate(&child, &[policy])?;
    let mount = child.peer.recv_fd("mounted")?;
    let before = child_mounted_delegation(&child)?;
    let fs = sys::mount::fspick(mount.as_fd()).context("parent fspick")?;
    sys::mount::fsconfig_set_string(fs.as_fd(), c"delegate_maps", c"hash")
        .context("parent delegate_maps=hash")?;
    sys::mount::fsconfig_reconfigure(fs.as_fd()).context("parent FSCONFIG_CMD_RECONFIGURE")?;
    let after = child_mounted_delegation(&child)?;
    let expected: Vec<(DelegateKind, String)> = [
        (DelegateKind::Cmds, "map_create:prog_load:btf_load"),
        (DelegateKind::Maps, "array"),
        (DelegateKind::Progs, "xdp"),
        (DelegateKind::Attachs, "xdp"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect();
    if before != expected || after != expected {
        return Err(
            format!("mountinfo before {before:?}, after {after:?}, expected {expected:?}").into(),
        );
    }
    child.peer.send("reconfigured", "")?;
    let allowed = child.peer.recv("allowed")?;
    if allowed != harness::masks_text(&policy) {
        return Err(format!(
            "token after reconfigure: {allowed}, expected {}",
            harness::masks_text(&policy)
        )
        .into());
    }
    // The EPERM is the child's fsconfig(FSCONFIG_SET_STRING, "delegate_maps", "hash"); its
    // fspick succeeded.
    child.peer.recv_refusal("child-reconfigure")?.expect(
        "fsconfig(FSCONFIG_SET_STRING)",
        Errno::EPERM,
        None,
    )?;
    child.finish()
}

/// `fsopen` needs CAP_SYS_ADMIN over the caller's mount namespace (`SYSCALL_DEFINE2(fsopen)` in
/// fs/fsopen.c: `ns_capable(current->nsproxy->mnt_ns->user_ns, CAP_SYS_ADMIN)`); a user
/// namespace that kept the host's mount namespace has none there.
pub fn who_fsopen_without_mount_namespace_is_eperm() -> Result<(), Failed> {
    let child = spawn(Namespaces::User, |peer| {
        peer.report(
            "fsopen",
            &bpffs::open_context().map_err(|e| Refusal::bpffs(&e)),
        )
    })?;
    child.peer.recv_refusal("fsopen")?.expect(
        "BpffsError::Open",
        Errno::EPERM,
        Some(Cause::FsopenNeedsMountNamespace),
    )?;
    child.finish()
}

/// `fsmount` needs CAP_SYS_ADMIN over the caller's mount namespace (`may_mount()` in
/// `SYSCALL_DEFINE3(fsmount)`, fs/namespace.c): a child that dropped its capabilities cannot mount
/// the bpffs the parent created for it.
pub fn who_fsmount_without_cap_sys_admin_is_eperm() -> Result<(), Failed> {
    let child = spawn(Namespaces::UserMount, |peer| {
        let contexts = harness::child_open_contexts(peer, 1)?;
        peer.recv("created")?;
        caps::clear(None, caps::CapSet::Effective)
            .context("clearing the effective capabilities")?;
        peer.report(
            "fsmount",
            &bpffs::mount(contexts[0].as_fd()).map_err(|e| Refusal::bpffs(&e)),
        )
    })?;
    parent_delegate(&child, &[counter_policy()])?;
    child.peer.recv_refusal("fsmount")?.expect(
        "BpffsError::Mount",
        Errno::EPERM,
        Some(Cause::FsmountRefused),
    )?;
    child.finish()
}
