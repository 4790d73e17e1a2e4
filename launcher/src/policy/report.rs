//! A delegation as the binaries print it (`--print-policy`): the `delegate_*=` options, the
//! equivalent flags, and what it lets the sandbox reach ([`super::risk`]).

use std::path::Path;

use serde_json::Value;

use super::risk::{self, CapsKept, DelegationRisk};
use super::{DelegateKind, Delegation, EnumNames};

/// The policy, rendered once for text and JSON.
pub struct PolicyReport {
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
            options: delegation.fsconfig_options(names),
            flags: delegation.flags(names),
            risk: risk::assess(delegation, caps, names),
            object: object.map(|o| o.to_string_lossy().into_owned()),
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
