//! What a caller can see: every bpffs mounted in its mount namespace, the delegation the kernel
//! shows for it, and whether the caller can make a token from it (and if not, why), like
//! `bpftool token list`, but answered by trying: token creation depends on the superblock's user
//! namespace, which no file shows.

use std::fmt;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::bpf::token::{Token, TokenError};
use crate::mountinfo::{self, MountEntry};
use crate::policy::{self, DelegateKind, Delegation, EnumNames};

/// One bpffs mount.
#[derive(Debug)]
pub struct BpffsMount {
    pub mount_id: u64,
    pub mount_point: PathBuf,
    /// The `delegate_*` options exactly as mountinfo shows them (empty: no delegation).
    pub shown: Vec<(DelegateKind, String)>,
    pub token: Result<Delegation, TokenError>,
}

/// Every bpffs in the caller's mount table, in mount order.
pub fn bpffs_mounts() -> std::io::Result<Vec<BpffsMount>> {
    Ok(mountinfo::read(None)?
        .into_iter()
        .filter(|m| m.fs_type == "bpf")
        .map(probe)
        .collect())
}

fn probe(entry: MountEntry) -> BpffsMount {
    let shown = policy::delegate_options(&entry.super_options)
        .map(|(kind, value)| (kind, value.to_owned()))
        .collect();
    // The token lives only as long as it takes to read what it allows.
    let token = Token::from_bpffs_path(&entry.mount_point).and_then(|token| {
        token.allowed().map_err(|source| TokenError::Open {
            path: entry.mount_point.clone(),
            source,
        })
    });
    BpffsMount {
        mount_id: entry.mount_id,
        mount_point: entry.mount_point,
        shown,
        token,
    }
}

impl BpffsMount {
    /// A JSON object for scripts; masks in the token's fdinfo form (`any` or `0x..`).
    pub fn to_json(&self, names: &EnumNames) -> Value {
        let delegation: serde_json::Map<String, Value> = self
            .shown
            .iter()
            .map(|(kind, value)| (kind.option().to_owned(), Value::from(value.as_str())))
            .collect();
        let token = match &self.token {
            Ok(allowed) => {
                let mut token = serde_json::Map::new();
                token.insert("created".to_owned(), Value::Bool(true));
                for kind in DelegateKind::ALL {
                    let mask = allowed.get(kind);
                    token.insert(
                        kind.fdinfo_key().to_owned(),
                        Value::from(mask.fdinfo_form()),
                    );
                    token.insert(
                        format!("{}_names", kind.fdinfo_key()),
                        Value::from(names.render(kind, mask)),
                    );
                }
                Value::Object(token)
            }
            Err(error) => json!({
                "created": false,
                "errno": error.errno().map(|e| format!("{e:?}")),
                "reason": error.to_string(),
            }),
        };
        json!({
            "mount_id": self.mount_id,
            "mount_point": self.mount_point,
            "delegation": delegation,
            "token": token,
        })
    }

    /// The text form, given the names to decode masks with.
    pub fn display<'a>(&'a self, names: &'a EnumNames) -> impl fmt::Display + 'a {
        DisplayMount { mount: self, names }
    }
}

struct DisplayMount<'a> {
    mount: &'a BpffsMount,
    names: &'a EnumNames,
}

impl fmt::Display for DisplayMount<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.mount;
        writeln!(f, "{} (mount id {})", m.mount_point.display(), m.mount_id)?;
        if m.shown.is_empty() {
            writeln!(f, "  delegation : none")?;
        } else {
            let options: Vec<String> = m
                .shown
                .iter()
                .map(|(kind, value)| format!("{}={value}", kind.option()))
                .collect();
            writeln!(f, "  delegation : {}", options.join(" "))?;
        }
        match &m.token {
            Ok(allowed) => {
                let sets: Vec<String> = DelegateKind::ALL
                    .into_iter()
                    .map(|kind| {
                        format!(
                            "{}={}",
                            kind.fdinfo_key(),
                            self.names.render_value(kind, allowed.get(kind))
                        )
                    })
                    .collect();
                writeln!(f, "  token      : yes, {}", sets.join(" "))
            }
            Err(error) => writeln!(f, "  token      : no: {error}"),
        }
    }
}
