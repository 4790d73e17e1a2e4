//! What an eBPF object asks of the kernel, read from its ELF without any system call.
//!
//! The same facts drive two things: the `BPF_PROG_LOAD` attributes the loader sends, and the
//! least-privilege delegation a token needs for that object (a token checks the program type
//! *and* the expected attach type of every load, so both must come from one place).

use aya_obj::generated::{BPF_F_SLEEPABLE, BPF_F_XDP_HAS_FRAGS, bpf_attach_type, bpf_prog_type};
use aya_obj::{Object, ProgramSection};

/// How one program of an object is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramSpec {
    pub prog_type: bpf_prog_type,
    /// `expected_attach_type` as sent to the kernel. Zero is a real value to a token: it is the
    /// bit of `BPF_CGROUP_INET_INGRESS`.
    pub expected_attach_type: u32,
    pub prog_flags: u32,
}

/// Why a program cannot be loaded by this loader.
#[derive(Debug, thiserror::Error)]
#[error(
    "program section kind {section} needs its attach target resolved against kernel BTF, which the token loader does not do yet; load it with aya as root, or use an XDP, tc, socket, cgroup, kprobe or tracepoint program"
)]
pub struct UnsupportedSection {
    pub section: String,
}

/// The load attributes of a program section, following aya's own choices so a program loaded
/// here behaves as under `aya::EbpfLoader`.
pub fn program_spec(section: &ProgramSection) -> Result<ProgramSpec, UnsupportedSection> {
    use bpf_prog_type as P;
    let spec = |prog_type, attach: Option<bpf_attach_type>, prog_flags| ProgramSpec {
        prog_type,
        expected_attach_type: attach.map_or(0, |a| a as u32),
        prog_flags,
    };
    let sleepable = |s: bool| if s { BPF_F_SLEEPABLE } else { 0 };
    Ok(match section {
        ProgramSection::Xdp { frags, attach_type } => spec(
            P::BPF_PROG_TYPE_XDP,
            Some((*attach_type).into()),
            if *frags { BPF_F_XDP_HAS_FRAGS } else { 0 },
        ),
        ProgramSection::SocketFilter => spec(P::BPF_PROG_TYPE_SOCKET_FILTER, None, 0),
        ProgramSection::SchedClassifier => spec(P::BPF_PROG_TYPE_SCHED_CLS, None, 0),
        ProgramSection::KProbe | ProgramSection::KRetProbe => {
            spec(P::BPF_PROG_TYPE_KPROBE, None, 0)
        }
        ProgramSection::UProbe { sleepable: s } | ProgramSection::URetProbe { sleepable: s } => {
            spec(P::BPF_PROG_TYPE_KPROBE, None, sleepable(*s))
        }
        ProgramSection::TracePoint => spec(P::BPF_PROG_TYPE_TRACEPOINT, None, 0),
        ProgramSection::RawTracePoint => spec(P::BPF_PROG_TYPE_RAW_TRACEPOINT, None, 0),
        ProgramSection::PerfEvent => spec(P::BPF_PROG_TYPE_PERF_EVENT, None, 0),
        ProgramSection::SkMsg => spec(
            P::BPF_PROG_TYPE_SK_MSG,
            Some(bpf_attach_type::BPF_SK_MSG_VERDICT),
            0,
        ),
        ProgramSection::SkSkbStream { .. } => spec(P::BPF_PROG_TYPE_SK_SKB, None, 0),
        ProgramSection::SockOps => spec(P::BPF_PROG_TYPE_SOCK_OPS, None, 0),
        ProgramSection::CgroupSkb { attach_type } => {
            spec(P::BPF_PROG_TYPE_CGROUP_SKB, attach_type.map(Into::into), 0)
        }
        ProgramSection::CgroupSockAddr { attach_type } => spec(
            P::BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
            Some((*attach_type).into()),
            0,
        ),
        ProgramSection::CgroupSock { attach_type } => {
            spec(P::BPF_PROG_TYPE_CGROUP_SOCK, Some((*attach_type).into()), 0)
        }
        ProgramSection::CgroupSockopt { attach_type } => spec(
            P::BPF_PROG_TYPE_CGROUP_SOCKOPT,
            Some((*attach_type).into()),
            0,
        ),
        ProgramSection::CgroupSysctl => spec(
            P::BPF_PROG_TYPE_CGROUP_SYSCTL,
            Some(bpf_attach_type::BPF_CGROUP_SYSCTL),
            0,
        ),
        ProgramSection::CgroupDevice => spec(
            P::BPF_PROG_TYPE_CGROUP_DEVICE,
            Some(bpf_attach_type::BPF_CGROUP_DEVICE),
            0,
        ),
        ProgramSection::LircMode2 => spec(
            P::BPF_PROG_TYPE_LIRC_MODE2,
            Some(bpf_attach_type::BPF_LIRC_MODE2),
            0,
        ),
        ProgramSection::SkLookup => spec(
            P::BPF_PROG_TYPE_SK_LOOKUP,
            Some(bpf_attach_type::BPF_SK_LOOKUP),
            0,
        ),
        ProgramSection::SkReuseport { attach_type } => spec(
            P::BPF_PROG_TYPE_SK_REUSEPORT,
            Some((*attach_type).into()),
            0,
        ),
        ProgramSection::FlowDissector => spec(
            P::BPF_PROG_TYPE_FLOW_DISSECTOR,
            Some(bpf_attach_type::BPF_FLOW_DISSECTOR),
            0,
        ),
        other @ (ProgramSection::Lsm { .. }
        | ProgramSection::LsmCgroup
        | ProgramSection::BtfTracePoint
        | ProgramSection::FEntry { .. }
        | ProgramSection::FExit { .. }
        | ProgramSection::Extension
        | ProgramSection::Iter { .. }) => {
            let name = format!("{other:?}");
            let section = name.split([' ', '{']).next().unwrap_or(&name).to_owned();
            return Err(UnsupportedSection { section });
        }
    })
}

/// The kernel objects one eBPF object needs, as raw enum values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectNeeds {
    pub has_maps: bool,
    pub has_btf: bool,
    pub map_types: Vec<u32>,
    pub programs: Vec<(String, ProgramSpec)>,
}

/// Reads what `object` needs: map types, program types and expected attach types.
pub fn object_needs(object: &Object) -> Result<ObjectNeeds, UnsupportedSection> {
    let mut map_types: Vec<u32> = object.maps.values().map(aya_obj::Map::map_type).collect();
    map_types.sort_unstable();
    map_types.dedup();
    let mut programs = object
        .programs
        .iter()
        .map(|(name, program)| Ok((name.clone(), program_spec(&program.section)?)))
        .collect::<Result<Vec<_>, _>>()?;
    programs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(ObjectNeeds {
        has_maps: !object.maps.is_empty(),
        has_btf: object.btf.is_some(),
        map_types,
        programs,
    })
}
