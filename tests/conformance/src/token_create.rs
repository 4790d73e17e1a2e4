//! `BPF_TOKEN_CREATE`: each refusal of `bpf_token_create` (kernel/bpf/token.c), in the order the
//! kernel checks: the root of a bpffs, the caller's user namespace, CAP_BPF there, not the initial
//! namespace, some delegation.

use std::os::fd::AsFd as _;
use std::path::Path;

use bpf_token_launcher::bpf::bpffs;
use bpf_token_launcher::bpf::token::Token;
use bpf_token_launcher::diagnosis::Cause;
use bpf_token_launcher::policy::Delegation;
use bpf_token_launcher::sys::{self, Errno};
use libtest_mimic::Failed;

use crate::harness::{
    Context as _, Namespaces, Refusal, child_delegated_mount, parent_delegate, spawn,
    token_from_mount,
};
use crate::who::counter_policy;

/// `fsmount` returns an `O_PATH` descriptor, and `fdget` (used by `bpf_token_create`) treats
/// `O_PATH` files as no file at all: EBADF. The product opens `/proc/self/fd/N` instead.
pub fn token_create_from_o_path_fd_is_ebadf() -> Result<(), Failed> {
    let child = spawn(Namespaces::UserMount, |peer| {
        let mount = child_delegated_mount(peer)?;
        let outcome = Token::from_bpffs(mount.as_fd(), Path::new("the fsmount descriptor"));
        peer.report("o-path", &outcome.map_err(|e| Refusal::token(&e)))?;
        peer.report("reopened", &token_from_mount(mount.as_fd()))
    })?;
    parent_delegate(&child, &[counter_policy()])?;
    child.peer.recv_refusal("o-path")?.expect(
        "TokenError::Create",
        Errno::EBADF,
        Some(Cause::TokenPathDescriptor),
    )?;
    child.peer.recv_ok("reopened")?;
    child.finish()
}

/// All four masks zero: `bpf_token_create` returns ENOENT ("no BPF token delegation is set up").
pub fn token_create_without_delegation_is_enoent() -> Result<(), Failed> {
    let child = spawn(Namespaces::UserMount, |peer| {
        let mount = child_delegated_mount(peer)?;
        peer.report("token", &token_from_mount(mount.as_fd()))
    })?;
    parent_delegate(&child, &[Delegation::default()])?;
    child.peer.recv_refusal("token")?.expect(
        "TokenError::Create",
        Errno::ENOENT,
        Some(Cause::TokenNoDelegation),
    )?;
    child.finish()
}

/// A directory inside the bpffs: `path.dentry != path.mnt->mnt_sb->s_root` is EINVAL.
pub fn token_create_from_subdirectory_is_einval() -> Result<(), Failed> {
    let child = spawn(Namespaces::UserMount, |peer| {
        let mount = child_delegated_mount(peer)?;
        nix::sys::stat::mkdirat(
            mount.as_fd(),
            "sub",
            nix::sys::stat::Mode::from_bits_truncate(0o700),
        )
        .context("mkdirat(sub)")?;
        let sub = nix::fcntl::openat(
            mount.as_fd(),
            "sub",
            nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .context("openat(sub)")?;
        peer.report("token", &token_from_mount(sub.as_fd()))
    })?;
    parent_delegate(&child, &[counter_policy()])?;
    child.peer.recv_refusal("token")?.expect(
        "TokenError::Create",
        Errno::EINVAL,
        Some(Cause::TokenNotBpffsRoot),
    )?;
    child.finish()
}

/// `/` is the root of its filesystem but not a bpffs: `s_op != &bpf_super_ops` is EINVAL.
pub fn token_create_from_non_bpffs_is_einval() -> Result<(), Failed> {
    let child = spawn(Namespaces::UserMount, |peer| {
        let outcome = Token::from_bpffs_path(Path::new("/")).map_err(|e| Refusal::token(&e));
        peer.report("token", &outcome)
    })?;
    child.peer.recv_refusal("token")?.expect(
        "TokenError::Create",
        Errno::EINVAL,
        Some(Cause::TokenNotBpffs),
    )?;
    child.finish()
}

/// `token_create` in kernel/bpf/syscall.c: "no flags are supported yet", non-zero is EINVAL,
/// before `bpf_token_create` looks at the descriptor.
pub fn token_create_with_flags_is_einval() -> Result<(), Failed> {
    let child = spawn(Namespaces::UserMount, |peer| {
        let mount = child_delegated_mount(peer)?;
        peer.report("flags=0", &token_from_mount(mount.as_fd()))?;
        let outcome = sys::bpf::token_create(mount.as_fd(), 1).map_err(Refusal::sys);
        peer.report("flags=1", &outcome)
    })?;
    parent_delegate(&child, &[counter_policy()])?;
    child.peer.recv_ok("flags=0")?;
    child
        .peer
        .recv_refusal("flags=1")?
        .expect("bpf(BPF_TOKEN_CREATE)", Errno::EINVAL, None)?;
    child.finish()
}

/// A bpffs created by host root belongs to the initial user namespace: "Creating BPF token in
/// init_user_ns doesn't make much sense", EOPNOTSUPP (after the namespace and CAP_BPF checks,
/// which host root passes). The mount is detached: nothing enters the host's mount table.
pub fn token_create_in_initial_namespace_is_eopnotsupp() -> Result<(), Failed> {
    let context = bpffs::open_context().context("host fsopen")?;
    bpffs::delegate_and_create(context.as_fd(), &counter_policy())
        .context("host delegate_and_create")?;
    let mount = bpffs::mount(context.as_fd()).context("host fsmount")?;
    let refusal = token_from_mount(mount.as_fd())
        .err()
        .ok_or("host root got a token from a host bpffs")?;
    refusal.expect(
        "TokenError::Create",
        Errno::EOPNOTSUPP,
        Some(Cause::TokenInitialNamespace),
    )
}

/// The parent (host root) using the child's bpffs: `current_user_ns() != userns` is EPERM. That
/// check comes before the init_user_ns one, so the parent gets EPERM, not EOPNOTSUPP.
pub fn token_create_from_other_namespace_is_eperm() -> Result<(), Failed> {
    let child = spawn(Namespaces::UserMount, |peer| {
        let mount = child_delegated_mount(peer)?;
        peer.report("child-token", &token_from_mount(mount.as_fd()))?;
        peer.send_fds("mount", "", &[mount.as_fd()])?;
        peer.recv("done")?;
        Ok(())
    })?;
    parent_delegate(&child, &[counter_policy()])?;
    child.peer.recv_ok("child-token")?;
    let mount = child.peer.recv_fd("mount")?;
    let refusal = token_from_mount(mount.as_fd())
        .err()
        .ok_or("the parent got a token from the child's bpffs")?;
    refusal.expect(
        "TokenError::Create",
        Errno::EPERM,
        Some(Cause::TokenOtherNamespace),
    )?;
    child.peer.send("done", "")?;
    child.finish()
}

/// The child without CAP_BPF in its own user namespace: `!ns_capable(userns, CAP_BPF)` is EPERM
/// (the same errno and diagnosis as the other-namespace case).
pub fn token_create_without_cap_bpf_is_eperm() -> Result<(), Failed> {
    let child = spawn(Namespaces::UserMount, |peer| {
        let mount = child_delegated_mount(peer)?;
        caps::clear(None, caps::CapSet::Effective)
            .context("clearing the effective capabilities")?;
        peer.report("token", &token_from_mount(mount.as_fd()))
    })?;
    parent_delegate(&child, &[counter_policy()])?;
    child.peer.recv_refusal("token")?.expect(
        "TokenError::Create",
        Errno::EPERM,
        Some(Cause::TokenOtherNamespace),
    )?;
    child.finish()
}
