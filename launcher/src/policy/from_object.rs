//! Least privilege: the exact delegation an eBPF object needs to be loaded by
//! [`crate::bpf::loader::TokenLoader`], computed from the object itself.
//!
//! A token is checked on every call that takes one (`bpf_token_allow_cmd`,
//! `bpf_token_allow_map_type`, `bpf_token_allow_prog_type` in `kernel/bpf/token.c`):
//! the command, then the map type of each `BPF_MAP_CREATE`, then the program type *and*
//! expected attach type of each `BPF_PROG_LOAD`. So the policy is: `btf_load` when the object
//! carries BTF, `map_create` and the map types when it has maps, `prog_load`, the program types
//! and the expected attach types (zero, `cgroup_inet_ingress`, for programs that have none)
//! when it has programs. Nothing else takes a token, so nothing else is delegated.

use aya_obj::Object;
use aya_obj::generated::bpf_cmd;

use super::{Delegation, Mask};
use crate::bpf::object::{ObjectNeeds, UnsupportedSection, object_needs};

/// The delegation `needs` calls for, and nothing more.
pub fn least_privilege(needs: &ObjectNeeds) -> Delegation {
    let mut delegation = Delegation::default();
    if needs.has_btf {
        delegation.cmds = delegation.cmds.with(bpf_cmd::BPF_BTF_LOAD as u32);
    }
    if needs.has_maps {
        delegation.cmds = delegation.cmds.with(bpf_cmd::BPF_MAP_CREATE as u32);
    }
    if !needs.programs.is_empty() {
        delegation.cmds = delegation.cmds.with(bpf_cmd::BPF_PROG_LOAD as u32);
    }
    delegation.maps = needs.map_types.iter().fold(Mask::NONE, |m, t| m.with(*t));
    for (_, spec) in &needs.programs {
        delegation.progs = delegation.progs.with(spec.prog_type as u32);
        delegation.attachs = delegation.attachs.with(spec.expected_attach_type);
    }
    delegation
}

/// The least-privilege delegation of an ELF eBPF object.
pub fn least_privilege_for_elf(elf: &[u8]) -> Result<Delegation, ObjectPolicyError> {
    let object = Object::parse(elf).map_err(ObjectPolicyError::Parse)?;
    Ok(least_privilege(&object_needs(&object)?))
}

/// Why no policy could be computed for an object.
#[derive(Debug, thiserror::Error)]
pub enum ObjectPolicyError {
    #[error("not a loadable eBPF object: {0}")]
    Parse(aya_obj::ParseError),
    #[error(transparent)]
    Unsupported(#[from] UnsupportedSection),
}
