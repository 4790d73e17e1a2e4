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
        .context("building demo-ebpf for bpfel-unknown-none (run scripts/setup-toolchain.sh if the toolchain is missing)")?;
    let out_dir = std::env::var_os("OUT_DIR").context("OUT_DIR not set")?;
    let object = std::path::Path::new(&out_dir).join("demo-ebpf");
    strip_dwarf(&object).with_context(|| format!("stripping DWARF from {}", object.display()))
}

/// Drops the DWARF sections and their relocation sections from the built object.
///
/// bpf-linker needs DWARF to emit BTF, but nothing reads it afterwards: the kernel takes `.BTF`
/// and `.BTF.ext` (whose line info points into BTF's own string table), and aya-obj would
/// otherwise parse the relocations of ~70 KB of DWARF every time the object is loaded or its
/// least-privilege policy computed: 0.4-0.5 ms of every sandbox launch on the development VM,
/// against ~0.1 ms for the stripped 7 KB object.
fn strip_dwarf(path: &std::path::Path) -> anyhow::Result<()> {
    use object::build::elf::SectionData;
    let data = std::fs::read(path)?;
    let mut builder = object::build::elf::Builder::read(&*data)?;
    let is_dwarf = |name: &[u8]| name.starts_with(b".debug_");
    let dwarf: Vec<_> = builder
        .sections
        .iter()
        .filter(|section| is_dwarf(&section.name))
        .map(|section| section.id())
        .collect();
    for section in builder.sections.iter_mut() {
        let relocates_dwarf = section
            .sh_info_section
            .is_some_and(|target| dwarf.contains(&target));
        if is_dwarf(&section.name) || relocates_dwarf {
            section.delete = true;
        }
    }
    builder.delete_orphans();
    // LLVM's BPF objects keep section names in .strtab, which object's writer cannot emit: give
    // the rewritten file its own section-name table.
    if !builder
        .sections
        .iter()
        .any(|section| matches!(section.data, SectionData::SectionString))
    {
        let names = builder.sections.add();
        names.name = b".shstrtab"[..].into();
        names.sh_type = object::elf::SHT_STRTAB;
        names.sh_addralign = 1;
        names.data = SectionData::SectionString;
    }
    let mut stripped = Vec::new();
    builder.write(&mut stripped)?;
    std::fs::write(path, stripped)?;
    Ok(())
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
