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

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

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
