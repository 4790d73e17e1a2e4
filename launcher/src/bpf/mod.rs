//! The token library, usable without the sandbox (by aya users who hold a delegated bpffs
//! elsewhere): [`bpffs`], the delegated bpffs; [`btf`], the kernel's BTF and its enums;
//! [`token`], BPF tokens and what they allow; [`inventory`], the bpffs mounts a caller sees;
//! [`object`], what an eBPF object needs; [`loader`], loading it with a token.

pub mod bpffs;
pub mod btf;
pub mod inventory;
pub mod loader;
pub mod object;
pub mod token;
