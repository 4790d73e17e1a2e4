//! Policy files: any text to `PolicyFile::parse`.
//!
//! An error's position must lie within the text; a file that is accepted must read back the same
//! when its delegation is written out again in the flag syntax.

#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use bpf_token_launcher::policy::{DelegateKind, Delegation, EnumNames, PolicyFile};
use libfuzzer_sys::fuzz_target;

static BUILTIN: LazyLock<EnumNames> = LazyLock::new(EnumNames::builtin);

fuzz_target!(|data: &[u8]| {
    // TOML is UTF-8: other bytes never reach the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    for names in [&*BUILTIN, EnumNames::for_running_kernel()] {
        match PolicyFile::parse(path, text, names) {
            Ok(file) => {
                assert_eq!(file.path, path);
                let again = write_out(&file.delegation, names);
                let reread = PolicyFile::parse(path, &again, names)
                    .unwrap_or_else(|e| panic!("{text:?} was accepted, {again:?} is not: {e}"));
                assert_eq!(
                    reread.delegation, file.delegation,
                    "{text:?} written out as {again:?}"
                );
            }
            Err(error) => {
                let message = error.to_string();
                assert!(!message.is_empty());
                if let Some(position) = error.position {
                    let lines = text.lines().count();
                    assert!(
                        (1..=lines + 1).contains(&position.line),
                        "line {} of a {lines}-line text: {message}",
                        position.line
                    );
                    let line = text.split('\n').nth(position.line - 1).unwrap_or_default();
                    assert!(
                        (1..=line.chars().count() + 1).contains(&position.column),
                        "column {} of line {} ({line:?}): {message}",
                        position.column,
                        position.line
                    );
                }
            }
        }
    }
});

/// The delegation as a policy file, one string per key.
fn write_out(delegation: &Delegation, names: &EnumNames) -> String {
    DelegateKind::ALL
        .into_iter()
        .map(|kind| {
            let value = names.render_value(kind, delegation.get(kind));
            format!("{} = \"{value}\"\n", kind.file_key())
        })
        .collect()
}
