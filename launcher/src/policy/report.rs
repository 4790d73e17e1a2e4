//! A delegation as the binaries print it (`--print-policy`): the `delegate_*=` options, the
//! equivalent flags, and what it lets the sandbox reach ([`super::risk`]).

use std::path::Path;

use serde_json::Value;

use super::risk::{self, CapsKept, DelegationRisk};
use super::{DelegateKind, Delegation, EnumNames, export};

/// How `--print-policy` prints a policy (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The `delegate_*=` options, the flags and the risk lines (the default).
    #[default]
    Text,
    /// The `--delegate-*` flags on one line.
    Flags,
    /// A policy file for `--policy`.
    Toml,
    /// systemd unit-file lines (`PrivateBPF=yes`, `BPFDelegate*=`).
    Systemd,
    /// LXD instance options (`security.delegate_bpf.*`).
    Lxd,
    /// Incus instance options (`security.bpffs.delegate_*`).
    Incus,
    /// One JSON object with the options, the flags and the risk report.
    Json,
}

impl Format {
    /// The format the binaries' flags ask for: `--json` is `--format json`; neither is text.
    pub fn from_flags(json: bool, format: Option<Self>) -> Self {
        if json {
            Self::Json
        } else {
            format.unwrap_or_default()
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Ok(match text {
            "text" => Self::Text,
            "flags" => Self::Flags,
            "toml" => Self::Toml,
            "systemd" => Self::Systemd,
            "lxd" => Self::Lxd,
            "incus" => Self::Incus,
            "json" => Self::Json,
            other => {
                return Err(format!(
                    "{other:?}: the formats are text, flags, toml, systemd, lxd, incus, json"
                ));
            }
        })
    }
}

/// The policy, rendered once for text and JSON.
pub struct PolicyReport {
    delegation: Delegation,
    options: Vec<(DelegateKind, String)>,
    flags: Vec<String>,
    risk: DelegationRisk,
    object: Option<String>,
}

impl PolicyReport {
    /// `caps` is what the command keeps (token_userns_demo's --cap-add/--cap-drop; by default
    /// CAP_PERFMON and CAP_SYS_ADMIN are dropped).
    pub fn new(
        delegation: &Delegation,
        caps: CapsKept,
        names: &EnumNames,
        object: Option<&Path>,
    ) -> Self {
        Self {
            delegation: *delegation,
            options: delegation.fsconfig_options(names),
            flags: delegation.flags(names),
            risk: risk::assess(delegation, caps, names),
            object: object.map(|o| o.to_string_lossy().into_owned()),
        }
    }

    /// The report in `format`, ending with a newline.
    pub fn render(&self, format: Format, names: &EnumNames) -> String {
        let lines = |lines: Vec<String>| lines.iter().map(|l| format!("{l}\n")).collect();
        match format {
            Format::Text => self.text(),
            Format::Json => format!("{}\n", self.json()),
            Format::Flags => format!("{}\n", self.flags.join(" ")),
            Format::Toml => DelegateKind::ALL
                .into_iter()
                .map(|kind| {
                    // `none` for an empty set: a file says so rather than leave the key out.
                    let value = names.render_value(kind, self.delegation.get(kind));
                    format!("{} = \"{value}\"\n", kind.file_key())
                })
                .collect(),
            Format::Systemd => lines(export::systemd(&self.delegation, names)),
            Format::Lxd => lines(export::lxd(&self.delegation, names)),
            Format::Incus => lines(export::incus(&self.delegation, names)),
        }
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        for (kind, value) in &self.options {
            out.push_str(&format!("{}={value}\n", kind.option()));
        }
        out.push_str(&format!("flags: {}\n", self.flags.join(" ")));
        for line in self.risk.lines() {
            out.push_str(&format!("risk: {line}\n"));
        }
        out
    }

    pub fn json(&self) -> Value {
        let mut out = serde_json::Map::new();
        if let Some(object) = &self.object {
            out.insert("object".to_owned(), object.clone().into());
        }
        for kind in DelegateKind::ALL {
            let value = self
                .options
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, v)| v.clone());
            out.insert(kind.option().to_owned(), value.into());
        }
        out.insert("flags".to_owned(), self.flags.clone().into());
        out.insert(
            "risk".to_owned(),
            serde_json::to_value(&self.risk).expect("the risk report is plain data"),
        );
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy::PolicyFile;

    fn sample(names: &EnumNames) -> Delegation {
        Delegation {
            cmds: names
                .parse(DelegateKind::Cmds, "map_create:prog_load:btf_load")
                .unwrap(),
            maps: names.parse(DelegateKind::Maps, "array:hash").unwrap(),
            progs: names
                .parse(DelegateKind::Progs, "xdp:socket_filter")
                .unwrap(),
            attachs: names.parse(DelegateKind::Attachs, "none").unwrap(),
        }
    }

    fn report(delegation: &Delegation, names: &EnumNames) -> PolicyReport {
        PolicyReport::new(delegation, CapsKept::DROPPED, names, None)
    }

    #[test]
    fn toml_reads_back_as_the_same_delegation() {
        let names = EnumNames::builtin();
        for delegation in [sample(&names), Delegation::ANY] {
            let text = report(&delegation, &names).render(Format::Toml, &names);
            let file = PolicyFile::parse(Path::new("out.toml"), &text, &names)
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(file.delegation, delegation, "{text}");
        }
    }

    #[test]
    fn flags_read_back_as_the_same_delegation() {
        let names = EnumNames::builtin();
        let delegation = sample(&names);
        let text = report(&delegation, &names).render(Format::Flags, &names);
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut back = Delegation::default();
        for pair in words.chunks(2) {
            let kind = DelegateKind::ALL
                .into_iter()
                .find(|k| k.flag() == pair[0])
                .unwrap_or_else(|| panic!("unknown flag in {text}"));
            back.set(kind, names.parse(kind, pair[1]).unwrap());
        }
        assert_eq!(back, delegation, "{text}");
    }

    #[test]
    fn lxd_and_incus_values_read_back_as_the_same_delegation() {
        let names = EnumNames::builtin();
        let delegation = sample(&names);
        fn lxd_key(kind: DelegateKind) -> String {
            let key = match kind {
                DelegateKind::Cmds => "cmd_types",
                DelegateKind::Maps => "map_types",
                DelegateKind::Progs => "prog_types",
                DelegateKind::Attachs => "attach_types",
            };
            format!("security.delegate_bpf.{key}=")
        }
        fn incus_key(kind: DelegateKind) -> String {
            format!("security.bpffs.{}=", kind.option())
        }
        type KeyOf = fn(DelegateKind) -> String;
        let cases: [(Format, KeyOf); 2] = [(Format::Lxd, lxd_key), (Format::Incus, incus_key)];
        for (format, key_of) in cases {
            let text = report(&delegation, &names).render(format, &names);
            let mut back = Delegation::default();
            for kind in DelegateKind::ALL {
                if let Some(value) = text
                    .lines()
                    .find_map(|l| l.strip_prefix(key_of(kind).as_str()))
                {
                    back.set(kind, names.parse(kind, value).unwrap());
                }
            }
            assert_eq!(back, delegation, "{format:?}: {text}");
        }
    }

    #[test]
    fn systemd_lines_name_every_delegated_item() {
        let names = EnumNames::builtin();
        let text = report(&sample(&names), &names).render(Format::Systemd, &names);
        assert!(text.starts_with("PrivateBPF=yes\n"), "{text}");
        assert!(
            text.contains("BPFDelegateCommands=BPFMapCreate,BPFProgLoad,BPFBtfLoad\n"),
            "{text}"
        );
        assert!(
            text.contains("BPFDelegateMaps=BPFMapTypeHash,BPFMapTypeArray\n"),
            "{text}"
        );
        assert!(!text.contains("BPFDelegateAttachments"), "{text}");
    }

    #[test]
    fn formats_are_named_as_the_flag_takes_them() {
        for name in ["text", "flags", "toml", "systemd", "lxd", "incus", "json"] {
            assert!(name.parse::<Format>().is_ok(), "{name}");
        }
        assert!("yaml".parse::<Format>().unwrap_err().contains("systemd"));
    }
}
