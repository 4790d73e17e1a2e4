//! BPF token delegation: a supervisor that hands a user-namespace sandbox a delegated bpffs, and
//! a token-aware loader on top of aya.
//!
//! Layout, one module per kernel object:
//! - [`sys`]: every raw system call, one thin wrapper per command; [`diagnosis`]: what each
//!   failure of one means and how to fix it;
//! - [`userns`]: the sandbox's user namespace and id maps;
//! - [`channel`]: the typed supervisor/sandbox protocol over a `SOCK_SEQPACKET` pair;
//! - [`bpffs`]: the delegated bpffs (opened by the sandbox, delegated and created by the supervisor);
//! - [`policy`]: the delegation sets, their names ([`btf`] reads them from the running kernel),
//!   policy files, and the least privilege of an object;
//! - [`mountinfo`]: the mount table, where the kernel shows a bpffs's delegation;
//! - [`token`]: BPF tokens and what they allow; [`inventory`]: the bpffs mounts a caller sees;
//! - [`object`] and [`loader`]: what an eBPF object needs, and loading it with a token;
//! - [`net`]: interfaces and the test datagram;
//! - [`counter`]: the demo XDP counter end to end;
//! - [`relay`]: waiting for a child while forwarding signals; [`pidns`]: the command's PID
//!   namespace and its init; [`cgroup`]: the sandbox's resource limits; [`gateway`]: the init's
//!   `bpf()` gateway, which gives token-unaware loaders the token and explains the calls a
//!   delegation does not cover ([`policy::calls`] decodes them);
//! - [`supervisor`]: the processes put together; [`status`]: `--json-status` events;
//!   [`preflight`]: `--check`, whether a machine can run it all.
//!
//! The library never exits the process; the binaries turn errors into exit codes. (The one
//! exception is the forked sandbox child, which must not return into the caller's code.)

pub mod bpffs;
pub mod btf;
pub mod cgroup;
pub mod channel;
pub mod confine;
pub mod counter;
pub mod diagnosis;
pub mod gateway;
pub mod inventory;
pub mod loader;
pub mod logging;
pub mod mountinfo;
pub mod net;
pub mod object;
pub mod pidns;
pub mod placement;
pub mod policy;
pub mod preflight;
pub mod relay;
pub mod status;
pub mod supervisor;
pub mod sys;
pub mod token;
pub mod userns;
