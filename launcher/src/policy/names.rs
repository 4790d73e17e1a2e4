//! Names of the four kernel enums a delegation is written in, and the three textual forms of a
//! delegation mask: what we write with `fsconfig`, what `/proc/*/mountinfo` shows, and what a
//! token's fdinfo shows.
//!
//! The kernel parses `delegate_*` values against its own BTF (`find_btf_enum_const` in
//! `kernel/bpf/inode.c`), so the running kernel's BTF is the authority on names: reading it makes
//! names added by newer kernels work without a table. The built-in table is the fallback.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::aliases::{self, AliasOrigin};
use super::{DelegateKind, Mask, PolicyError, builtin, export};
use crate::bpf::btf;

/// What one name given by the user stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved<'a> {
    pub value: u32,
    /// The kernel's name for the value (lowercase, no prefix).
    pub kernel_name: &'a str,
    /// `None` for a kernel name, else the tool whose name it is.
    pub alias: Option<AliasOrigin>,
}

/// Where [`EnumNames`] got its names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameSource {
    /// The running kernel's own BTF.
    KernelBtf(PathBuf),
    /// The table compiled into this program, with the reason the kernel's BTF was not used.
    Builtin { why: Option<String> },
}

impl fmt::Display for NameSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KernelBtf(path) => write!(f, "running kernel's BTF ({})", path.display()),
            Self::Builtin { why: None } => {
                f.write_str("built-in table from the Linux 6.18 UAPI headers")
            }
            Self::Builtin { why: Some(why) } => write!(
                f,
                "built-in table from the Linux 6.18 UAPI headers, because the kernel's BTF could not be used: {why}"
            ),
        }
    }
}

/// One enum: `(name, value)` in declaration order (aliases included, as the kernel iterates
/// them), and the number of values the kernel knows (its `__MAX_*` constant).
#[derive(Debug, Clone)]
struct EnumTable {
    entries: Vec<(String, u32)>,
    known: u32,
}

/// The names of `enum bpf_cmd`, `bpf_map_type`, `bpf_prog_type` and `bpf_attach_type`.
#[derive(Debug, Clone)]
pub struct EnumNames {
    tables: [EnumTable; 4],
    source: NameSource,
}

impl EnumNames {
    /// The running kernel's names from [`btf::VMLINUX_BTF`], else the built-in table (the reason
    /// is kept in [`Self::source`], which `-v` prints).
    /// Read once per process.
    pub fn for_running_kernel() -> &'static Self {
        static RUNNING: OnceLock<EnumNames> = OnceLock::new();
        RUNNING.get_or_init(|| {
            Self::from_btf_file(Path::new(btf::VMLINUX_BTF)).unwrap_or_else(|why| Self {
                source: NameSource::Builtin { why: Some(why) },
                ..Self::builtin()
            })
        })
    }

    /// The names in a BTF file; the error says why they could not be read.
    pub fn from_btf_file(path: &Path) -> Result<Self, String> {
        let wanted = DelegateKind::ALL.map(DelegateKind::kernel_enum);
        let found = btf::read_enums(path, &wanted).map_err(|e| e.to_string())?;
        let mut tables = Vec::with_capacity(4);
        for (kind, enum_type) in DelegateKind::ALL.into_iter().zip(found) {
            let enum_type = enum_type.ok_or_else(|| {
                format!("{} has no `enum {}`", path.display(), kind.kernel_enum())
            })?;
            tables.push(table_from_btf(kind, &enum_type));
        }
        let tables: [EnumTable; 4] = tables.try_into().expect("four kinds, four tables");
        Ok(Self {
            tables,
            source: NameSource::KernelBtf(path.to_owned()),
        })
    }

    /// The built-in names.
    pub fn builtin() -> Self {
        let table = |kind: DelegateKind| {
            let entries: Vec<(String, u32)> = builtin::table(kind)
                .iter()
                .map(|(name, value)| ((*name).to_owned(), *value))
                .collect();
            let known = entries.iter().map(|(_, v)| v + 1).max().unwrap_or(0);
            EnumTable { entries, known }
        };
        Self {
            tables: DelegateKind::ALL.map(table),
            source: NameSource::Builtin { why: None },
        }
    }

    pub const fn source(&self) -> &NameSource {
        &self.source
    }

    fn table(&self, kind: DelegateKind) -> &EnumTable {
        &self.tables[kind as usize]
    }

    /// Every `(name, value)` of one enum, in the kernel's order.
    pub fn entries(&self, kind: DelegateKind) -> impl Iterator<Item = (&str, u32)> {
        self.table(kind)
            .entries
            .iter()
            .map(|(n, v)| (n.as_str(), *v))
    }

    /// The mask the kernel calls `any` for this set: every value it knows (`BIT(__MAX_*) - 1`).
    pub fn known_mask(&self, kind: DelegateKind) -> Mask {
        let known = self.table(kind).known.min(64);
        Mask(if known == 64 {
            u64::MAX
        } else {
            (1u64 << known) - 1
        })
    }

    /// The value of a kernel name, case-insensitive, with or without the kernel prefix.
    pub fn value_of(&self, kind: DelegateKind, name: &str) -> Option<u32> {
        self.kernel_entry(kind, name).map(|(_, v)| v)
    }

    fn kernel_entry(&self, kind: DelegateKind, name: &str) -> Option<(&str, u32)> {
        let lower = name.to_ascii_lowercase();
        let prefix = kind.kernel_prefix().to_ascii_lowercase();
        let bare = lower.strip_prefix(&prefix).unwrap_or(&lower);
        let find = |n: &str| self.entries(kind).find(|(entry, _)| *entry == n);
        // `BPF_XDP` is the attach type `xdp`, but a name could also start with the prefix's
        // letters by chance: try the name as given too.
        find(bare).or_else(|| find(&lower))
    }

    /// A name in any form this parser takes: the kernel's (as [`Self::value_of`]), systemd's
    /// (`BPFProgTypeXdp`, any case) or libbpf's section name where it means one value of this
    /// set (`tc` is `sched_cls`; `fentry` is `tracing` as a program type and `trace_fentry` as
    /// an attach type). Kernel names win over the others.
    pub fn resolve(&self, kind: DelegateKind, name: &str) -> Option<Resolved<'_>> {
        let found = |(kernel_name, value), alias| Resolved {
            value,
            kernel_name,
            alias,
        };
        if let Some(entry) = self.kernel_entry(kind, name) {
            return Some(found(entry, None));
        }
        let lower = name.to_ascii_lowercase();
        if looks_like_systemd(&lower) {
            return self
                .entries(kind)
                .find(|(entry, _)| export::systemd_name(kind, entry).eq_ignore_ascii_case(name))
                .map(|entry| found(entry, Some(AliasOrigin::Systemd)));
        }
        let kernel_name = aliases::libbpf(kind, &lower)?;
        self.kernel_entry(kind, kernel_name)
            .map(|entry| found(entry, Some(AliasOrigin::Libbpf)))
    }

    /// The first name of a value, in enum order (the one the kernel prints).
    pub fn name_of(&self, kind: DelegateKind, value: u32) -> Option<&str> {
        self.table(kind)
            .entries
            .iter()
            .find(|(_, v)| *v == value)
            .map(|(n, _)| n.as_str())
    }

    /// Parses one value: `any`, `none`, a list of names separated by `:` or `,`, or one number
    /// standing alone. `none` is ours (the kernel has no word for an empty set).
    pub fn parse(&self, kind: DelegateKind, text: &str) -> Result<Mask, PolicyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(PolicyError::Empty { kind });
        }
        if text.eq_ignore_ascii_case("none") {
            return Ok(Mask::NONE);
        }
        let items: Vec<&str> = text.split([':', ',']).map(str::trim).collect();
        if let [single] = items.as_slice()
            && let Some(number) = parse_number(single)
        {
            let mask = number.map(Mask).map_err(|()| PolicyError::BadNumber {
                kind,
                item: (*single).to_owned(),
            })?;
            return self.check_known_bits(kind, single, mask);
        }
        let mut mask = Mask::NONE;
        for item in &items {
            if item.is_empty() {
                return Err(PolicyError::EmptyItem {
                    kind,
                    value: text.to_owned(),
                });
            }
            if item.eq_ignore_ascii_case("any") {
                mask = Mask::ANY;
            } else if let Some(resolved) = self.resolve(kind, item) {
                let value = resolved.value;
                if let Some(origin) = resolved.alias {
                    log::debug!(
                        "{}: `{item}` is {} for {}",
                        kind.option(),
                        origin.describe(),
                        resolved.kernel_name
                    );
                }
                if value >= 64 {
                    return Err(PolicyError::OutOfRange {
                        kind,
                        item: (*item).to_owned(),
                        value,
                    });
                }
                mask = mask.with(value);
            } else if parse_number(item).is_some() {
                return Err(PolicyError::NumberMixedWithNames {
                    kind,
                    value: text.to_owned(),
                    item: (*item).to_owned(),
                });
            } else {
                return Err(PolicyError::UnknownName {
                    kind,
                    item: (*item).to_owned(),
                    suggestions: self.suggest(kind, item),
                    names_from: self.source.clone(),
                });
            }
        }
        Ok(mask)
    }

    /// A number may only set bits the kernel knows, or all of them: other bits would be
    /// accepted, dropped from `mountinfo` and kept in tokens, a policy nobody can read back.
    fn check_known_bits(
        &self,
        kind: DelegateKind,
        item: &str,
        mask: Mask,
    ) -> Result<Mask, PolicyError> {
        let unknown = mask.0 & !self.known_mask(kind).0;
        if mask.is_any() || unknown == 0 {
            return Ok(mask);
        }
        Err(PolicyError::UnknownBits {
            kind,
            item: item.to_owned(),
            bits: Mask(unknown).values().collect(),
            known: self.table(kind).known,
        })
    }

    /// The `fsconfig` value: `any`, names in enum order joined by `:`, or one hexadecimal number
    /// when a bit has no name. The empty set has no value (the option is left out).
    pub fn render(&self, kind: DelegateKind, mask: Mask) -> String {
        if mask.is_any() {
            return "any".to_owned();
        }
        let names: Option<Vec<&str>> = mask.values().map(|v| self.name_of(kind, v)).collect();
        match names {
            Some(names) if !names.is_empty() => names.join(":"),
            _ => format!("{:#x}", mask.0),
        }
    }

    /// A value the user can give back to [`Self::parse`]: [`Self::render`], or `none` for the
    /// empty set (which has no `fsconfig` form).
    pub fn render_value(&self, kind: DelegateKind, mask: Mask) -> String {
        if mask.is_empty() {
            "none".to_owned()
        } else {
            self.render(kind, mask)
        }
    }

    /// What `/proc/*/mountinfo` shows for a stored mask (`seq_print_delegate_opts` in
    /// `kernel/bpf/inode.c`): nothing for an empty set, `any` when every known value is in,
    /// else names in enum order, then bits without a name as one `0x..` item. Bits the kernel
    /// does not know are dropped.
    pub fn render_as_mounted(&self, kind: DelegateKind, mask: Mask) -> Option<String> {
        let known = self.known_mask(kind);
        let mut left = mask.0 & known.0;
        if left == 0 {
            return None;
        }
        if left == known.0 {
            return Some("any".to_owned());
        }
        let mut items = Vec::new();
        for (name, value) in &self.table(kind).entries {
            if *value < 64 && left & (1 << value) != 0 {
                left &= !(1 << value);
                items.push(name.clone());
            }
        }
        if left != 0 {
            items.push(format!("{left:#x}"));
        }
        Some(items.join(":"))
    }

    /// Reads a value as `/proc/*/mountinfo` shows it (the inverse of
    /// [`Self::render_as_mounted`]): `any` is every known value, a trailing number adds bits.
    pub fn parse_as_mounted(&self, kind: DelegateKind, text: &str) -> Result<Mask, PolicyError> {
        let mut mask = Mask::NONE;
        for item in text.split(':') {
            if item == "any" {
                mask.0 |= self.known_mask(kind).0;
            } else if let Some(value) = self.value_of(kind, item).filter(|v| *v < 64) {
                mask = mask.with(value);
            } else if let Some(Ok(bits)) = parse_number(item) {
                mask.0 |= bits;
            } else {
                return Err(PolicyError::UnknownName {
                    kind,
                    item: item.to_owned(),
                    suggestions: Vec::new(),
                    names_from: self.source.clone(),
                });
            }
        }
        Ok(mask)
    }

    /// What a token's fdinfo shows for a mask it copied (`bpf_token_show_fdinfo`): `any` when
    /// every known value is in, else the mask as stored, unknown bits included.
    pub fn as_token_shows(&self, kind: DelegateKind, mask: Mask) -> Mask {
        let known = self.known_mask(kind);
        if mask.0 & known.0 == known.0 {
            Mask::ANY
        } else {
            mask
        }
    }

    /// The closest valid names to a misspelt one: kernel and libbpf names, or systemd's for a
    /// name in systemd's spelling. A libbpf prefix that means several values of this set
    /// (`tcx` as an attach type) suggests them all.
    fn suggest(&self, kind: DelegateKind, item: &str) -> Vec<String> {
        let lower = item.to_ascii_lowercase();
        let choices: Vec<String> = aliases::libbpf_choices(kind, &lower)
            .iter()
            .filter(|name| self.kernel_entry(kind, name).is_some())
            .map(|name| (*name).to_owned())
            .collect();
        if !choices.is_empty() {
            return choices;
        }
        let (typed, candidates): (&str, Vec<String>) = if looks_like_systemd(&lower) {
            let spelt = self
                .entries(kind)
                .map(|(name, _)| export::systemd_name(kind, name))
                .collect();
            (&lower, spelt)
        } else {
            let prefix = kind.kernel_prefix().to_ascii_lowercase();
            let bare = lower.strip_prefix(&prefix).unwrap_or(&lower);
            let known = self
                .entries(kind)
                .map(|(name, _)| name.to_owned())
                .chain(aliases::libbpf_names(kind).map(str::to_owned))
                .collect();
            (bare, known)
        };
        let mut scored: Vec<(usize, String)> = candidates
            .into_iter()
            .map(|name| (edit_distance(typed, &name.to_ascii_lowercase()), name))
            .collect();
        scored.sort_unstable();
        scored.dedup();
        let best = scored.first().map_or(usize::MAX, |s| s.0);
        let limit = (typed.len() / 3).max(2);
        scored
            .into_iter()
            .take_while(|(d, _)| *d == best && *d <= limit)
            .take(3)
            .map(|(_, n)| n)
            .collect()
    }
}

/// systemd's spelling: `BPF` then capitalised words, no `_` (kernel names always have one
/// after `bpf`, and no libbpf section starts with `bpf`).
fn looks_like_systemd(lower: &str) -> bool {
    lower.len() > 3 && lower.starts_with("bpf") && !lower.contains('_')
}

/// A BTF enum as the kernel's parser sees it: only constants with the kind's prefix count
/// (`__MAX_BPF_CMD` does not), compared without the prefix; `__MAX_*` gives the known count.
fn table_from_btf(kind: DelegateKind, enum_type: &btf::BtfEnum) -> EnumTable {
    let prefix = kind.kernel_prefix();
    let mut entries = Vec::new();
    let mut max_constant = None;
    for constant in &enum_type.constants {
        let upper = constant.name.to_ascii_uppercase();
        if upper.starts_with("__MAX_") {
            max_constant = u32::try_from(constant.value).ok();
        }
        let Some(bare) = upper.strip_prefix(prefix) else {
            continue;
        };
        let Ok(value) = u32::try_from(constant.value) else {
            continue;
        };
        entries.push((bare.to_ascii_lowercase(), value));
    }
    let known =
        max_constant.unwrap_or_else(|| entries.iter().map(|(_, v)| v + 1).max().unwrap_or(0));
    EnumTable { entries, known }
}

/// `Some(Ok(n))` for a number the kernel would accept (`0x..`, octal `0..`, decimal),
/// `Some(Err)` for something that starts like a number but is not one, `None` for a name.
fn parse_number(item: &str) -> Option<Result<u64, ()>> {
    if !item.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let parsed = if let Some(hex) = item.strip_prefix("0x").or_else(|| item.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16)
    } else if item.len() > 1 && item.starts_with('0') {
        u64::from_str_radix(&item[1..], 8)
    } else {
        item.parse()
    };
    Some(parsed.map_err(|_| ()))
}

/// Levenshtein distance, for "did you mean" suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}
