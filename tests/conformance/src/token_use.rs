//! Using a token: `BPF_BTF_LOAD`, `BPF_MAP_CREATE` and `BPF_PROG_LOAD` (kernel/bpf/syscall.c)
//! keep a token only if it covers the call (`bpf_token_allow_cmd`, `bpf_token_allow_map_type`,
//! `bpf_token_allow_prog_type` in kernel/bpf/token.c); otherwise they drop it and check the
//! caller's capabilities in the initial user namespace, which the child lacks: EPERM. A kept
//! token still needs the capability in the token's user namespace (`bpf_token_capable`).

use std::os::fd::{AsFd as _, BorrowedFd};

use aya_obj::generated::{bpf_attach_type, bpf_insn, bpf_map_type, bpf_prog_type};
use bpf_token_launcher::bpf::loader::TokenLoader;
use bpf_token_launcher::counter::{self, COUNTER_OBJECT, COUNTER_PROGRAM};
use bpf_token_launcher::diagnosis::Cause;
use bpf_token_launcher::policy::Delegation;
use bpf_token_launcher::sandbox::net;
use bpf_token_launcher::sys::bpf::{MapCreateAttr, ProgLoadAttr};
use bpf_token_launcher::sys::{self, Errno};
use libtest_mimic::Failed;

use crate::harness::{
    self, Context as _, Namespaces, Refusal, child_delegated_mount, child_delegated_mounts,
    parent_delegate, spawn, token_from_mount,
};
use crate::who::counter_policy;

/// `r0 = 2 (XDP_PASS); exit`.
fn xdp_pass() -> [bpf_insn; 2] {
    let insn = |code, imm| bpf_insn {
        code,
        _bitfield_align_1: [],
        _bitfield_1: bpf_insn::new_bitfield_1(0, 0),
        off: 0,
        imm,
    };
    // BPF_ALU64 | BPF_MOV | BPF_K, then BPF_JMP | BPF_EXIT.
    [insn(0xb7, 2), insn(0x95, 0)]
}

const BPF_XDP: u32 = bpf_attach_type::BPF_XDP as u32;

fn xdp_attr(insns: &[bpf_insn], expected_attach_type: u32) -> ProgLoadAttr<'_> {
    ProgLoadAttr {
        prog_type: bpf_prog_type::BPF_PROG_TYPE_XDP as u32,
        expected_attach_type,
        prog_flags: 0,
        name: b"conformance",
        insns,
        license: c"GPL",
        kern_version: 0,
        btf: None,
        func_info: &[],
        func_info_cnt: 0,
        func_info_rec_size: 0,
        line_info: &[],
        line_info_cnt: 0,
        line_info_rec_size: 0,
        attach_btf_id: None,
    }
}

fn array_attr() -> MapCreateAttr<'static> {
    MapCreateAttr {
        map_type: bpf_map_type::BPF_MAP_TYPE_ARRAY as u32,
        key_size: 4,
        value_size: 8,
        max_entries: 1,
        name: b"conformance",
        ..MapCreateAttr::default()
    }
}

/// Child: loads the counter with a token from `mount` and reports the outcome.
fn report_counter_load(
    peer: &harness::Peer,
    tag: &str,
    mount: BorrowedFd<'_>,
) -> Result<(), String> {
    let token = token_from_mount(mount).context("token")?;
    let outcome = TokenLoader::new(&token)
        .load(COUNTER_OBJECT)
        .map_err(|e| Refusal::load(&e));
    peer.report(tag, &outcome)
}

/// Runs the counter load under each delegation, one bpffs each; returns the child's reports.
fn counter_load_under(delegations: &[Delegation]) -> Result<Vec<Result<(), Refusal>>, Failed> {
    let count = delegations.len();
    let child = spawn(Namespaces::UserMount, move |peer| {
        for (i, mount) in child_delegated_mounts(peer, count)?.iter().enumerate() {
            report_counter_load(peer, &format!("load{i}"), mount.as_fd())?;
        }
        Ok(())
    })?;
    parent_delegate(&child, delegations)?;
    let mut outcomes = Vec::new();
    for i in 0..count {
        outcomes.push(child.peer.recv_outcome(&format!("load{i}"))?);
    }
    child.finish()?;
    Ok(outcomes)
}

/// The map types a token's absence decides: ARRAY is an unprivileged map type, so without the
/// token `map_create` refuses it only through `sysctl_unprivileged_bpf_disabled`.
fn require_unprivileged_bpf_disabled() -> Result<(), Failed> {
    let value =
        std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled").context("sysctl")?;
    if value.trim() == "0" {
        return Err("kernel.unprivileged_bpf_disabled=0: an unprivileged ARRAY map needs no token, so this rule cannot be observed; set it to 2 (the default of CONFIG_BPF_UNPRIV_DEFAULT_OFF)".into());
    }
    Ok(())
}

/// XDP outside `delegate_progs`: `bpf_token_allow_prog_type` fails, the token is dropped, and
/// `bpf_prog_load` refuses a non-socket-filter type without CAP_BPF: EPERM.
pub fn use_prog_type_outside_delegation_is_eperm() -> Result<(), Failed> {
    let policy = Delegation {
        progs: harness::delegation("", "", "socket_filter", "").progs,
        ..counter_policy()
    };
    let refusal = one_refusal(counter_load_under(&[policy])?)?;
    refusal.expect(
        "LoadError::ProgLoad",
        Errno::EPERM,
        Some(Cause::TokenMissingDelegation),
    )?;
    refusal.expect_detail("delegate_progs lacks `xdp`")
}

/// ARRAY outside `delegate_maps`: `bpf_token_allow_map_type` fails, the token is dropped, and
/// `map_create` refuses with `sysctl_unprivileged_bpf_disabled` and no CAP_BPF: EPERM.
pub fn use_map_type_outside_delegation_is_eperm() -> Result<(), Failed> {
    require_unprivileged_bpf_disabled()?;
    let policy = Delegation {
        maps: harness::delegation("", "hash", "", "").maps,
        ..counter_policy()
    };
    let refusal = one_refusal(counter_load_under(&[policy])?)?;
    refusal.expect(
        "LoadError::MapCreate",
        Errno::EPERM,
        Some(Cause::TokenMissingDelegation),
    )?;
    refusal.expect_detail("delegate_maps lacks `array`")
}

/// A command outside `delegate_cmds`: `bpf_token_allow_cmd` fails, the token is dropped.
/// Without `btf_load`, `bpf_btf_load` needs CAP_BPF in the initial namespace; without
/// `map_create`, `map_create` falls to the unprivileged_bpf_disabled check. Both EPERM.
pub fn use_command_outside_delegation_is_eperm() -> Result<(), Failed> {
    require_unprivileged_bpf_disabled()?;
    let no_btf = Delegation {
        cmds: harness::delegation("map_create:prog_load", "", "", "").cmds,
        ..counter_policy()
    };
    let no_map_create = Delegation {
        cmds: harness::delegation("prog_load:btf_load", "", "", "").cmds,
        ..counter_policy()
    };
    let mut outcomes = counter_load_under(&[no_btf, no_map_create])?.into_iter();
    let btf = one_refusal(outcomes.next().into_iter().collect())?;
    btf.expect(
        "LoadError::Btf",
        Errno::EPERM,
        Some(Cause::TokenMissingDelegation),
    )?;
    btf.expect_detail("delegate_cmds lacks `btf_load`")?;
    let map = one_refusal(outcomes.collect())?;
    map.expect(
        "LoadError::MapCreate",
        Errno::EPERM,
        Some(Cause::TokenMissingDelegation),
    )?;
    map.expect_detail("delegate_cmds lacks `map_create`")
}

/// `bpf_token_allow_prog_type` also checks the expected attach type: XDP loaded with attach type
/// 0 needs bit 0 of `delegate_attachs`, which is `cgroup_inet_ingress`.
pub fn use_attach_type_zero_needs_cgroup_inet_ingress() -> Result<(), Failed> {
    let attachs_xdp = harness::delegation("prog_load", "", "xdp", "xdp");
    let attachs_zero = harness::delegation("prog_load", "", "xdp", "cgroup_inet_ingress");
    let child = spawn(Namespaces::UserMount, |peer| {
        let mounts = child_delegated_mounts(peer, 2)?;
        let insns = xdp_pass();
        for (name, mount, attach) in [
            ("xdp-policy-attach-xdp", &mounts[0], BPF_XDP),
            ("xdp-policy-attach-0", &mounts[0], 0),
            ("zero-policy-attach-0", &mounts[1], 0),
        ] {
            let token = token_from_mount(mount.as_fd()).context("token")?;
            let outcome = sys::bpf::prog_load(&xdp_attr(&insns, attach), Some(token.as_fd()), None);
            peer.report(name, &outcome.map_err(Refusal::sys))?;
        }
        Ok(())
    })?;
    parent_delegate(&child, &[attachs_xdp, attachs_zero])?;
    child.peer.recv_ok("xdp-policy-attach-xdp")?;
    child.peer.recv_refusal("xdp-policy-attach-0")?.expect(
        "bpf(BPF_PROG_LOAD)",
        Errno::EPERM,
        None,
    )?;
    child.peer.recv_ok("zero-policy-attach-0")?;
    child.finish()
}

/// The token counts only with `BPF_F_TOKEN_FD` in the flags: without it `map_create` and
/// `bpf_prog_load` never look at `*_token_fd`, so the call is the child's own: EPERM.
pub fn use_token_fd_without_flag_is_ignored() -> Result<(), Failed> {
    require_unprivileged_bpf_disabled()?;
    let child = spawn(Namespaces::UserMount, |peer| {
        let mount = child_delegated_mount(peer)?;
        let token = token_from_mount(mount.as_fd()).context("token")?;
        let insns = xdp_pass();
        for flag in [true, false] {
            let map = sys::bpf::map_create_with_token_fd(&array_attr(), token.as_fd(), flag);
            peer.report(&format!("map flag={flag}"), &map.map_err(Refusal::sys))?;
            let prog =
                sys::bpf::prog_load_with_token_fd(&xdp_attr(&insns, BPF_XDP), token.as_fd(), flag);
            peer.report(&format!("prog flag={flag}"), &prog.map_err(Refusal::sys))?;
        }
        Ok(())
    })?;
    parent_delegate(&child, &[counter_policy()])?;
    child.peer.recv_ok("map flag=true")?;
    child.peer.recv_ok("prog flag=true")?;
    child
        .peer
        .recv_refusal("map flag=false")?
        .expect("bpf(BPF_MAP_CREATE)", Errno::EPERM, None)?;
    child
        .peer
        .recv_refusal("prog flag=false")?
        .expect("bpf(BPF_PROG_LOAD)", Errno::EPERM, None)?;
    child.finish()
}

/// `BPF_F_TOKEN_FD` with a descriptor that is not a token: `bpf_token_get_from_fd` finds another
/// `f_op` and returns EINVAL, before any capability check (so host root gets it too).
pub fn use_non_token_fd_with_flag_is_einval() -> Result<(), Failed> {
    let dev_null = std::fs::File::open("/dev/null").context("/dev/null")?;
    let map = sys::bpf::map_create(&array_attr(), None).context("host root's own array map")?;
    let insns = xdp_pass();
    for (what, fd) in [("/dev/null", dev_null.as_fd()), ("a map fd", map.as_fd())] {
        let refusal = sys::bpf::map_create_with_token_fd(&array_attr(), fd, true)
            .err()
            .ok_or_else(|| format!("BPF_MAP_CREATE accepted {what} as a token"))?;
        Refusal::sys(refusal).expect("bpf(BPF_MAP_CREATE)", Errno::EINVAL, None)?;
        let refusal = sys::bpf::prog_load_with_token_fd(&xdp_attr(&insns, BPF_XDP), fd, true)
            .err()
            .ok_or_else(|| format!("BPF_PROG_LOAD accepted {what} as a token"))?;
        Refusal::sys(refusal).expect("bpf(BPF_PROG_LOAD)", Errno::EINVAL, None)?;
    }
    Ok(())
}

/// A token the child holds but no capability: the token covers the call, so it is kept, and
/// `bpf_token_capable` wants CAP_BPF in the token's user namespace (`bpf_btf_load`): EPERM.
pub fn use_after_dropping_capabilities_is_eperm() -> Result<(), Failed> {
    let child = spawn(Namespaces::UserMount, |peer| {
        let mount = child_delegated_mount(peer)?;
        let token = token_from_mount(mount.as_fd()).context("token")?;
        caps::clear(None, caps::CapSet::Effective)
            .context("clearing the effective capabilities")?;
        let outcome = TokenLoader::new(&token)
            .load(COUNTER_OBJECT)
            .map_err(|e| Refusal::load(&e));
        peer.report("load", &outcome)
    })?;
    parent_delegate(&child, &[counter_policy()])?;
    child.peer.recv_refusal("load")?.expect(
        "LoadError::Btf",
        Errno::EPERM,
        Some(Cause::TokenCallerLacksCapability),
    )?;
    child.finish()
}

/// A sibling user namespace holding the token: the token is kept, but `bpf_token_capable` asks
/// `ns_capable(token->userns, CAP_BPF)`, and the sibling has no capability in the first child's
/// namespace (it is neither that namespace nor an ancestor): EPERM.
pub fn use_from_sibling_user_namespace_is_eperm() -> Result<(), Failed> {
    let owner = spawn(Namespaces::UserMount, |peer| {
        let mount = child_delegated_mount(peer)?;
        let token = token_from_mount(mount.as_fd()).context("token")?;
        let insns = xdp_pass();
        let own = sys::bpf::prog_load(&xdp_attr(&insns, BPF_XDP), Some(token.as_fd()), None);
        peer.report("owner-load", &own.map_err(Refusal::sys))?;
        peer.send_fds("token", "", &[token.as_fd()])?;
        peer.recv("done")?;
        Ok(())
    })?;
    parent_delegate(&owner, &[counter_policy()])?;
    owner.peer.recv_ok("owner-load")?;
    let token = owner.peer.recv_fd("token")?;
    let sibling = spawn(Namespaces::UserMount, |peer| {
        let token = peer.recv_fd("token")?;
        let insns = xdp_pass();
        let outcome = sys::bpf::prog_load(&xdp_attr(&insns, BPF_XDP), Some(token.as_fd()), None);
        peer.report("sibling-load", &outcome.map_err(Refusal::sys))
    })?;
    sibling.peer.send_fds("token", "", &[token.as_fd()])?;
    sibling
        .peer
        .recv_refusal("sibling-load")?
        .expect("bpf(BPF_PROG_LOAD)", Errno::EPERM, None)?;
    sibling.finish()?;
    owner.peer.send("done", "")?;
    owner.finish()
}

/// No token at all inside a user namespace: `bpf_btf_load` checks CAP_BPF in the initial
/// namespace (`bpf_token_capable(NULL, ...)`): EPERM.
pub fn use_without_token_in_user_namespace_is_eperm() -> Result<(), Failed> {
    let child = spawn(Namespaces::UserMount, |peer| {
        let outcome = TokenLoader::without_token()
            .load(COUNTER_OBJECT)
            .map_err(|e| Refusal::load(&e));
        peer.report("load", &outcome)
    })?;
    child.peer.recv_refusal("load")?.expect(
        "LoadError::Btf",
        Errno::EPERM,
        Some(Cause::LoadWithoutToken),
    )?;
    child.finish()
}

/// XDP links take no token, and one interface holds one XDP link: the second `BPF_LINK_CREATE`
/// on the child's `lo` is EBUSY (`dev_xdp_attach` in net/core/dev.c: "Can't replace active BPF
/// XDP link").
pub fn use_second_xdp_link_on_lo_is_ebusy() -> Result<(), Failed> {
    let child = spawn(Namespaces::UserMountNet, |peer| {
        let mount = child_delegated_mount(peer)?;
        let token = token_from_mount(mount.as_fd()).context("token")?;
        let loaded = TokenLoader::new(&token)
            .load(COUNTER_OBJECT)
            .context("load")?;
        let program = loaded.program(COUNTER_PROGRAM).ok_or("no xdp_counter")?;
        let lo = net::interface_index("lo").context("lo")?;
        let first = counter::attach_xdp(program.fd(), lo, "lo").context("first attach")?;
        let second = counter::attach_xdp(program.fd(), lo, "lo").map_err(|e| match &e {
            counter::TraceError::Attach { source, .. } => {
                Refusal::diagnosed("TraceError::Attach", source, &e)
            }
            other => Refusal {
                error: "TraceError (other)".to_owned(),
                errno: Errno::UnknownErrno,
                cause: None,
                detail: None,
                message: other.to_string(),
            },
        });
        peer.report("second", &second)?;
        drop(first);
        Ok(())
    })?;
    parent_delegate(&child, &[counter_policy()])?;
    child.peer.recv_refusal("second")?.expect(
        "TraceError::Attach",
        Errno::EBUSY,
        Some(Cause::XdpAlreadyAttached),
    )?;
    child.finish()
}

fn one_refusal(outcomes: Vec<Result<(), Refusal>>) -> Result<Refusal, Failed> {
    match outcomes.as_slice() {
        [Err(refusal)] => Ok(refusal.clone()),
        [Ok(())] => Err("the load succeeded, but the kernel should refuse it".into()),
        _ => Err(format!("expected one outcome, got {}", outcomes.len()).into()),
    }
}
