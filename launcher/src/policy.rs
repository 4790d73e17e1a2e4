//! The delegation policy: which commands, map types, program types and attach types a bpffs
//! instance hands to the tokens created from it.
//!
//! One parser serves every flag. The kernel's own parser (`bpf_parse_param` in
//! `kernel/bpf/inode.c`) has a trap: a number replaces every item before it in the same value
//! (`hash:0x4` means just `array`). This parser refuses numbers mixed with names instead.

use std::fmt;

use crate::kernel_enums;

/// One of the four `delegate_*` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DelegateKind {
    Cmds,
    Maps,
    Progs,
    Attachs,
}

impl DelegateKind {
    pub const ALL: [Self; 4] = [Self::Cmds, Self::Maps, Self::Progs, Self::Attachs];

    /// The bpffs mount option, e.g. `delegate_progs`.
    pub const fn option(self) -> &'static str {
        match self {
            Self::Cmds => "delegate_cmds",
            Self::Maps => "delegate_maps",
            Self::Progs => "delegate_progs",
            Self::Attachs => "delegate_attachs",
        }
    }

    /// The command-line flag that sets it.
    pub const fn flag(self) -> &'static str {
        match self {
            Self::Cmds => "--delegate-cmds",
            Self::Maps => "--delegate-maps",
            Self::Progs => "--delegate-progs",
            Self::Attachs => "--delegate-attachs",
        }
    }

    /// The key in a token's `/proc/self/fdinfo` entry.
    pub const fn fdinfo_key(self) -> &'static str {
        match self {
            Self::Cmds => "allowed_cmds",
            Self::Maps => "allowed_maps",
            Self::Progs => "allowed_progs",
            Self::Attachs => "allowed_attachs",
        }
    }

    /// The prefix of the kernel enum's constants, which names may carry or omit.
    pub const fn kernel_prefix(self) -> &'static str {
        match self {
            Self::Cmds | Self::Attachs => "BPF_",
            Self::Maps => "BPF_MAP_TYPE_",
            Self::Progs => "BPF_PROG_TYPE_",
        }
    }

    /// What one item of the set is, for messages.
    pub const fn item(self) -> &'static str {
        match self {
            Self::Cmds => "command",
            Self::Maps => "map type",
            Self::Progs => "program type",
            Self::Attachs => "attach type",
        }
    }

    const fn builtin_table(self) -> &'static [(&'static str, u32)] {
        match self {
            Self::Cmds => kernel_enums::CMDS,
            Self::Maps => kernel_enums::MAP_TYPES,
            Self::Progs => kernel_enums::PROG_TYPES,
            Self::Attachs => kernel_enums::ATTACH_TYPES,
        }
    }
}

impl fmt::Display for DelegateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.option())
    }
}

/// A set of enum values as the kernel stores it: bit N means value N. All ones is `any`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Mask(pub u64);

impl Mask {
    pub const NONE: Self = Self(0);
    pub const ANY: Self = Self(u64::MAX);

    pub const fn is_any(self) -> bool {
        self.0 == u64::MAX
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub const fn contains(self, value: u32) -> bool {
        value < 64 && self.0 & (1 << value) != 0
    }

    #[must_use]
    pub const fn with(self, value: u32) -> Self {
        if value < 64 {
            Self(self.0 | (1 << value))
        } else {
            self
        }
    }

    #[must_use]
    pub const fn without(self, value: u32) -> Self {
        if value < 64 {
            Self(self.0 & !(1 << value))
        } else {
            self
        }
    }

    /// The values in the set, ascending.
    pub fn values(self) -> impl Iterator<Item = u32> {
        (0..64u32).filter(move |v| self.contains(*v))
    }
}

/// The four masks of one bpffs instance or one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Delegation {
    pub cmds: Mask,
    pub maps: Mask,
    pub progs: Mask,
    pub attachs: Mask,
}

impl Delegation {
    pub const fn get(&self, kind: DelegateKind) -> Mask {
        match kind {
            DelegateKind::Cmds => self.cmds,
            DelegateKind::Maps => self.maps,
            DelegateKind::Progs => self.progs,
            DelegateKind::Attachs => self.attachs,
        }
    }

    pub const fn set(&mut self, kind: DelegateKind, mask: Mask) {
        match kind {
            DelegateKind::Cmds => self.cmds = mask,
            DelegateKind::Maps => self.maps = mask,
            DelegateKind::Progs => self.progs = mask,
            DelegateKind::Attachs => self.attachs = mask,
        }
    }

    pub const fn is_empty(&self) -> bool {
        self.cmds.is_empty()
            && self.maps.is_empty()
            && self.progs.is_empty()
            && self.attachs.is_empty()
    }
}

/// Names of the kernel enum values, and where they came from.
#[derive(Debug, Clone)]
pub struct EnumNames {
    tables: [Vec<(String, u32)>; 4],
    source: NameSource,
}

/// Where [`EnumNames`] got its names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameSource {
    /// The table compiled into this program (from the UAPI headers of Linux 6.18).
    Builtin,
}

impl fmt::Display for NameSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Builtin => f.write_str("built-in table from the Linux 6.18 UAPI headers"),
        }
    }
}

impl EnumNames {
    /// The built-in names.
    pub fn builtin() -> Self {
        let table = |kind: DelegateKind| {
            kind.builtin_table()
                .iter()
                .map(|(name, value)| ((*name).to_owned(), *value))
                .collect()
        };
        Self {
            tables: DelegateKind::ALL.map(table),
            source: NameSource::Builtin,
        }
    }

    pub const fn source(&self) -> NameSource {
        self.source
    }

    fn table(&self, kind: DelegateKind) -> &[(String, u32)] {
        &self.tables[kind as usize]
    }

    /// The value of a name, case-insensitive, with or without the kernel prefix.
    pub fn value_of(&self, kind: DelegateKind, name: &str) -> Option<u32> {
        let lower = name.to_ascii_lowercase();
        let prefix = kind.kernel_prefix().to_ascii_lowercase();
        let bare = lower.strip_prefix(&prefix).unwrap_or(&lower);
        let find = |n: &str| {
            self.table(kind)
                .iter()
                .find(|(entry, _)| entry == n)
                .map(|(_, v)| *v)
        };
        // `BPF_XDP` is the attach type `xdp`, but a bare `bpf_...`-looking name could also be
        // an unprefixed name that happens to start with the prefix: try the name as given too.
        find(bare).or_else(|| find(&lower))
    }

    /// The first name of a value, in enum order (the one the kernel prints).
    pub fn name_of(&self, kind: DelegateKind, value: u32) -> Option<&str> {
        self.table(kind)
            .iter()
            .find(|(_, v)| *v == value)
            .map(|(n, _)| n.as_str())
    }

    /// Parses one `--delegate-*` value: `any`, a list of names separated by `:` or `,`, or one
    /// number standing alone.
    pub fn parse(&self, kind: DelegateKind, text: &str) -> Result<Mask, PolicyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(PolicyError::Empty { kind });
        }
        let items: Vec<&str> = text.split([':', ',']).map(str::trim).collect();
        if let [single] = items.as_slice()
            && let Some(number) = parse_number(single)
        {
            return number.map(Mask).map_err(|()| PolicyError::BadNumber {
                kind,
                item: (*single).to_owned(),
            });
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
            } else if let Some(value) = self.value_of(kind, item) {
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
                    names_from: self.source,
                });
            }
        }
        Ok(mask)
    }

    /// Renders a mask the way the kernel parses it back: `any`, names in enum order joined by
    /// `:`, or one hexadecimal number when a bit has no name.
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

    /// The closest valid names to a misspelt one.
    fn suggest(&self, kind: DelegateKind, item: &str) -> Vec<String> {
        let lower = item.to_ascii_lowercase();
        let prefix = kind.kernel_prefix().to_ascii_lowercase();
        let bare = lower.strip_prefix(&prefix).unwrap_or(&lower);
        let mut scored: Vec<(usize, &str)> = self
            .table(kind)
            .iter()
            .map(|(name, _)| (edit_distance(bare, name), name.as_str()))
            .collect();
        scored.sort();
        let best = scored.first().map_or(usize::MAX, |s| s.0);
        let limit = (bare.len() / 3).max(2);
        scored
            .into_iter()
            .take_while(|(d, _)| *d == best && *d <= limit)
            .take(3)
            .map(|(_, n)| n.to_owned())
            .collect()
    }
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

/// A delegation value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{} {kind}: empty value; give names separated by `:`, `any`, or one number", kind.flag())]
    Empty { kind: DelegateKind },
    #[error("{} {value:?}: empty item between separators", kind.flag())]
    EmptyItem { kind: DelegateKind, value: String },
    #[error("{} {item:?}: not a valid number", kind.flag())]
    BadNumber { kind: DelegateKind, item: String },
    #[error(
        "{} {value:?}: the number {item:?} is mixed with names; the kernel would let a number replace every name before it (`hash:0x4` means just `array`), so give either names or one number",
        kind.flag()
    )]
    NumberMixedWithNames {
        kind: DelegateKind,
        value: String,
        item: String,
    },
    #[error("{} {item:?}: value {value} does not fit the kernel's 64-bit delegation mask", kind.flag())]
    OutOfRange {
        kind: DelegateKind,
        item: String,
        value: u32,
    },
    #[error("{} {item:?}: unknown {} (names from the {names_from}){}", kind.flag(), kind.item(), did_you_mean(suggestions))]
    UnknownName {
        kind: DelegateKind,
        item: String,
        suggestions: Vec<String>,
        names_from: NameSource,
    },
}

fn did_you_mean(suggestions: &[String]) -> String {
    match suggestions {
        [] => String::new(),
        [one] => format!("; did you mean `{one}`?"),
        many => format!(
            "; did you mean one of {}?",
            many.iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The delegation the demo counter needs and nothing more: BTF, one ARRAY map, one XDP program
/// loaded with `expected_attach_type = BPF_XDP`.
pub fn counter_delegation(names: &EnumNames) -> Delegation {
    let value = |kind, name| {
        names
            .value_of(kind, name)
            .unwrap_or_else(|| panic!("{name} missing from the {kind} table"))
    };
    let mut d = Delegation::default();
    for cmd in ["map_create", "prog_load", "btf_load"] {
        d.cmds = d.cmds.with(value(DelegateKind::Cmds, cmd));
    }
    d.maps = Mask::NONE.with(value(DelegateKind::Maps, "array"));
    d.progs = Mask::NONE.with(value(DelegateKind::Progs, "xdp"));
    d.attachs = Mask::NONE.with(value(DelegateKind::Attachs, "xdp"));
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> EnumNames {
        EnumNames::builtin()
    }

    #[test]
    fn names_are_case_insensitive_and_prefix_optional() {
        let n = names();
        for text in [
            "xdp",
            "XDP",
            "Xdp",
            "BPF_PROG_TYPE_XDP",
            "bpf_prog_type_xdp",
        ] {
            assert_eq!(
                n.parse(DelegateKind::Progs, text),
                Ok(Mask(1 << 6)),
                "{text}"
            );
        }
        assert_eq!(n.parse(DelegateKind::Attachs, "BPF_XDP"), Ok(Mask(1 << 37)));
        assert_eq!(
            n.parse(DelegateKind::Maps, "BPF_MAP_TYPE_ARRAY"),
            Ok(Mask(1 << 2))
        );
    }

    #[test]
    fn both_separators_and_any() {
        let n = names();
        assert_eq!(
            n.parse(DelegateKind::Cmds, "map_create:prog_load,btf_load"),
            Ok(Mask(1 | 1 << 5 | 1 << 18))
        );
        assert_eq!(n.parse(DelegateKind::Cmds, "any"), Ok(Mask::ANY));
        assert_eq!(n.parse(DelegateKind::Cmds, "ANY"), Ok(Mask::ANY));
    }

    #[test]
    fn a_lone_number_is_the_mask() {
        let n = names();
        assert_eq!(n.parse(DelegateKind::Maps, "0x4"), Ok(Mask(4)));
        assert_eq!(n.parse(DelegateKind::Maps, "010"), Ok(Mask(8)));
        assert_eq!(n.parse(DelegateKind::Maps, "12"), Ok(Mask(12)));
        assert!(matches!(
            n.parse(DelegateKind::Maps, "0xzz"),
            Err(PolicyError::BadNumber { .. })
        ));
    }

    #[test]
    fn numbers_mixed_with_names_are_refused_with_the_trap_explained() {
        let err = names().parse(DelegateKind::Maps, "hash:0x4").unwrap_err();
        assert!(matches!(err, PolicyError::NumberMixedWithNames { .. }));
        assert!(
            err.to_string().contains("`hash:0x4` means just `array`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_names_get_a_suggestion() {
        let err = names().parse(DelegateKind::Progs, "xdpp").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("--delegate-progs \"xdpp\": unknown program type"),
            "{text}"
        );
        assert!(text.contains("did you mean `xdp`?"), "{text}");
        let err = names().parse(DelegateKind::Cmds, "prog_lod").unwrap_err();
        assert!(
            err.to_string().contains("did you mean `prog_load`?"),
            "{err}"
        );
    }

    #[test]
    fn nonsense_gets_no_suggestion() {
        let err = names()
            .parse(DelegateKind::Maps, "qqqqqqqqqqqq")
            .unwrap_err();
        assert!(!err.to_string().contains("did you mean"), "{err}");
    }

    #[test]
    fn empty_values_and_items_are_refused() {
        let n = names();
        assert!(matches!(
            n.parse(DelegateKind::Maps, ""),
            Err(PolicyError::Empty { .. })
        ));
        assert!(matches!(
            n.parse(DelegateKind::Maps, "array::hash"),
            Err(PolicyError::EmptyItem { .. })
        ));
    }

    #[test]
    fn render_uses_enum_order_and_first_alias() {
        let n = names();
        let mask = n
            .parse(DelegateKind::Cmds, "btf_load:prog_run:map_create")
            .unwrap();
        assert_eq!(
            n.render(DelegateKind::Cmds, mask),
            "map_create:prog_test_run:btf_load"
        );
        assert_eq!(n.render(DelegateKind::Cmds, Mask::ANY), "any");
        assert_eq!(
            n.render(DelegateKind::Maps, Mask(1 << 63)),
            "0x8000000000000000"
        );
    }

    #[test]
    fn render_then_parse_is_identity_for_every_named_value() {
        let n = names();
        for kind in DelegateKind::ALL {
            for (_, value) in kind.builtin_table() {
                let mask = Mask::NONE.with(*value);
                assert_eq!(
                    n.parse(kind, &n.render(kind, mask)),
                    Ok(mask),
                    "{kind} {value}"
                );
            }
        }
    }

    #[test]
    fn counter_delegation_is_the_least_privilege_set() {
        let n = names();
        let d = counter_delegation(&n);
        assert_eq!(
            n.render(DelegateKind::Cmds, d.cmds),
            "map_create:prog_load:btf_load"
        );
        assert_eq!(n.render(DelegateKind::Maps, d.maps), "array");
        assert_eq!(n.render(DelegateKind::Progs, d.progs), "xdp");
        assert_eq!(n.render(DelegateKind::Attachs, d.attachs), "xdp");
    }
}
