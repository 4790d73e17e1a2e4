//! BPF token delegation: a supervisor that hands a user-namespace sandbox a delegated bpffs, and
//! a token-aware loader on top of aya.
//!
//! Layout, one module per kernel object, grouped by who uses it:
//! - [`sys`]: every raw system call, one thin wrapper per command; [`diagnosis`]: what each
//!   failure of one means and how to fix it;
//! - [`policy`]: the delegation sets, their names (read from the running kernel by
//!   [`bpf::btf`]), policy files, the least privilege of an object, what a delegation lets a
//!   sandbox reach ([`policy::risk`]) and what a caller's `bpf()` call needs ([`policy::calls`]);
//! - [`bpf`]: the token library: the delegated bpffs, BTF, tokens and what they allow, the bpffs
//!   mounts a caller sees, what an eBPF object needs and loading it with a token
//!   ([`bpf::loader::TokenLoader`]);
//! - [`sandbox`]: the supervisor and its sandbox: user namespace, parent/child channel, PID
//!   namespace and its init, confinement of the command (capabilities, seccomp), resource
//!   limits, veth, the `bpf()` gateway (also without the sandbox: `token_exec`,
//!   [`sandbox::exec`]), `--json-status` and `--check`;
//! - [`mountinfo`]: the mount table, where the kernel shows a bpffs's delegation;
//! - [`counter`]: the demo XDP counter end to end; [`logging`]: the binaries' `-v` trace.
//!
//! The library never exits the process; the binaries turn errors into exit codes. (The one
//! exception is the forked sandbox child, which must not return into the caller's code.)

pub mod bpf;
pub mod counter;
pub mod diagnosis;
pub mod logging;
pub mod mountinfo;
pub mod policy;
pub mod sandbox;
pub mod sys;
