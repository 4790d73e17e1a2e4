//! The delegation policy: which commands, map types, program types and attach types a bpffs
//! instance hands to the tokens created from it.
//!
//! One parser serves every flag. The kernel's own parser (`bpf_parse_param` in
//! `kernel/bpf/inode.c`) has a trap: a number replaces every item before it in the same value
//! (`hash:0x4` means just `array`). This parser refuses numbers mixed with names instead.

use std::fmt;

mod aliases;
mod builtin;
pub mod calls;
pub mod export;
mod file;
mod from_object;
pub mod learn;
mod names;
pub mod report;
pub mod risk;

pub use aliases::AliasOrigin;
pub use file::{AnnotatedEntry, AnnotatedPolicy, PolicyFile, PolicyFileError};
pub use from_object::{ObjectPolicyError, least_privilege, least_privilege_for_elf};
pub use names::{EnumNames, NameSource, Resolved};

/// One of the four `delegate_*` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

    /// The kernel enum the names come from.
    pub const fn kernel_enum(self) -> &'static str {
        match self {
            Self::Cmds => "bpf_cmd",
            Self::Maps => "bpf_map_type",
            Self::Progs => "bpf_prog_type",
            Self::Attachs => "bpf_attach_type",
        }
    }

    /// The key in a policy file.
    pub const fn file_key(self) -> &'static str {
        match self {
            Self::Cmds => "cmds",
            Self::Maps => "maps",
            Self::Progs => "progs",
            Self::Attachs => "attachs",
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

    /// The form a token's fdinfo uses: `any` or `0x..`.
    pub fn fdinfo_form(self) -> String {
        if self.is_any() {
            "any".to_owned()
        } else {
            format!("{:#x}", self.0)
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

    /// Everything: what `any` in all four options gives.
    pub const ANY: Self = Self {
        cmds: Mask::ANY,
        maps: Mask::ANY,
        progs: Mask::ANY,
        attachs: Mask::ANY,
    };

    /// The `fsconfig` options that set this delegation, in a fixed order: one per non-empty
    /// set, or several when its names are too long for one value. `fsconfig` copies at most
    /// 255 bytes of a value (`strndup_user(value, 256)` in `fs/fsopen.c`, EINVAL beyond), and
    /// the kernel ORs repeated options into the mask, so a long list is split at `:`.
    pub fn fsconfig_options(&self, names: &EnumNames) -> Vec<(DelegateKind, String)> {
        const FSCONFIG_VALUE_MAX: usize = 255;
        let mut options = Vec::new();
        for kind in DelegateKind::ALL {
            let mask = self.get(kind);
            if mask.is_empty() {
                continue;
            }
            let mut value = String::new();
            for item in names.render(kind, mask).split(':') {
                if !value.is_empty() && value.len() + 1 + item.len() > FSCONFIG_VALUE_MAX {
                    options.push((kind, std::mem::take(&mut value)));
                }
                if !value.is_empty() {
                    value.push(':');
                }
                value.push_str(item);
            }
            options.push((kind, value));
        }
        options
    }

    /// The `fsconfig` options as numbers, one per non-empty set: `any`, or the mask as `0x..`
    /// (the kernel takes an item that is not a name as a number). Exact whatever names the
    /// running kernel has, short, and built without reading its BTF, which is what the
    /// supervisor sends; [`Self::fsconfig_options`] is the form for people.
    pub fn fsconfig_masks(&self) -> Vec<(DelegateKind, String)> {
        DelegateKind::ALL
            .into_iter()
            .filter(|kind| !self.get(*kind).is_empty())
            .map(|kind| (kind, self.get(kind).fdinfo_form()))
            .collect()
    }

    /// The command-line flags that give this delegation, `none` for empty sets.
    pub fn flags(&self, names: &EnumNames) -> Vec<String> {
        DelegateKind::ALL
            .into_iter()
            .flat_map(|kind| {
                [
                    kind.flag().to_owned(),
                    names.render_value(kind, self.get(kind)),
                ]
            })
            .collect()
    }

    /// The `delegate_*` options `/proc/*/mountinfo` shows for a bpffs created with this
    /// delegation, in the kernel's order.
    pub fn as_mounted(&self, names: &EnumNames) -> Vec<(DelegateKind, String)> {
        DelegateKind::ALL
            .into_iter()
            .filter_map(|kind| Some((kind, names.render_as_mounted(kind, self.get(kind))?)))
            .collect()
    }

    /// The delegation in a mount's super options (`rw,uid=0,delegate_cmds=...`), as shown by
    /// `/proc/*/mountinfo`. Other options are ignored.
    pub fn from_mount_options(options: &str, names: &EnumNames) -> Result<Self, PolicyError> {
        let mut delegation = Self::default();
        for (kind, value) in delegate_options(options) {
            let mask = names.parse_as_mounted(kind, value)?;
            delegation.set(kind, Mask(delegation.get(kind).0 | mask.0));
        }
        Ok(delegation)
    }

    /// What a token created from this delegation shows in its fdinfo.
    pub fn as_token_shows(&self, names: &EnumNames) -> Self {
        let mut shown = *self;
        for kind in DelegateKind::ALL {
            shown.set(kind, names.as_token_shows(kind, self.get(kind)));
        }
        shown
    }

    /// Checks that a mount's super options show exactly this delegation, so a kernel that
    /// ignored or changed an option is caught before anything uses the bpffs.
    pub fn check_mounted(&self, options: &str, names: &EnumNames) -> Result<(), PolicyMismatch> {
        let shown: Vec<(DelegateKind, &str)> = delegate_options(options).collect();
        let differences: Vec<OptionDifference> = DelegateKind::ALL
            .into_iter()
            .filter_map(|kind| {
                let expected = names.render_as_mounted(kind, self.get(kind));
                let found = shown
                    .iter()
                    .filter(|(k, _)| *k == kind)
                    .map(|(_, v)| (*v).to_owned())
                    .reduce(|a, b| format!("{a},{b}"));
                (expected != found).then_some(OptionDifference {
                    kind,
                    expected,
                    found,
                })
            })
            .collect();
        if differences.is_empty() {
            Ok(())
        } else {
            Err(PolicyMismatch { differences })
        }
    }
}

/// The `delegate_*=value` pairs of a comma-separated option string (a mount's super options).
pub fn delegate_options(options: &str) -> impl Iterator<Item = (DelegateKind, &str)> {
    options.split(',').filter_map(|option| {
        let (key, value) = option.split_once('=')?;
        let kind = DelegateKind::ALL.into_iter().find(|k| k.option() == key)?;
        Some((kind, value))
    })
}

/// A mounted bpffs whose delegation is not the one asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the kernel shows a different delegation than was asked for: {}; refusing to use this bpffs (a kernel that ignores or changes delegate_* options must not get through)",
    differences.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
)]
pub struct PolicyMismatch {
    pub differences: Vec<OptionDifference>,
}

/// One `delegate_*` option that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionDifference {
    pub kind: DelegateKind,
    /// What mountinfo should show, `None` for nothing.
    pub expected: Option<String>,
    pub found: Option<String>,
}

impl fmt::Display for OptionDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| {
            v.as_ref()
                .map_or_else(|| "nothing".to_owned(), |v| format!("`{v}`"))
        };
        write!(
            f,
            "{} expected {}, mountinfo shows {}",
            self.kind.option(),
            show(&self.expected),
            show(&self.found)
        )
    }
}

/// A delegation value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{} {kind}: empty value; give names separated by `:`, `any`, `none`, or one number", kind.flag())]
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
    #[error(
        "{} {item:?}: sets bit(s) {} that this kernel's `enum {}` has no value for (it knows 0..{}); the kernel would accept them silently and never show them, so they are refused (`any` delegates everything)",
        kind.flag(),
        bits.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
        kind.kernel_enum(),
        known.saturating_sub(1)
    )]
    UnknownBits {
        kind: DelegateKind,
        item: String,
        bits: Vec<u32>,
        known: u32,
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

#[cfg(test)]
mod tests;
