//! The supervisor and its sandbox, one module per kernel object or role:
//! - [`supervisor`]: the processes put together; [`userns`]: the sandbox's user namespace and id
//!   maps; [`channel`]: the typed supervisor/sandbox protocol over a `SOCK_SEQPACKET` pair;
//!   [`placement`]: which CPU each side runs on during setup;
//! - [`pidns`]: the command's PID namespace and its init; [`relay`]: waiting for a child while
//!   forwarding signals;
//! - [`confine`]: what the command may not do as root of its namespaces (capabilities, the
//!   seccomp filter, the covered cgroup2 mounts); [`cgroup`]: its resource limits; [`net`]:
//!   interfaces, the veth and the test datagram;
//! - [`gateway`]: the init's `bpf()` gateway for token-unaware loaders; [`exec`]: the same
//!   gateway without the sandbox, for a bpffs someone else delegated (`token_exec`); [`learn`]:
//!   `--learn`, the runs that find the least privilege a command needs;
//! - [`status`]: `--json-status` events; [`preflight`]: `--check`.

pub mod cgroup;
pub mod channel;
pub mod confine;
pub mod exec;
pub mod gateway;
pub mod learn;
pub mod net;
pub mod pidns;
pub mod placement;
pub mod preflight;
pub mod relay;
pub mod status;
pub mod supervisor;
pub mod userns;
