//! Every diagnosis the library can give must be produced by some test: for each cause in
//! `ALL_CAUSES`, the text `Cause::<Name>` must appear in a test file under the workspace's
//! `tests/` folder. This file only lists the causes generically, so it is left out of the search.

use std::path::{Path, PathBuf};

use bpf_token_launcher::diagnosis::ALL_CAUSES;
use libtest_mimic::Failed;

use crate::harness::Context as _;

pub fn every_diagnosis_is_produced_by_a_test() -> Result<(), Failed> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let this_file = manifest.join("src/coverage.rs");
    let mut files = Vec::new();
    collect_rs_files(&manifest.join(".."), &mut files)?;
    let texts: Vec<(PathBuf, String)> = files
        .into_iter()
        .filter(|f| f.canonicalize().ok() != this_file.canonicalize().ok())
        .map(|f| std::fs::read_to_string(&f).map(|t| (f, t)))
        .collect::<Result<_, _>>()
        .context("reading the test files")?;
    let missing: Vec<String> = ALL_CAUSES
        .into_iter()
        .map(|cause| format!("Cause::{cause:?}"))
        .filter(|needle| !texts.iter().any(|(_, text)| mentions(text, needle)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} of {} diagnoses are produced by no test under tests/: {}",
        missing.len(),
        ALL_CAUSES.len(),
        missing.join(", ")
    )
    .into())
}

/// `needle` as a whole identifier path (`Cause::TokenNotBpffs` is not in `Cause::TokenNotBpffsRoot`).
fn mentions(text: &str, needle: &str) -> bool {
    text.match_indices(needle).any(|(at, _)| {
        !text[at + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

fn collect_rs_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Failed> {
    for entry in std::fs::read_dir(dir).context(&dir.display().to_string())? {
        let path = entry.context("read_dir")?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" {
                collect_rs_files(&path, out)?;
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
    Ok(())
}
