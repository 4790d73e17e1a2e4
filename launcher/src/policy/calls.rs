//! What one `bpf()` call asks of a delegation, read from the caller's `union bpf_attr`: the
//! decoding the gateway ([`crate::sandbox::gateway`]) applies to every `BPF_MAP_CREATE`, `BPF_PROG_LOAD`
//! and `BPF_BTF_LOAD` of the sandbox, and the explanations of the calls a delegation does not
//! cover. Pure logic on bytes, so it is shared by everything that reasons about calls (the
//! gateway's explanations, a learning run, reports) and tested without a kernel.
//!
//! The kernel's rules this follows (Linux 6.18, `kernel/bpf/syscall.c` and `token.c`):
//! - the kernel copies `min(size, sizeof(union bpf_attr))` bytes of the caller's attr and reads
//!   every field beyond them as zero, so a field the caller's size does not reach is 0 here too,
//!   and a token field it does not reach cannot carry a token at all;
//! - a token is used only with `BPF_F_TOKEN_FD` in the command's flags field, and only when it
//!   allows the command and (`MAP_CREATE`) the map type or (`PROG_LOAD`) both the program type
//!   and the expected attach type; otherwise the kernel silently drops it and checks the
//!   caller's capabilities in the initial user namespace, which a sandbox never has (EPERM);
//! - `bpf_prog_load_fixup_attach_type` runs before the token check: a `cgroup_sock` program
//!   without an expected attach type is checked as `cgroup_inet_sock_create`, an
//!   `sk_reuseport` one as `sk_reuseport_select`; every other program type without one is
//!   checked against attach type 0, `cgroup_inet_ingress`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use super::risk::{CapsKept, PERFMON_FLAG, PERFMON_PROG_TYPES};
use super::{DelegateKind, Delegation, EnumNames};

/// `BPF_F_TOKEN_FD`: the command's flags say its token field holds a token.
pub const BPF_F_TOKEN_FD: u32 = 1 << 16;

/// `sizeof(union bpf_attr)` in the 6.18 UAPI.
pub const ATTR_SIZE: usize = 168;

/// `bpf_prog_type` and `bpf_attach_type` values the kernel's attach-type fixup uses.
const PROG_TYPE_CGROUP_SOCK: u32 = 9;
const PROG_TYPE_SK_REUSEPORT: u32 = 21;
const ATTACH_CGROUP_INET_SOCK_CREATE: u32 = 2;
const ATTACH_SK_REUSEPORT_SELECT: u32 = 39;

/// The commands that take a token (`BPF_BTF_GET_FD_BY_ID` also does since 6.15, but it creates
/// nothing a delegation lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TokenCommand {
    MapCreate,
    ProgLoad,
    BtfLoad,
}

impl TokenCommand {
    pub const ALL: [Self; 3] = [Self::MapCreate, Self::ProgLoad, Self::BtfLoad];

    /// The command for a `bpf()` first argument (the kernel reads it as an `int`).
    pub const fn from_cmd(cmd: u32) -> Option<Self> {
        match cmd {
            0 => Some(Self::MapCreate),
            5 => Some(Self::ProgLoad),
            18 => Some(Self::BtfLoad),
            _ => None,
        }
    }

    /// The `enum bpf_cmd` value, which is also its bit in `delegate_cmds`.
    pub const fn number(self) -> u32 {
        match self {
            Self::MapCreate => 0,
            Self::ProgLoad => 5,
            Self::BtfLoad => 18,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::MapCreate => "BPF_MAP_CREATE",
            Self::ProgLoad => "BPF_PROG_LOAD",
            Self::BtfLoad => "BPF_BTF_LOAD",
        }
    }

    /// Offset of `map_flags` / `prog_flags` / `btf_flags`.
    pub const fn flags_offset(self) -> usize {
        match self {
            Self::MapCreate => 16,
            Self::ProgLoad => 44,
            Self::BtfLoad => 32,
        }
    }

    /// Offset of `map_token_fd` / `prog_token_fd` / `btf_token_fd`.
    pub const fn token_fd_offset(self) -> usize {
        match self {
            Self::MapCreate => 76,
            Self::ProgLoad => 144,
            Self::BtfLoad => 36,
        }
    }

    /// The smallest attr size whose copy reaches the token field: also every byte the decoding
    /// reads, so the caller's memory is read no further.
    pub const fn size_for_token(self) -> u32 {
        self.token_fd_offset() as u32 + 4
    }
}

/// One item of a delegation: a value of one of the four sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyItem {
    pub kind: DelegateKind,
    pub value: u32,
}

impl PolicyItem {
    /// Whether `delegation` holds the item (values beyond the 64-bit masks never are: the
    /// kernel's `bpf_token_allow_*` refuse them).
    pub const fn covered_by(self, delegation: &Delegation) -> bool {
        delegation.get(self.kind).contains(self.value)
    }

    /// The item's name in the running kernel's enum, or its number.
    pub fn name(self, names: &EnumNames) -> String {
        value_name(names, self.kind, self.value)
    }
}

fn value_name(names: &EnumNames, kind: DelegateKind, value: u32) -> String {
    names
        .name_of(kind, value)
        .map_or_else(|| value.to_string(), str::to_owned)
}

/// One decoded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfCall {
    pub command: TokenCommand,
    /// The size the caller passed (`bpf()`'s third argument).
    pub attr_size: u32,
    /// The command's flags field (0 when the size does not reach it).
    pub flags: u32,
    /// The token field (0 when the size does not reach it).
    pub token_fd: i32,
    /// `MAP_CREATE`: `map_type`.
    pub map_type: Option<u32>,
    /// `PROG_LOAD`: `prog_type`.
    pub prog_type: Option<u32>,
    /// `PROG_LOAD`: `expected_attach_type` as the token check sees it (after the kernel's
    /// fixup of 0 for `cgroup_sock` and `sk_reuseport`).
    pub expected_attach_type: Option<u32>,
    /// `map_name` / `prog_name`, when the caller gave one.
    pub name: Option<String>,
}

impl BpfCall {
    /// Decodes a call from `cmd` (the low 32 bits of `bpf()`'s first argument), the caller's
    /// attr as far as it was read (`attr`, at most [`ATTR_SIZE`] bytes are looked at) and the
    /// size it passed. Bytes beyond `attr` or beyond `attr_size` read as zero, as the kernel
    /// reads them. `None` for a command that takes no token.
    pub fn decode(cmd: u32, attr: &[u8], attr_size: u32) -> Option<Self> {
        let command = TokenCommand::from_cmd(cmd)?;
        let seen = attr.len().min(attr_size as usize).min(ATTR_SIZE);
        let bytes = &attr[..seen];
        let u32_at = |offset: usize| -> u32 {
            bytes
                .get(offset..offset + 4)
                .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        };
        let name_at = |offset: usize| -> Option<String> {
            let field: Vec<u8> = (offset..offset + 16)
                .map(|i| bytes.get(i).copied().unwrap_or(0))
                .take_while(|b| *b != 0)
                .collect();
            (!field.is_empty()).then(|| String::from_utf8_lossy(&field).into_owned())
        };
        let mut call = Self {
            command,
            attr_size,
            flags: u32_at(command.flags_offset()),
            token_fd: u32_at(command.token_fd_offset()) as i32,
            map_type: None,
            prog_type: None,
            expected_attach_type: None,
            name: None,
        };
        match command {
            TokenCommand::MapCreate => {
                call.map_type = Some(u32_at(0));
                call.name = name_at(28);
            }
            TokenCommand::ProgLoad => {
                let prog_type = u32_at(0);
                let attach = match (prog_type, u32_at(68)) {
                    (PROG_TYPE_CGROUP_SOCK, 0) => ATTACH_CGROUP_INET_SOCK_CREATE,
                    (PROG_TYPE_SK_REUSEPORT, 0) => ATTACH_SK_REUSEPORT_SELECT,
                    (_, attach) => attach,
                };
                call.prog_type = Some(prog_type);
                call.expected_attach_type = Some(attach);
                call.name = name_at(48);
            }
            TokenCommand::BtfLoad => {}
        }
        Some(call)
    }

    /// How many bytes of a caller's attr [`Self::decode`] needs for a command: up to the token
    /// field, or less when the caller passed less.
    pub fn bytes_to_read(command: TokenCommand, attr_size: u32) -> usize {
        attr_size.min(command.size_for_token()) as usize
    }

    /// The call says it carries a token already (a token-aware loader).
    pub const fn carries_token(&self) -> bool {
        self.flags & BPF_F_TOKEN_FD != 0
    }

    /// The caller's attr is long enough to carry a token.
    pub const fn reaches_token_field(&self) -> bool {
        self.attr_size >= self.command.size_for_token()
    }

    /// Every item a token must allow for the kernel to use it for this call.
    pub fn needs(&self) -> Vec<PolicyItem> {
        let mut items = vec![PolicyItem {
            kind: DelegateKind::Cmds,
            value: self.command.number(),
        }];
        let typed = [
            (DelegateKind::Maps, self.map_type),
            (DelegateKind::Progs, self.prog_type),
            (DelegateKind::Attachs, self.expected_attach_type),
        ];
        items.extend(typed.into_iter().filter_map(|(kind, value)| {
            Some(PolicyItem {
                kind,
                value: value?,
            })
        }));
        items
    }

    /// The items `delegation` lacks for this call; empty when a token from it covers the call.
    pub fn uncovered(&self, delegation: &Delegation) -> Vec<PolicyItem> {
        self.needs()
            .into_iter()
            .filter(|item| !item.covered_by(delegation))
            .collect()
    }

    /// The writes that make this call carry the token at `token_fd` (a number in the caller's
    /// descriptor table): the token field first, then the flags with [`BPF_F_TOKEN_FD`], so a
    /// write interrupted between the two leaves the flag unset and the kernel ignoring the
    /// field. `None` when the caller's attr is too short to carry a token.
    pub fn token_patch(&self, token_fd: i32) -> Option<TokenPatch> {
        if !self.reaches_token_field() {
            return None;
        }
        Some(TokenPatch {
            writes: [
                (self.command.token_fd_offset(), token_fd.to_le_bytes()),
                (
                    self.command.flags_offset(),
                    (self.flags | BPF_F_TOKEN_FD).to_le_bytes(),
                ),
            ],
        })
    }

    /// What kind of call this is, for grouping equal calls.
    pub const fn shape(&self) -> CallShape {
        CallShape {
            command: self.command,
            map_type: self.map_type,
            prog_type: self.prog_type,
            expected_attach_type: self.expected_attach_type,
        }
    }

    /// [`CallShape::describe`] and the object's name, as the caller gave it.
    pub fn describe(&self, names: &EnumNames) -> String {
        let mut text = self.shape().describe(names);
        if let Some(name) = &self.name {
            // `{:?}` escapes what could act on a terminal.
            let _ = write!(text, ", named {name:?}");
        }
        text
    }
}

/// The bytes a token injection writes into the caller's attr: `(offset, bytes)`, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPatch {
    pub writes: [(usize, [u8; 4]); 2],
}

/// A call without the caller's details: what the delegation is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallShape {
    pub command: TokenCommand,
    pub map_type: Option<u32>,
    pub prog_type: Option<u32>,
    pub expected_attach_type: Option<u32>,
}

impl CallShape {
    /// `bpf(BPF_PROG_LOAD) for program type xdp, expected attach type xdp`.
    pub fn describe(&self, names: &EnumNames) -> String {
        let mut text = format!("bpf({})", self.command.name());
        if let Some(map_type) = self.map_type {
            let _ = write!(
                text,
                " for map type {}",
                value_name(names, DelegateKind::Maps, map_type)
            );
        }
        if let Some(prog_type) = self.prog_type {
            let _ = write!(
                text,
                " for program type {}",
                value_name(names, DelegateKind::Progs, prog_type)
            );
        }
        if let Some(attach) = self.expected_attach_type {
            let _ = write!(
                text,
                ", expected attach type {}",
                value_name(names, DelegateKind::Attachs, attach)
            );
        }
        text
    }
}

/// Who made a call: its thread id in the sandbox's PID namespace and its `comm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub pid: i32,
    pub comm: Option<String>,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.comm {
            Some(comm) => write!(f, "pid {} ({comm})", self.pid),
            None => write!(f, "pid {}", self.pid),
        }
    }
}

/// Why a call could not use the delegation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Gap {
    /// The delegation lacks these items.
    Uncovered(Vec<PolicyItem>),
    /// The caller's attr is too short to carry a token (a loader older than the token
    /// fields): it is checked against the host's privileges whatever the delegation.
    AttrTooShort { attr_size: u32 },
}

/// One distinct kind of call the delegation did not cover, with the first caller and a count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub shape: CallShape,
    pub gap: Gap,
    pub first_caller: Caller,
    pub calls: u32,
}

/// The distinct gaps seen in a run, in the order first seen.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    list: Vec<Finding>,
    index: BTreeMap<(CallShape, Gap), usize>,
}

/// At most this many distinct findings are kept (a command probing in a loop must not grow the
/// gateway's memory without bound); later ones are counted only.
const MAX_FINDINGS: usize = 256;

impl Findings {
    /// The gap of `call` under `delegation`, if any: a too-short attr first (no delegation can
    /// help it), else the items the delegation lacks.
    pub fn gap(call: &BpfCall, delegation: &Delegation) -> Option<Gap> {
        if !call.reaches_token_field() {
            return Some(Gap::AttrTooShort {
                attr_size: call.attr_size,
            });
        }
        let missing = call.uncovered(delegation);
        (!missing.is_empty()).then_some(Gap::Uncovered(missing))
    }

    /// Records one call with a gap; returns whether it is the first of its kind.
    pub fn record(&mut self, call: &BpfCall, gap: Gap, caller: impl FnOnce() -> Caller) -> bool {
        let key = (call.shape(), gap);
        if let Some(&at) = self.index.get(&key) {
            self.list[at].calls = self.list[at].calls.saturating_add(1);
            return false;
        }
        if self.list.len() >= MAX_FINDINGS {
            return false;
        }
        let (shape, gap) = key.clone();
        self.index.insert(key, self.list.len());
        self.list.push(Finding {
            shape,
            gap,
            first_caller: caller(),
            calls: 1,
        });
        true
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether a call of this kind with this gap was recorded already.
    pub fn contains(&self, call: &BpfCall, gap: &Gap) -> bool {
        self.index.contains_key(&(call.shape(), gap.clone()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Finding> {
        self.list.iter()
    }

    /// The explanation of every finding, one line each, then (when items are missing) the
    /// flags of a delegation that would cover every call seen.
    pub fn lines(&self, delegation: &Delegation, names: &EnumNames, caps: CapsKept) -> Vec<String> {
        let mut lines: Vec<String> = self
            .list
            .iter()
            .map(|finding| finding.explain(names, caps))
            .collect();
        let wider = self.covering(delegation);
        if wider != *delegation {
            lines.push(format!(
                "a delegation covering every call above: {}",
                changed_flags(delegation, &wider, names)
            ));
        }
        lines
    }

    /// `delegation` plus every missing item.
    pub fn covering(&self, delegation: &Delegation) -> Delegation {
        self.list
            .iter()
            .fold(*delegation, |wider, finding| match &finding.gap {
                Gap::Uncovered(items) => with_items(&wider, items),
                Gap::AttrTooShort { .. } => wider,
            })
    }

    /// The findings for `--json-status`.
    pub fn json(&self, names: &EnumNames) -> Value {
        Value::Array(self.list.iter().map(|f| f.json(names)).collect())
    }
}

/// The `--delegate-*` flags whose set differs between `from` and `to`, with `to`'s values.
fn changed_flags(from: &Delegation, to: &Delegation, names: &EnumNames) -> String {
    DelegateKind::ALL
        .into_iter()
        .filter(|kind| from.get(*kind) != to.get(*kind))
        .map(|kind| format!("{} {}", kind.flag(), names.render_value(kind, to.get(kind))))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Finding {
    /// One line: who made which call, and what to change.
    pub fn explain(&self, names: &EnumNames, caps: CapsKept) -> String {
        let count = if self.calls > 1 {
            format!(" ({} such calls)", self.calls)
        } else {
            String::new()
        };
        let what = self.shape.describe(names);
        match &self.gap {
            Gap::Uncovered(items) => {
                let adds: Vec<String> = items
                    .iter()
                    .map(|item| format!("{} to {}", item.name(names), item.kind.flag()))
                    .collect();
                let mut line = format!(
                    "{what}, by {}{count}, was not covered by the delegation: add {}",
                    self.first_caller,
                    join_and(&adds)
                );
                let perfmon_type = items.iter().find(|item| {
                    item.kind == DelegateKind::Progs
                        && PERFMON_PROG_TYPES.contains(&item.name(names).as_str())
                });
                if let Some(item) = perfmon_type
                    && !caps.perfmon
                    && !caps.sys_admin
                {
                    let _ = write!(
                        line,
                        " ({} loads only with CAP_PERFMON: {PERFMON_FLAG} too)",
                        item.name(names)
                    );
                }
                line
            }
            Gap::AttrTooShort { attr_size } => format!(
                "{what}, by {}{count}, passed a bpf_attr of {attr_size} bytes, too short to carry a token ({} needed), so the kernel checked it against the host's privileges: upgrade the loader (libbpf >= 1.4, bpftool >= 7.4)",
                self.first_caller,
                self.shape.command.size_for_token()
            ),
        }
    }

    pub fn json(&self, names: &EnumNames) -> Value {
        let name = |kind, value: Option<u32>| value.map(|v| value_name(names, kind, v));
        let mut object = json!({
            "command": self.shape.command.name(),
            "map_type": name(DelegateKind::Maps, self.shape.map_type),
            "prog_type": name(DelegateKind::Progs, self.shape.prog_type),
            "expected_attach_type": name(DelegateKind::Attachs, self.shape.expected_attach_type),
            "pid": self.first_caller.pid,
            "comm": self.first_caller.comm,
            "calls": self.calls,
        });
        match &self.gap {
            Gap::Uncovered(items) => {
                let mut missing = serde_json::Map::new();
                for item in items {
                    let entry = missing
                        .entry(item.kind.option())
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(values) = entry {
                        values.push(Value::from(item.name(names)));
                    }
                }
                object["missing"] = Value::Object(missing);
            }
            Gap::AttrTooShort { attr_size } => {
                object["attr_too_short"] = json!({
                    "attr_size": attr_size,
                    "needed": self.shape.command.size_for_token(),
                });
            }
        }
        object
    }
}

fn join_and(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// A delegation with every item of `items` added.
pub fn with_items(delegation: &Delegation, items: &[PolicyItem]) -> Delegation {
    let mut wider = *delegation;
    for item in items {
        wider.set(item.kind, wider.get(item.kind).with(item.value));
    }
    wider
}

/// `perf_event_attr.type` of a tracepoint event (`PERF_TYPE_TRACEPOINT`); the kprobe and uprobe
/// PMUs have dynamic numbers ([`ProbePmus`]).
pub const PERF_TYPE_TRACEPOINT: u32 = 2;

/// How many bytes of a caller's `struct perf_event_attr` [`PerfProbe::decode`] reads: `type`
/// (u32 at 0), `size` (u32 at 4), `config` (u64 at 8), the same on every ABI.
pub const PERF_ATTR_READ: usize = 16;

/// A `perf_event_open` event that a BPF token never grants in a sandbox: tracepoint, kprobe and
/// uprobe programs attach through one (`PERF_EVENT_IOC_SET_BPF` or a perf-event link), and the
/// kernel checks CAP_PERFMON for it in the initial user namespace, whatever the delegation: the
/// kprobe and uprobe PMUs always (`perf_kprobe_event_init`, `perf_uprobe_event_init`), a
/// tracepoint event when it counts in the kernel (`perf_allow_kernel` with
/// `perf_event_paranoid` > 1) or on a whole CPU (`perf_allow_cpu`, > 0), as loaders open it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PerfProbe {
    Tracepoint,
    Kprobe,
    Uprobe,
}

/// The type numbers the running kernel gave its kprobe and uprobe PMUs
/// (`/sys/bus/event_source/devices/{kprobe,uprobe}/type`); `None` for a PMU it lacks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbePmus {
    pub kprobe: Option<u32>,
    pub uprobe: Option<u32>,
}

impl PerfProbe {
    /// The probe kind of an event from the first bytes of its `perf_event_attr` (at least
    /// the 4 of `type`); `None` for every other event (software, hardware, breakpoints...).
    pub fn decode(attr: &[u8], pmus: ProbePmus) -> Option<Self> {
        let perf_type = u32::from_le_bytes(attr.get(..4)?.try_into().expect("4 bytes"));
        match perf_type {
            PERF_TYPE_TRACEPOINT => Some(Self::Tracepoint),
            t if Some(t) == pmus.kprobe => Some(Self::Kprobe),
            t if Some(t) == pmus.uprobe => Some(Self::Uprobe),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Tracepoint => "tracepoint",
            Self::Kprobe => "kprobe",
            Self::Uprobe => "uprobe",
        }
    }

    /// What attaches the same programs through a BPF link, with no `perf_event_open`.
    const fn instead(self) -> &'static str {
        match self {
            Self::Tracepoint => {
                "attach tracepoint programs as raw_tracepoint or tp_btf programs instead (program type raw_tracepoint, or tracing with expected attach type trace_raw_tp), through BPF links, which the token covers"
            }
            Self::Uprobe => {
                "attach uprobe programs as uprobe.multi instead (program type kprobe with expected attach type trace_uprobe_multi), through a BPF link, which the token covers"
            }
            Self::Kprobe => {
                "attach kprobe programs as kprobe.multi instead where the kernel offers it (fprobe; program type kprobe with expected attach type trace_kprobe_multi), through a BPF link, which the token covers"
            }
        }
    }
}

/// One kind of probe event seen in a run, with its first caller and a count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeFinding {
    pub probe: PerfProbe,
    pub first_caller: Caller,
    pub calls: u32,
}

impl ProbeFinding {
    /// One line: who asked, why no token helps, and what does. `paranoid` is
    /// `perf_event_paranoid` when it could be read.
    pub fn explain(&self, paranoid: Option<i32>, caps: CapsKept) -> String {
        let count = if self.calls > 1 {
            format!(" ({} such calls)", self.calls)
        } else {
            String::new()
        };
        let paranoid = paranoid.map_or_else(String::new, |n| format!(", perf_event_paranoid={n}"));
        let check = match self.probe {
            PerfProbe::Tracepoint => {
                "the kernel checks CAP_PERFMON in the host's user namespace for a tracepoint event counting in the kernel or on a whole CPU, as a program attaches to it"
            }
            PerfProbe::Kprobe | PerfProbe::Uprobe => {
                "the kernel checks CAP_PERFMON in the host's user namespace for every event of this PMU"
            }
        };
        let mut line = format!(
            "perf_event_open of a {} event, by {}{count}: a BPF token never grants this: {check} (EACCES in a sandbox{paranoid}); {}",
            self.probe.name(),
            self.first_caller,
            self.probe.instead()
        );
        if !caps.perfmon && !caps.sys_admin {
            let _ = write!(line, " (loading them needs CAP_PERFMON: {PERFMON_FLAG})");
        }
        line
    }

    pub fn json(&self) -> Value {
        json!({
            "perf_event": self.probe.name(),
            "pid": self.first_caller.pid,
            "comm": self.first_caller.comm,
            "calls": self.calls,
        })
    }
}

/// The probe events seen in a run, one entry per kind, in the order first seen.
#[derive(Debug, Clone, Default)]
pub struct ProbeFindings {
    list: Vec<ProbeFinding>,
}

impl ProbeFindings {
    /// Records one event; returns whether it is the first of its kind.
    pub fn record(&mut self, probe: PerfProbe, caller: impl FnOnce() -> Caller) -> bool {
        if let Some(seen) = self.list.iter_mut().find(|f| f.probe == probe) {
            seen.calls = seen.calls.saturating_add(1);
            return false;
        }
        self.list.push(ProbeFinding {
            probe,
            first_caller: caller(),
            calls: 1,
        });
        true
    }

    pub fn contains(&self, probe: PerfProbe) -> bool {
        self.list.iter().any(|f| f.probe == probe)
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn lines(&self, paranoid: Option<i32>, caps: CapsKept) -> Vec<String> {
        self.list
            .iter()
            .map(|f| f.explain(paranoid, caps))
            .collect()
    }

    pub fn json(&self) -> Value {
        Value::Array(self.list.iter().map(ProbeFinding::json).collect())
    }
}

#[cfg(test)]
mod tests;
