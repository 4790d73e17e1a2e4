//! The demo: load the XDP packet counter with a token, attach it, count one datagram.

use std::fmt;
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::path::PathBuf;

use aya::maps::{Array, MapData};
use aya_obj::generated::bpf_attach_type;

use crate::bpf::loader::{LoadError, TokenLoader};
use crate::bpf::token::{Token, TokenError};
use crate::diagnosis::{Diagnosed, Step};
use crate::policy::{DelegateKind, EnumNames};
use crate::sandbox::net::{self, LoopbackProbe, NetError};
use crate::sys;

/// The counter program (`demo-ebpf`), built for bpfel with BTF by `build.rs`.
pub static COUNTER_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/demo-ebpf"));

/// Name of the map and of the program inside [`COUNTER_OBJECT`].
pub const COUNTER_MAP: &str = "COUNTER";
pub const COUNTER_PROGRAM: &str = "xdp_counter";

/// `COUNTER[0]`, laid out as `demo-ebpf`'s `CounterValue`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterValue {
    pub packets: u64,
    pub last_ifindex: u32,
    pub _reserved: u32,
}

// SAFETY: repr(C), integers only, no implicit padding.
unsafe impl aya::Pod for CounterValue {}

/// Where the token comes from when no path is given: libbpf's rule.
pub fn default_token_path() -> PathBuf {
    std::env::var_os("LIBBPF_BPF_TOKEN_PATH")
        .map_or_else(|| PathBuf::from("/sys/fs/bpf"), PathBuf::from)
}

/// What one run of the trace does.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    /// The bpffs root to make the token from.
    pub token_path: PathBuf,
    /// The interface to attach to.
    pub interface: String,
    /// Send the test datagram (`false` for `-n`).
    pub send_traffic: bool,
    /// After attaching, wait until stdin closes before reading the counter again (so traffic
    /// from elsewhere, e.g. the host end of a veth, can be counted).
    pub hold: bool,
}

/// The counter before and after the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceReport {
    pub token_path: PathBuf,
    pub interface: String,
    pub ifindex: u32,
    pub before: CounterValue,
    pub after: CounterValue,
}

impl TraceReport {
    pub const fn delta(&self) -> u64 {
        self.after.packets.wrapping_sub(self.before.packets)
    }
}

impl fmt::Display for TraceReport {
    /// The reference tutorial's layout, kept so its users feel at home.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "token path     : {}", self.token_path.display())?;
        writeln!(
            f,
            "interface      : {} (ifindex={})",
            self.interface, self.ifindex
        )?;
        writeln!(f, "packets before : {}", self.before.packets)?;
        writeln!(f, "packets after  : {}", self.after.packets)?;
        writeln!(f, "delta          : {}", self.delta())?;
        writeln!(f, "last ifindex   : {}", self.after.last_ifindex)
    }
}

/// Creates the token, loads and attaches the counter, counts one datagram.
pub fn run_trace(options: &TraceOptions) -> Result<TraceReport, TraceError> {
    let ifindex = net::interface_index(&options.interface)?;
    let token = Token::from_bpffs_path(&options.token_path)?;
    log::debug!(
        "bpf(BPF_TOKEN_CREATE, bpffs={}) = token fd {}",
        options.token_path.display(),
        token.as_fd().as_raw_fd()
    );
    // Reading the fdinfo and the kernel's names is only for the trace.
    if log::log_enabled!(log::Level::Debug) {
        match token.allowed() {
            Ok(allowed) => {
                let names = EnumNames::for_running_kernel();
                for kind in DelegateKind::ALL {
                    log::debug!(
                        "token allows {}={}",
                        kind.fdinfo_key(),
                        names.render(kind, allowed.get(kind))
                    );
                }
            }
            Err(e) => log::debug!("token fdinfo unreadable: {e}"),
        }
    }

    let mut loaded = TokenLoader::new(&token).load(COUNTER_OBJECT)?;
    let map = loaded
        .take_map(COUNTER_MAP)
        .ok_or(TraceError::ObjectLayout("the object has no COUNTER map"))?;
    let counter: Array<MapData, CounterValue> = Array::try_from(map).map_err(TraceError::Map)?;
    let program = loaded
        .program(COUNTER_PROGRAM)
        .ok_or(TraceError::ObjectLayout(
            "the object has no xdp_counter program",
        ))?;

    let link = attach_xdp(program.fd(), ifindex, &options.interface)?;
    log::debug!(
        "bpf(BPF_LINK_CREATE, prog_fd={}, ifindex={ifindex}, attach_type=xdp) = link fd {}",
        program.fd().as_raw_fd(),
        link.as_raw_fd()
    );

    let probe = if options.send_traffic {
        Some(LoopbackProbe::new()?)
    } else {
        None
    };
    let before = read_counter(&counter)?;
    log::debug!(
        "counter before: packets={} last_ifindex={}",
        before.packets,
        before.last_ifindex
    );
    if options.hold {
        crate::logging::program_line(
            "token_trace",
            &format_args!(
                "XDP counter attached to {}; counting until stdin closes",
                options.interface
            ),
        );
        std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink()).map_err(|source| {
            NetError::Io {
                step: "waiting for stdin to close",
                source,
            }
        })?;
    }
    if let Some(probe) = &probe {
        probe.send_and_receive()?;
        log::debug!("datagram to {} received", probe.destination()?);
    }
    let after = read_counter(&counter)?;
    log::debug!(
        "counter after: packets={} last_ifindex={}",
        after.packets,
        after.last_ifindex
    );
    drop(link);
    log::debug!(
        "link closed: XDP program detached from {}",
        options.interface
    );
    Ok(TraceReport {
        token_path: options.token_path.clone(),
        interface: options.interface.clone(),
        ifindex,
        before,
        after,
    })
}

fn read_counter(counter: &Array<MapData, CounterValue>) -> Result<CounterValue, TraceError> {
    counter.get(&0, 0).map_err(TraceError::Map)
}

/// Attaches an XDP program through a BPF link; the program stays attached while the link fd is open.
pub fn attach_xdp(
    prog: std::os::fd::BorrowedFd<'_>,
    ifindex: u32,
    interface: &str,
) -> Result<OwnedFd, TraceError> {
    sys::bpf::link_create_ifindex(prog, ifindex, bpf_attach_type::BPF_XDP as u32, 0).map_err(
        |source| TraceError::Attach {
            interface: interface.to_owned(),
            source: Diagnosed::new(Step::AttachXdp, source),
        },
    )
}

/// Why the trace failed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("loading the counter: {0}")]
    Load(#[from] LoadError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("attaching XDP to {interface}: {source}")]
    Attach {
        interface: String,
        source: Diagnosed,
    },
    #[error("reading the counter map: {0}")]
    Map(aya::maps::MapError),
    #[error("unexpected counter object: {0}")]
    ObjectLayout(&'static str),
}

impl TraceError {
    /// Names the step for the one-line error message.
    pub const fn step(&self) -> &'static str {
        match self {
            Self::Token(_) => "token",
            Self::Load(_) | Self::ObjectLayout(_) => "load",
            Self::Net(_) => "network",
            Self::Attach { .. } => "attach",
            Self::Map(_) => "counter read",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn report_uses_the_reference_layout() {
        let report = TraceReport {
            token_path: PathBuf::from("/proc/self/fd/5"),
            interface: "lo".into(),
            ifindex: 1,
            before: CounterValue::default(),
            after: CounterValue {
                packets: 1,
                last_ifindex: 1,
                _reserved: 0,
            },
        };
        assert_eq!(
            report.to_string(),
            "token path     : /proc/self/fd/5\ninterface      : lo (ifindex=1)\npackets before : 0\npackets after  : 1\ndelta          : 1\nlast ifindex   : 1\n"
        );
    }

    #[test]
    fn embedded_object_matches_the_value_layout() {
        let obj = aya_obj::Object::parse(COUNTER_OBJECT).unwrap();
        let map = &obj.maps[COUNTER_MAP];
        assert_eq!(
            map.value_size() as usize,
            std::mem::size_of::<CounterValue>()
        );
        assert_eq!(map.max_entries(), 1);
        assert!(obj.programs.contains_key(COUNTER_PROGRAM));
        assert!(
            obj.btf.is_some(),
            "the counter must carry BTF (built with --btf)"
        );
    }

    #[test]
    fn default_token_path_follows_libbpf() {
        // Only checks the fallback when the variable is unset in the test environment.
        if std::env::var_os("LIBBPF_BPF_TOKEN_PATH").is_none() {
            assert_eq!(default_token_path(), Path::new("/sys/fs/bpf"));
        }
    }
}
