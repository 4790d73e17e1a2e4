//! Builds the demo XDP counter (`demo-ebpf`) for the BPF target with BTF, through aya-build.
//!
//! Needs the nightly toolchain with rust-src and bpf-linker built against the nightly's LLVM:
//! `scripts/setup-toolchain.sh` installs them.

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata()?;
    check_linker()?;
    let package = aya_build::Package {
        name: "demo-ebpf",
        root_dir: &metadata,
        no_default_features: false,
        features: &[],
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
        .context("building demo-ebpf for bpfel-unknown-none (run scripts/setup-toolchain.sh if the toolchain is missing)")
}

fn cargo_metadata() -> anyhow::Result<String> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let root = std::path::Path::new(&manifest_dir).join("../demo-ebpf");
    let root = root
        .canonicalize()
        .with_context(|| format!("finding {}", root.display()))?;
    Ok(root
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", root.display()))?
        .to_owned())
}

/// bpf-linker must exist and be built against the same LLVM major as the nightly rustc: an object
/// from a newer LLVM fails to link with an error that does not say so.
fn check_linker() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=PATH");
    let linker = std::process::Command::new("bpf-linker")
        .arg("--version")
        .output();
    let Ok(linker) = linker else {
        return Err(anyhow!(
            "bpf-linker not found on PATH; run scripts/setup-toolchain.sh"
        ));
    };
    let rustc = std::process::Command::new("rustup")
        .args(["run", "nightly", "rustc", "-vV"])
        .output();
    let Ok(rustc) = rustc else {
        return Err(anyhow!(
            "the nightly toolchain is missing; run scripts/setup-toolchain.sh"
        ));
    };
    let rustc_llvm = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix("LLVM version: ")
                .map(|v| v.split('.').next().unwrap_or("").to_owned())
        });
    let linker_text = String::from_utf8_lossy(&linker.stdout).into_owned();
    if let Some(major) = rustc_llvm
        && !linker_text.is_empty()
        && let Ok(llvm_config) =
            std::process::Command::new(format!("/usr/lib/llvm-{major}/bin/llvm-config"))
                .arg("--version")
                .output()
        && !llvm_config.status.success()
    {
        return Err(anyhow!(
            "nightly rustc uses LLVM {major} but /usr/lib/llvm-{major} is missing, so bpf-linker cannot match it; run scripts/setup-toolchain.sh"
        ));
    }
    Ok(())
}
