#!/usr/bin/env bash
# Idempotent toolchain setup for building the eBPF side and running the root tests.
#
# Installs only what is missing:
#   - Debian packages LLVM 22 (bpf-linker links against it), iproute2 (tests inspect links),
#     and for the libbpf client of tests/libbpf.rs: clang 22 (its BPF object), libelf-dev,
#     zlib1g-dev, make and pkg-config (libbpf-sys builds libbpf 1.7 from its sources)
#   - the nightly toolchain's rust-src (the eBPF crate is built with -Z build-std=core)
#   - the x86_64-unknown-linux-musl target (the project's binaries are static)
#   - bpf-linker 0.13.0 built against LLVM 22
# and checks that the nightly rustc and bpf-linker agree on the LLVM major version: an object
# produced by a newer LLVM than the linker's cannot be linked, and the error from the linker is
# far from obvious.
set -euo pipefail

LLVM_MAJOR=22
BPF_LINKER_VERSION=0.13.0
APT_PACKAGES=(fonts-dejavu-core 
  "llvm-${LLVM_MAJOR}-dev" "libpolly-${LLVM_MAJOR}-dev" libzstd-dev zlib1g-dev libxml2-dev
  iproute2 procps
  "clang-${LLVM_MAJOR}" libelf-dev make pkg-config
)

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

need_root_for_apt() {
  if [[ $(id -u) -ne 0 ]]; then
    die "missing Debian packages ($*); run this script as root or install them with apt-get"
  fi
}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  need_root_for_apt "${missing[*]}"
  say "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "Debian packages present"
fi

command -v rustup >/dev/null || die "rustup not found: install the Rust toolchain first"
if ! rustup toolchain list | grep -q '^nightly'; then
  say "installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
  say "adding rust-src to nightly"
  rustup component add rust-src --toolchain nightly
else
  say "nightly rust-src present"
fi

# `cargo xtask` builds static musl executables with the default toolchain when this target is there.
if ! rustup target list --installed | grep -qx 'x86_64-unknown-linux-musl'; then
  say "adding the x86_64-unknown-linux-musl target"
  # Not fatal: without it, cargo xtask builds for x86_64-unknown-linux-gnu (dynamically linked,
  # ~1 ms slower to start) and says so.
  rustup target add x86_64-unknown-linux-musl ||
    say "warning: could not add the musl target; cargo xtask will build glibc binaries"
else
  say "musl target present"
fi

nightly_llvm=$(rustc +nightly -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
if [[ "$nightly_llvm" != "$LLVM_MAJOR" ]]; then
  die "nightly rustc uses LLVM $nightly_llvm but bpf-linker is built against LLVM $LLVM_MAJOR; \
set LLVM_MAJOR in $0 to $nightly_llvm (and install llvm-$nightly_llvm-dev) or pin a nightly with LLVM $LLVM_MAJOR"
fi

installed_linker=$(bpf-linker --version 2>/dev/null | awk '{print $2}' || true)
if [[ "$installed_linker" != "$BPF_LINKER_VERSION" ]]; then
  say "installing bpf-linker $BPF_LINKER_VERSION against LLVM $LLVM_MAJOR (about 80 s on 2 cores)"
  # bpf-linker's build script reads LLVM_PREFIX; without it, it finds an older llvm-config on PATH.
  # From / so that no project configuration applies: bpf-linker links the host's LLVM.
  (cd / && LLVM_PREFIX="/usr/lib/llvm-${LLVM_MAJOR}" cargo install "bpf-linker@${BPF_LINKER_VERSION}" \
    --locked --no-default-features --features "llvm-${LLVM_MAJOR}")
else
  say "bpf-linker $installed_linker present"
fi
say "toolchain ready (nightly LLVM $nightly_llvm, bpf-linker $BPF_LINKER_VERSION)"
