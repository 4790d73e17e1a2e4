//! Compiles src/counter.bpf.c with clang for the bpf target into `$OUT_DIR/counter.bpf.o`, a
//! modern libbpf object: BTF (from -g) and a BTF-defined map in `.maps`. libbpf's own headers
//! (bpf_helpers.h) come from the libbpf-sys build (`DEP_BPF_INCLUDE`), so the object is built
//! against the same libbpf 1.7 that loads it.

use std::path::PathBuf;
use std::process::Command;

/// The clang that scripts/setup-toolchain.sh installs (the LLVM major bpf-linker uses).
const DEFAULT_CLANG: &str = "clang-22";

fn main() {
    let source = "src/counter.bpf.c";
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let libbpf_include =
        std::env::var("DEP_BPF_INCLUDE").expect("libbpf-sys exports its headers' directory");
    // <linux/bpf.h> includes <asm/types.h>, which Debian keeps in the multiarch directory that
    // clang does not search when it targets bpf.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets the target arch");
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| DEFAULT_CLANG.to_owned());
    let object = out.join("counter.bpf.o");
    let mut command = Command::new(&clang);
    command
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{libbpf_include}"))
        .arg(format!("-idirafter{multiarch}"))
        .args(["-c", source, "-o"])
        .arg(&object);
    let status = command.status().unwrap_or_else(|error| {
        panic!(
            "running {clang} ({error}): install it with scripts/setup-toolchain.sh \
             (apt-get install {DEFAULT_CLANG}) or set CLANG to a clang that targets bpf"
        )
    });
    assert!(status.success(), "{command:?} failed: {status}");
}
