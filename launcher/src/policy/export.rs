//! A delegation in the words of the other tools that mount a delegated bpffs, so a policy
//! learnt here can be used there:
//!
//! - systemd (v258+), unit file: `PrivateBPF=yes` and `BPFDelegateCommands=`,
//!   `BPFDelegateMaps=`, `BPFDelegatePrograms=`, `BPFDelegateAttachments=`, each a
//!   comma-separated list of the kernel's enum constants in systemd's spelling: the constant's
//!   words after the first capitalised and joined (`BPF_MAP_TYPE_ARRAY` is
//!   `BPFMapTypeArray`, `BPF_CGROUP_INET_INGRESS` is `BPFCgroupInetIngress`), as systemd's
//!   build generates its tables from `bpf.h`;
//! - LXD: `security.delegate_bpf=true` and `security.delegate_bpf.cmd_types`, `.map_types`,
//!   `.prog_types`, `.attach_types`, whose values go to the kernel as they are
//!   (`:`-separated names);
//! - Incus: `security.bpffs.delegate_cmds`, `_maps`, `_progs`, `_attachs`, comma-separated
//!   names (Incus joins them with `:` for the kernel).
//!
//! An empty set is left out: each tool then delegates nothing of that kind. `any` stays `any`
//! for LXD and Incus (the kernel takes it); for systemd, whose tables hold names only, it is
//! every name the running kernel knows.

use super::{DelegateKind, Delegation, EnumNames};

/// The systemd unit-file lines.
pub fn systemd(delegation: &Delegation, names: &EnumNames) -> Vec<String> {
    let mut lines = vec!["PrivateBPF=yes".to_owned()];
    for kind in DelegateKind::ALL {
        let values = if delegation.get(kind).is_any() {
            let every = Delegation {
                cmds: names.known_mask(DelegateKind::Cmds),
                maps: names.known_mask(DelegateKind::Maps),
                progs: names.known_mask(DelegateKind::Progs),
                attachs: names.known_mask(DelegateKind::Attachs),
            };
            list(&every, kind, names, |name| systemd_name(kind, name))
        } else {
            list(delegation, kind, names, |name| systemd_name(kind, name))
        };
        if !values.is_empty() {
            lines.push(format!("{}={}", systemd_key(kind), values.join(",")));
        }
    }
    lines
}

/// The LXD instance options (`lxc config set INSTANCE KEY=VALUE`).
pub fn lxd(delegation: &Delegation, names: &EnumNames) -> Vec<String> {
    let mut lines = vec!["security.delegate_bpf=true".to_owned()];
    for kind in DelegateKind::ALL {
        let values = list(delegation, kind, names, str::to_owned);
        if !values.is_empty() {
            lines.push(format!(
                "security.delegate_bpf.{}={}",
                lxd_key(kind),
                values.join(":")
            ));
        }
    }
    lines
}

/// The Incus instance options (`incus config set INSTANCE KEY=VALUE`).
pub fn incus(delegation: &Delegation, names: &EnumNames) -> Vec<String> {
    DelegateKind::ALL
        .into_iter()
        .filter_map(|kind| {
            let values = list(delegation, kind, names, str::to_owned);
            (!values.is_empty())
                .then(|| format!("security.bpffs.{}={}", kind.option(), values.join(",")))
        })
        .collect()
}

pub(super) const fn systemd_key(kind: DelegateKind) -> &'static str {
    match kind {
        DelegateKind::Cmds => "BPFDelegateCommands",
        DelegateKind::Maps => "BPFDelegateMaps",
        DelegateKind::Progs => "BPFDelegatePrograms",
        DelegateKind::Attachs => "BPFDelegateAttachments",
    }
}

const fn lxd_key(kind: DelegateKind) -> &'static str {
    match kind {
        DelegateKind::Cmds => "cmd_types",
        DelegateKind::Maps => "map_types",
        DelegateKind::Progs => "prog_types",
        DelegateKind::Attachs => "attach_types",
    }
}

/// The set's values, each named and spelt by `spell`; `any` stays `any` (every tool takes
/// it); a value without a name is left as its number, which no tool takes: the caller's
/// policy came from this kernel's names, so that never happens for a learnt one.
fn list(
    delegation: &Delegation,
    kind: DelegateKind,
    names: &EnumNames,
    spell: impl Fn(&str) -> String,
) -> Vec<String> {
    let mask = delegation.get(kind);
    if mask.is_any() {
        return vec!["any".to_owned()];
    }
    mask.values()
        .map(|value| {
            names
                .name_of(kind, value)
                .map_or_else(|| value.to_string(), &spell)
        })
        .collect()
}

/// `xdp` as a program type → `BPF_PROG_TYPE_XDP` → `BPFProgTypeXdp`.
pub(super) fn systemd_name(kind: DelegateKind, name: &str) -> String {
    let constant = format!("{}{}", kind.kernel_prefix(), name.to_ascii_uppercase());
    let mut words = constant.split('_');
    let mut spelt = words.next().unwrap_or_default().to_owned();
    for word in words {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            spelt.push(first.to_ascii_uppercase());
            spelt.extend(chars.map(|c| c.to_ascii_lowercase()));
        }
    }
    spelt
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delegation(cmds: &str, maps: &str, progs: &str, attachs: &str) -> Delegation {
        let names = EnumNames::builtin();
        Delegation {
            cmds: names.parse(DelegateKind::Cmds, cmds).unwrap(),
            maps: names.parse(DelegateKind::Maps, maps).unwrap(),
            progs: names.parse(DelegateKind::Progs, progs).unwrap(),
            attachs: names.parse(DelegateKind::Attachs, attachs).unwrap(),
        }
    }

    #[test]
    fn systemd_spells_the_constants_as_its_generated_tables() {
        // The pairs systemd's own test checks against the mount options it produces.
        let names = EnumNames::builtin();
        let d = delegation(
            "obj_pin:btf_load:map_freeze:link_detach",
            "array:cpumap:ringbuf",
            "tracepoint:xdp:tracing",
            "flow_dissector:cgroup_sysctl:netfilter",
        );
        assert_eq!(
            systemd(&d, &names),
            [
                "PrivateBPF=yes",
                "BPFDelegateCommands=BPFObjPin,BPFBtfLoad,BPFMapFreeze,BPFLinkDetach",
                "BPFDelegateMaps=BPFMapTypeArray,BPFMapTypeCpumap,BPFMapTypeRingbuf",
                "BPFDelegatePrograms=BPFProgTypeTracepoint,BPFProgTypeXdp,BPFProgTypeTracing",
                "BPFDelegateAttachments=BPFFlowDissector,BPFCgroupSysctl,BPFNetfilter",
            ]
        );
        assert_eq!(
            systemd_name(DelegateKind::Attachs, "cgroup_inet4_bind"),
            "BPFCgroupInet4Bind"
        );
        assert_eq!(
            systemd_name(DelegateKind::Progs, "lwt_seg6local"),
            "BPFProgTypeLwtSeg6local"
        );
    }

    #[test]
    fn lxd_takes_the_kernel_syntax_and_incus_commas() {
        let names = EnumNames::builtin();
        let d = delegation(
            "map_create:prog_load:btf_load",
            "array:devmap",
            "xdp:socket_filter",
            "cgroup_inet_ingress:xdp",
        );
        assert_eq!(
            lxd(&d, &names),
            [
                "security.delegate_bpf=true",
                "security.delegate_bpf.cmd_types=map_create:prog_load:btf_load",
                "security.delegate_bpf.map_types=array:devmap",
                "security.delegate_bpf.prog_types=socket_filter:xdp",
                "security.delegate_bpf.attach_types=cgroup_inet_ingress:xdp",
            ]
        );
        assert_eq!(
            incus(&d, &names),
            [
                "security.bpffs.delegate_cmds=map_create,prog_load,btf_load",
                "security.bpffs.delegate_maps=array,devmap",
                "security.bpffs.delegate_progs=socket_filter,xdp",
                "security.bpffs.delegate_attachs=cgroup_inet_ingress,xdp",
            ]
        );
    }

    #[test]
    fn empty_sets_are_left_out_and_any_stays_any() {
        let names = EnumNames::builtin();
        let d = delegation("prog_load", "none", "any", "none");
        let lines = systemd(&d, &names);
        assert_eq!(
            lines[..2],
            ["PrivateBPF=yes", "BPFDelegateCommands=BPFProgLoad"]
        );
        assert!(
            lines[2].starts_with("BPFDelegatePrograms=BPFProgTypeUnspec,BPFProgTypeSocketFilter,")
                && lines[2].contains(",BPFProgTypeXdp,"),
            "{lines:?}"
        );
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lxd(&d, &names),
            [
                "security.delegate_bpf=true",
                "security.delegate_bpf.cmd_types=prog_load",
                "security.delegate_bpf.prog_types=any"
            ]
        );
        assert_eq!(
            incus(&d, &names),
            [
                "security.bpffs.delegate_cmds=prog_load",
                "security.bpffs.delegate_progs=any"
            ]
        );
    }
}
