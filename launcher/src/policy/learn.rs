//! What a command asked of a delegation, as the sandbox's `bpf()` gateway saw it: the log a
//! learning run keeps ([`CallLog`]), how it travels from the sandbox's init to the supervisor
//! (JSON, checked on arrival like any input from the sandbox), and the policy it adds up to
//! ([`CallLog::learn`]).
//!
//! The gateway sees every `BPF_MAP_CREATE`, `BPF_PROG_LOAD` and `BPF_BTF_LOAD` of the command,
//! those that carry a token of their own (a token-aware loader's) included, and logs each kind
//! of call once, with a count, the first callers and the names the loader gave its objects.
//! Three kinds of call never go into a policy, because no delegation can make them work:
//! calls whose attr is too short to carry a token (the kernel checks them against the host's
//! privileges), loads of program types that need CAP_PERFMON when the command does not keep it
//! (`bpf_prog_load` refuses them before looking at the delegation), and values the running
//! kernel has no name for (a token never allows them).

use std::fmt;

use serde_json::{Value, json};

use super::calls::{BpfCall, CallShape, PolicyItem, TokenCommand};
use super::risk::{CapsKept, PERFMON_FLAG, PERFMON_PROG_TYPES};
use super::{DelegateKind, Delegation, EnumNames};

/// The most kinds of call a log keeps (a command probing in a loop must not grow the gateway
/// without bound); later kinds are only counted ([`CallLog::unrecorded`]).
pub const MAX_KINDS: usize = 256;
/// The most distinct callers kept per kind of call.
pub const MAX_CALLERS: usize = 4;
/// The most distinct object names kept per kind of call.
pub const MAX_NAMES: usize = 4;
/// The longest `comm`, `argv[0]` or object name kept, in characters.
pub const MAX_TEXT: usize = 160;
/// The most bytes of a log the supervisor reads back (256 kinds with their texts fit easily).
pub const MAX_JSON: usize = 1 << 20;

/// The version of the JSON form, so a supervisor never misreads another build's log.
const VERSION: u64 = 1;

/// A process that made calls, as the gateway named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedCaller {
    /// Its thread id in the sandbox's PID namespace.
    pub pid: i32,
    pub comm: Option<String>,
    /// The first word of its command line (`/proc/PID/cmdline`).
    pub argv0: Option<String>,
}

impl fmt::Display for NamedCaller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {}", self.pid)?;
        match (&self.comm, &self.argv0) {
            (Some(comm), Some(argv0)) if argv0 != comm => write!(f, " ({comm}, {argv0})"),
            (Some(name), _) | (None, Some(name)) => write!(f, " ({name})"),
            (None, None) => Ok(()),
        }
    }
}

/// One kind of call: what it asks of the delegation, and who made it how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallKind {
    pub shape: CallShape,
    /// The caller's attr reaches the token field (a call that cannot carry a token gets
    /// nothing from any delegation).
    pub token_field: bool,
    pub calls: u32,
    /// How many of the calls carried a token of their own.
    pub carried_token: u32,
    /// The first [`MAX_CALLERS`] distinct callers.
    pub callers: Vec<NamedCaller>,
    /// The first [`MAX_NAMES`] distinct names the objects were given.
    pub names: Vec<String>,
}

impl CallKind {
    /// The items a token must allow for this kind of call.
    pub fn needs(&self) -> Vec<PolicyItem> {
        shape_needs(&self.shape)
    }

    /// `pid 2 (loader): bpf(BPF_PROG_LOAD) for program type xdp, expected attach type xdp,
    /// named "xdp_counter"; 1 call`, for comments.
    pub fn describe(&self, names: &EnumNames) -> String {
        let mut text = String::new();
        if !self.callers.is_empty() {
            let callers: Vec<String> = self.callers.iter().map(ToString::to_string).collect();
            text.push_str(&callers.join(", "));
            text.push_str(": ");
        }
        text.push_str(&self.shape.describe(names));
        if !self.names.is_empty() {
            let quoted: Vec<String> = self.names.iter().map(|n| format!("{n:?}")).collect();
            text.push_str(&format!(", named {}", quoted.join(", ")));
        }
        text.push_str(&format!("; {}", self.count()));
        text
    }

    /// `3 calls, 1 already carrying a token` (a token-aware loader's, or a loader's retry of
    /// a call the gateway had given the token).
    pub fn count(&self) -> String {
        let plural = if self.calls == 1 { "" } else { "s" };
        let mut text = format!("{} call{plural}", self.calls);
        if self.carried_token == self.calls {
            text.push_str(", already carrying a token");
        } else if self.carried_token > 0 {
            text.push_str(&format!(
                ", {} already carrying a token",
                self.carried_token
            ));
        }
        text
    }
}

/// The items a call of this shape needs: the command, then its map type, or its program type
/// and expected attach type (as [`BpfCall::needs`]).
pub fn shape_needs(shape: &CallShape) -> Vec<PolicyItem> {
    let mut items = vec![PolicyItem {
        kind: DelegateKind::Cmds,
        value: shape.command.number(),
    }];
    for (kind, value) in [
        (DelegateKind::Maps, shape.map_type),
        (DelegateKind::Progs, shape.prog_type),
        (DelegateKind::Attachs, shape.expected_attach_type),
    ] {
        if let Some(value) = value {
            items.push(PolicyItem { kind, value });
        }
    }
    items
}

/// Every kind of call a run made through the gateway, in the order first seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallLog {
    kinds: Vec<CallKind>,
    /// Calls of kinds beyond [`MAX_KINDS`], counted only.
    unrecorded: u64,
}

impl CallLog {
    pub fn kinds(&self) -> &[CallKind] {
        &self.kinds
    }

    pub const fn unrecorded(&self) -> u64 {
        self.unrecorded
    }

    /// Calls logged, of every kind.
    pub fn calls(&self) -> u64 {
        self.kinds.iter().map(|k| u64::from(k.calls)).sum::<u64>() + self.unrecorded
    }

    fn position(&self, call: &BpfCall) -> Option<usize> {
        let key = (call.shape(), call.reaches_token_field());
        self.kinds
            .iter()
            .position(|k| (k.shape, k.token_field) == key)
    }

    /// Whether logging this call from `pid` would keep the caller's name (the gateway names a
    /// caller only then: reading its `comm` and command line costs more than the call).
    pub fn wants_caller(&self, call: &BpfCall, pid: i32) -> bool {
        match self.position(call) {
            Some(at) => {
                let callers = &self.kinds[at].callers;
                callers.len() < MAX_CALLERS && !callers.iter().any(|c| c.pid == pid)
            }
            None => self.kinds.len() < MAX_KINDS,
        }
    }

    /// Logs one call from `pid`; `caller` gives its `comm` and `argv[0]` when they are kept.
    pub fn record(
        &mut self,
        call: &BpfCall,
        pid: i32,
        caller: impl FnOnce() -> (Option<String>, Option<String>),
    ) {
        let at = match self.position(call) {
            Some(at) => at,
            None if self.kinds.len() < MAX_KINDS => {
                self.kinds.push(CallKind {
                    shape: call.shape(),
                    token_field: call.reaches_token_field(),
                    calls: 0,
                    carried_token: 0,
                    callers: Vec::new(),
                    names: Vec::new(),
                });
                self.kinds.len() - 1
            }
            None => {
                self.unrecorded = self.unrecorded.saturating_add(1);
                return;
            }
        };
        let kind = &mut self.kinds[at];
        kind.calls = kind.calls.saturating_add(1);
        if call.carries_token() {
            kind.carried_token = kind.carried_token.saturating_add(1);
        }
        if let Some(name) = &call.name {
            let name = clean_text(name);
            if kind.names.len() < MAX_NAMES && !kind.names.contains(&name) {
                kind.names.push(name);
            }
        }
        if kind.callers.len() < MAX_CALLERS && !kind.callers.iter().any(|c| c.pid == pid) {
            let (comm, argv0) = caller();
            kind.callers.push(NamedCaller {
                pid,
                comm: comm.map(|c| clean_text(&c)),
                argv0: argv0.map(|a| clean_text(&a)),
            });
        }
    }

    /// The JSON form the sandbox's init writes at the command's end (numbers, not names: the
    /// supervisor names them with the running kernel's enums).
    pub fn to_json(&self) -> Value {
        let kinds: Vec<Value> = self
            .kinds
            .iter()
            .map(|k| {
                json!({
                    "command": k.shape.command.number(),
                    "map_type": k.shape.map_type,
                    "prog_type": k.shape.prog_type,
                    "expected_attach_type": k.shape.expected_attach_type,
                    "token_field": k.token_field,
                    "calls": k.calls,
                    "carried_token": k.carried_token,
                    "callers": k.callers.iter().map(|c| json!({
                        "pid": c.pid,
                        "comm": c.comm,
                        "argv0": c.argv0,
                    })).collect::<Vec<_>>(),
                    "names": k.names,
                })
            })
            .collect();
        json!({
            "version": VERSION,
            "gateway": true,
            "kinds": kinds,
            "unrecorded": self.unrecorded,
        })
    }

    /// What the sandbox's init writes when the gateway could not start: nothing was seen.
    pub fn json_without_gateway() -> Value {
        json!({ "version": VERSION, "gateway": false })
    }

    /// Reads the JSON form back: `Ok(None)` when the gateway did not run. The text comes from
    /// the sandbox, which the command shares, so everything is checked and bounded again.
    pub fn from_json(text: &[u8]) -> Result<Option<Self>, String> {
        if text.len() > MAX_JSON {
            return Err(format!("the call log is longer than {MAX_JSON} bytes"));
        }
        let value: Value =
            serde_json::from_slice(text).map_err(|e| format!("the call log is not JSON: {e}"))?;
        if value["version"].as_u64() != Some(VERSION) {
            return Err(format!("the call log is not of version {VERSION}"));
        }
        match value["gateway"].as_bool() {
            Some(false) => return Ok(None),
            Some(true) => {}
            None => return Err("the call log does not say whether the gateway ran".to_owned()),
        }
        let kinds = value["kinds"]
            .as_array()
            .ok_or("the call log has no list of calls")?;
        if kinds.len() > MAX_KINDS {
            return Err(format!(
                "the call log has more than {MAX_KINDS} kinds of call"
            ));
        }
        let mut log = Self {
            kinds: Vec::with_capacity(kinds.len()),
            unrecorded: value["unrecorded"]
                .as_u64()
                .ok_or("the call log has no count of unrecorded calls")?,
        };
        for kind in kinds {
            log.kinds.push(kind_from_json(kind)?);
        }
        Ok(Some(log))
    }

    /// What a delegation must hold for this run's calls, and the calls none can help.
    pub fn learn(&self, caps: CapsKept, names: &EnumNames) -> Learned {
        let mut items: Vec<PolicyItem> = Vec::new();
        let mut hopeless = Vec::new();
        for (index, kind) in self.kinds.iter().enumerate() {
            match hopeless_reason(kind, caps, names) {
                Some(why) => hopeless.push((index, why)),
                None => {
                    for item in kind.needs() {
                        if !items.contains(&item) {
                            items.push(item);
                        }
                    }
                }
            }
        }
        items.sort();
        Learned { items, hopeless }
    }

    /// The kinds of call that asked for `item` and could have used it (`learned` says which
    /// could not).
    pub fn askers<'a>(
        &'a self,
        item: PolicyItem,
        learned: &'a Learned,
    ) -> impl Iterator<Item = &'a CallKind> + 'a {
        self.kinds
            .iter()
            .enumerate()
            .filter_map(move |(index, kind)| {
                (kind.needs().contains(&item) && !learned.is_hopeless(index)).then_some(kind)
            })
    }

    /// The kinds of call `delegation` did not cover, with the items each lacked, leaving out
    /// those no delegation helps (`learned`, this log's [`Self::learn`]).
    pub fn uncovered(
        &self,
        delegation: &Delegation,
        learned: &Learned,
    ) -> Vec<(&CallKind, Vec<PolicyItem>)> {
        self.kinds
            .iter()
            .enumerate()
            .filter(|(index, _)| !learned.is_hopeless(*index))
            .filter_map(|(_, kind)| {
                let missing: Vec<PolicyItem> = kind
                    .needs()
                    .into_iter()
                    .filter(|item| !item.covered_by(delegation))
                    .collect();
                (!missing.is_empty()).then_some((kind, missing))
            })
            .collect()
    }
}

/// Why no delegation can make a kind of call work, if none can.
fn hopeless_reason(kind: &CallKind, caps: CapsKept, names: &EnumNames) -> Option<Hopeless> {
    if !kind.token_field {
        return Some(Hopeless::AttrTooShort);
    }
    let needs = kind.needs();
    if let Some(item) = needs
        .iter()
        .find(|item| item.value >= 64 || names.name_of(item.kind, item.value).is_none())
    {
        return Some(Hopeless::UnknownValue { item: *item });
    }
    let perfmon_type = needs.iter().find(|item| {
        item.kind == DelegateKind::Progs && PERFMON_PROG_TYPES.contains(&item.name(names).as_str())
    });
    match perfmon_type {
        Some(item) if !caps.perfmon && !caps.sys_admin => {
            Some(Hopeless::NeedsPerfmon { prog_type: *item })
        }
        _ => None,
    }
}

/// Why a kind of call gets nothing from any delegation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hopeless {
    /// The attr is too short to carry a token: the kernel checks the call against the host's
    /// privileges.
    AttrTooShort,
    /// The program type needs CAP_PERFMON, which the command does not keep: `bpf_prog_load`
    /// refuses it before it looks at the token's delegation.
    NeedsPerfmon { prog_type: PolicyItem },
    /// A value the running kernel has no name for, or beyond the 64-bit delegation masks: no
    /// token allows it.
    UnknownValue { item: PolicyItem },
}

impl Hopeless {
    pub fn explain(self, names: &EnumNames) -> String {
        match self {
            Self::AttrTooShort => "its bpf_attr is too short to carry a token, so the kernel checks it against the host's privileges whatever the delegation (upgrade the loader: libbpf >= 1.4, bpftool >= 7.4)".to_owned(),
            Self::NeedsPerfmon { prog_type } => format!(
                "program type {} loads only with CAP_PERFMON, which the command did not keep ({PERFMON_FLAG}), so the kernel refused it whatever the delegation",
                prog_type.name(names)
            ),
            Self::UnknownValue { item } => format!(
                "the running kernel has no {} {} a delegation could name, so no token allows it",
                item.kind.item(),
                item.value
            ),
        }
    }
}

/// The policy a log adds up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    /// Every item asked for by a call some delegation can help, in kind and value order.
    pub items: Vec<PolicyItem>,
    /// The kinds of call (indices into [`CallLog::kinds`]) no delegation helps, with why.
    pub hopeless: Vec<(usize, Hopeless)>,
}

impl Learned {
    pub fn delegation(&self) -> Delegation {
        delegation_of(&self.items)
    }

    pub fn is_hopeless(&self, index: usize) -> bool {
        self.hopeless.iter().any(|(i, _)| *i == index)
    }
}

/// The delegation holding exactly `items`.
pub fn delegation_of(items: &[PolicyItem]) -> Delegation {
    super::calls::with_items(&Delegation::default(), items)
}

/// Control characters (a newline would end a TOML comment and start a key of the command's
/// choosing; an escape sequence would act on a terminal) become `?`; the text is cut at
/// [`MAX_TEXT`] characters.
pub fn clean_text(text: &str) -> String {
    let mut cleaned: String = text
        .chars()
        .take(MAX_TEXT)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(MAX_TEXT).is_some() {
        cleaned.push('…');
    }
    cleaned
}

fn kind_from_json(value: &Value) -> Result<CallKind, String> {
    let number = |field: &str| -> Result<u32, String> {
        value[field]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("the call log's {field} is not a number"))
    };
    let optional = |field: &str| -> Result<Option<u32>, String> {
        match &value[field] {
            Value::Null => Ok(None),
            other => other
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| format!("the call log's {field} is not a number")),
        }
    };
    let text = |value: &Value| -> Result<Option<String>, String> {
        match value {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(clean_text(s))),
            _ => Err("the call log has a name that is not text".to_owned()),
        }
    };
    let command = TokenCommand::from_cmd(number("command")?)
        .ok_or("the call log names a command that takes no token")?;
    let shape = CallShape {
        command,
        map_type: optional("map_type")?,
        prog_type: optional("prog_type")?,
        expected_attach_type: optional("expected_attach_type")?,
    };
    let consistent = match command {
        TokenCommand::MapCreate => {
            shape.map_type.is_some()
                && shape.prog_type.is_none()
                && shape.expected_attach_type.is_none()
        }
        TokenCommand::ProgLoad => {
            shape.map_type.is_none()
                && shape.prog_type.is_some()
                && shape.expected_attach_type.is_some()
        }
        TokenCommand::BtfLoad => {
            shape.map_type.is_none()
                && shape.prog_type.is_none()
                && shape.expected_attach_type.is_none()
        }
    };
    if !consistent {
        return Err(format!(
            "the call log's {} has the wrong types",
            command.name()
        ));
    }
    let callers = value["callers"]
        .as_array()
        .ok_or("the call log has no callers")?;
    let names = value["names"]
        .as_array()
        .ok_or("the call log has no names")?;
    if callers.len() > MAX_CALLERS || names.len() > MAX_NAMES {
        return Err("the call log keeps too many callers or names".to_owned());
    }
    Ok(CallKind {
        shape,
        token_field: value["token_field"]
            .as_bool()
            .ok_or("the call log's token_field is not true or false")?,
        calls: number("calls")?,
        carried_token: number("carried_token")?,
        callers: callers
            .iter()
            .map(|c| {
                Ok(NamedCaller {
                    pid: c["pid"]
                        .as_i64()
                        .and_then(|p| i32::try_from(p).ok())
                        .ok_or("the call log has a caller without a pid")?,
                    comm: text(&c["comm"])?,
                    argv0: text(&c["argv0"])?,
                })
            })
            .collect::<Result<_, String>>()?,
        names: names
            .iter()
            .map(|n| text(n)?.ok_or_else(|| "the call log has an empty name".to_owned()))
            .collect::<Result<_, String>>()?,
    })
}

#[cfg(test)]
mod tests;
