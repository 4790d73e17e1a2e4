//! Policy files: a delegation too long to type, in TOML.
//!
//! ```toml
//! cmds = "map_create:prog_load:btf_load"   # the flag syntax...
//! maps = ["array", "hash"]                 # ...or one name per element
//! progs = "xdp"
//! attachs = "xdp"
//! ```
//!
//! A key that is left out delegates nothing of that kind. Every error names the line and column,
//! including unknown names inside a value, so the file is parsed with spans kept
//! (`toml::de::DeTable`) rather than through serde.
//!
//! [`AnnotatedPolicy`] writes such a file with comments (what `--learn` writes): one name per
//! line, each under the comment lines that say why it is there, and items left out as
//! commented-out lines under theirs.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::calls::PolicyItem;
use super::{DelegateKind, Delegation, EnumNames, Mask};

/// A parsed policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFile {
    pub path: PathBuf,
    pub delegation: Delegation,
}

impl PolicyFile {
    /// Reads and checks a policy file.
    /// The most a policy file may hold: four short lists.
    pub const MAX_LEN: u64 = 1 << 20;

    /// Reads and checks a policy file: a regular file, not a symbolic link, at most
    /// [`Self::MAX_LEN`] bytes of UTF-8 (see [`crate::sys::file::read_untrusted_file`]).
    pub fn read(path: &Path, names: &EnumNames) -> Result<Self, PolicyFileError> {
        let unreadable = |message: String| PolicyFileError {
            path: path.to_owned(),
            position: None,
            message,
        };
        let bytes = crate::sys::file::read_untrusted_file(path, Self::MAX_LEN)
            .map_err(|e| unreadable(format!("cannot read the policy file: {}", e.kind)))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| unreadable("the policy file is not UTF-8 text".to_owned()))?;
        Self::parse(path, &text, names)
    }

    /// Checks a policy file's text; `path` is used in messages.
    pub fn parse(path: &Path, text: &str, names: &EnumNames) -> Result<Self, PolicyFileError> {
        let error = |span: Option<Range<usize>>, message: String| PolicyFileError {
            path: path.to_owned(),
            position: span.map(|s| Position::of(text, s.start)),
            message,
        };
        let table = DeTable::parse(text).map_err(|e| error(e.span(), e.message().to_owned()))?;
        let mut delegation = Delegation::default();
        let mut seen = [false; 4];
        for (key, value) in table.get_ref() {
            let Some(kind) = DelegateKind::ALL
                .into_iter()
                .find(|k| k.file_key() == key.get_ref().as_ref())
            else {
                return Err(error(
                    Some(key.span()),
                    format!(
                        "unknown key `{}`; the keys are cmds, maps, progs and attachs",
                        key.get_ref()
                    ),
                ));
            };
            seen[kind as usize] = true;
            delegation.set(kind, parse_value(kind, value, names, &error)?);
        }
        if !seen.contains(&true) {
            return Err(error(
                None,
                "the file sets none of cmds, maps, progs, attachs: it would delegate nothing"
                    .to_owned(),
            ));
        }
        Ok(Self {
            path: path.to_owned(),
            delegation,
        })
    }
}

fn parse_value(
    kind: DelegateKind,
    value: &Spanned<DeValue<'_>>,
    names: &EnumNames,
    error: &impl Fn(Option<Range<usize>>, String) -> PolicyFileError,
) -> Result<Mask, PolicyFileError> {
    let check = |text: &str, span: Range<usize>| {
        names
            .parse(kind, text)
            .map_err(|e| error(Some(span), format!("{}: {e}", kind.file_key())))
    };
    match value.get_ref() {
        DeValue::String(text) => check(text, value.span()),
        DeValue::Array(items) => {
            let mut mask = Mask::NONE;
            for item in items {
                let DeValue::String(text) = item.get_ref() else {
                    return Err(error(
                        Some(item.span()),
                        format!(
                            "{}: array elements must be strings (names), found {}",
                            kind.file_key(),
                            item.get_ref().type_str()
                        ),
                    ));
                };
                if text.contains([':', ',']) {
                    return Err(error(
                        Some(item.span()),
                        format!(
                            "{}: one name per array element, found {text:?}",
                            kind.file_key()
                        ),
                    ));
                }
                mask = Mask(mask.0 | check(text, item.span())?.0);
            }
            Ok(mask)
        }
        other => Err(error(
            Some(value.span()),
            format!(
                "{}: expected a string (\"xdp:socket_filter\") or an array of names, found {}",
                kind.file_key(),
                other.type_str()
            ),
        )),
    }
}

/// A 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    fn of(text: &str, offset: usize) -> Self {
        let offset = offset.min(text.len());
        let before = text.get(..offset).unwrap_or(text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Self {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

/// A policy file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyFileError {
    pub path: PathBuf,
    pub position: Option<Position>,
    pub message: String,
}

impl fmt::Display for PolicyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(p) = self.position {
            write!(f, ":{}:{}", p.line, p.column)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A policy file to write: a comment header, then every item with its comments; inactive
/// items are written commented out, so the file says what was left out and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnotatedPolicy {
    /// Comment lines at the top (without the `#`).
    pub header: Vec<String>,
    pub entries: Vec<AnnotatedEntry>,
}

/// One item of an [`AnnotatedPolicy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotatedEntry {
    pub item: PolicyItem,
    /// Written as a name (delegated) or as a commented-out name (not delegated).
    pub active: bool,
    /// Comment lines above the item (without the `#`).
    pub notes: Vec<String>,
}

impl AnnotatedPolicy {
    /// The delegation the file gives: its active items.
    pub fn delegation(&self) -> Delegation {
        let active: Vec<PolicyItem> = self
            .entries
            .iter()
            .filter(|e| e.active)
            .map(|e| e.item)
            .collect();
        super::learn::delegation_of(&active)
    }

    /// The file's text. Every key is written, as an array with one name per line (an empty
    /// array delegates nothing of its kind); comments never contain a control character, so
    /// no text in them can end the comment and become a key. Items in kind order, then value
    /// order, which is the kernel's enum order.
    pub fn render(&self, names: &EnumNames) -> String {
        let mut text = String::new();
        for line in &self.header {
            push_comment(&mut text, "", line);
        }
        if !self.header.is_empty() {
            text.push('\n');
        }
        for kind in DelegateKind::ALL {
            let mut entries: Vec<&AnnotatedEntry> = self
                .entries
                .iter()
                .filter(|e| e.item.kind == kind)
                .collect();
            entries.sort_by_key(|e| e.item.value);
            if entries.is_empty() {
                text.push_str(&format!("{} = []\n", kind.file_key()));
                continue;
            }
            text.push_str(&format!("{} = [\n", kind.file_key()));
            for entry in entries {
                for note in &entry.notes {
                    push_comment(&mut text, "    ", note);
                }
                let value = item_value(entry.item, names);
                if entry.active {
                    text.push_str(&format!("    \"{value}\",\n"));
                } else {
                    text.push_str(&format!("    # \"{value}\",\n"));
                }
            }
            text.push_str("]\n");
        }
        text
    }
}

/// One comment line per line of `note`, control characters replaced.
fn push_comment(text: &mut String, indent: &str, note: &str) {
    for line in note.split('\n') {
        let clean: String = line
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        let clean = clean.trim_end();
        if clean.is_empty() {
            text.push_str(&format!("{indent}#\n"));
        } else {
            text.push_str(&format!("{indent}# {clean}\n"));
        }
    }
}

/// An item as an array element the reader takes back: its name, or (a value the kernel has no
/// name for, which the reader then refuses) its bit as a mask.
fn item_value(item: PolicyItem, names: &EnumNames) -> String {
    match names.name_of(item.kind, item.value) {
        Some(name) if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            name.to_owned()
        }
        _ => format!("{:#x}", Mask::NONE.with(item.value).0),
    }
}
