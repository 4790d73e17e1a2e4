//! What a user's own test suite does with stock aya 0.14 (from crates.io, which has no BPF token
//! support): load an object with `EbpfLoader`, attach a program, make it count, read its map.
//! Nothing here knows about tokens; inside `token_userns_demo -- ...` the sandbox's bpf()
//! gateway gives these calls the delegated token.

use std::net::UdpSocket;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use aya::EbpfLoader;
use aya::maps::Array;
use aya::programs::{RawTracePoint, Xdp, XdpMode};

/// `COUNTER[0]` of the demo XDP counter (demo-ebpf's `CounterValue`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CounterValue {
    pub packets: u64,
    pub last_ifindex: u32,
    pub _reserved: u32,
}

// SAFETY: repr(C), integers only, no implicit padding.
unsafe impl aya::Pod for CounterValue {}

/// Loads the XDP counter object, attaches `xdp_counter` to `interface`, sends one datagram to
/// a socket bound on 127.0.0.1 and returns how many packets the counter saw meanwhile.
pub fn count_one_datagram(object: &[u8], interface: &str) -> anyhow::Result<u64> {
    let mut ebpf = EbpfLoader::new()
        .load(object)
        .context("EbpfLoader::load of the XDP counter")?;
    let program: &mut Xdp = ebpf
        .program_mut("xdp_counter")
        .ok_or_else(|| anyhow!("no program xdp_counter in the object"))?
        .try_into()?;
    program.load().context("loading xdp_counter")?;
    program
        .attach(interface, XdpMode::Default)
        .with_context(|| format!("attaching xdp_counter to {interface}"))?;
    let read = |ebpf: &aya::Ebpf| -> anyhow::Result<u64> {
        let map: Array<_, CounterValue> = Array::try_from(
            ebpf.map("COUNTER")
                .ok_or_else(|| anyhow!("no map COUNTER in the object"))?,
        )?;
        Ok(map.get(&0, 0).context("reading COUNTER[0]")?.packets)
    };
    let before = read(&ebpf)?;
    let receiver = UdpSocket::bind("127.0.0.1:0").context("binding the receiver")?;
    receiver.set_read_timeout(Some(Duration::from_secs(2)))?;
    let sender = UdpSocket::bind("127.0.0.1:0").context("binding the sender")?;
    sender
        .send_to(b"stock aya", receiver.local_addr()?)
        .context("sending the datagram")?;
    let mut buf = [0u8; 16];
    receiver
        .recv_from(&mut buf)
        .context("receiving the datagram")?;
    Ok(read(&ebpf)? - before)
}

/// Loads the raw tracepoint object, attaches `count_execs` to `sched_process_exec`, runs
/// `program` once and returns how many execs the machine made meanwhile (at least that one).
pub fn count_execs(object: &[u8], program: &str) -> anyhow::Result<u64> {
    let mut ebpf = EbpfLoader::new()
        .load(object)
        .context("EbpfLoader::load of the raw tracepoint object")?;
    let tracepoint: &mut RawTracePoint = ebpf
        .program_mut("count_execs")
        .ok_or_else(|| anyhow!("no program count_execs in the object"))?
        .try_into()?;
    tracepoint.load().context("loading count_execs")?;
    tracepoint
        .attach("sched_process_exec")
        .context("attaching count_execs to sched_process_exec")?;
    let read = |ebpf: &aya::Ebpf| -> anyhow::Result<u64> {
        let map: Array<_, u64> = Array::try_from(
            ebpf.map("EXECS")
                .ok_or_else(|| anyhow!("no map EXECS in the object"))?,
        )?;
        map.get(&0, 0).context("reading EXECS[0]")
    };
    let before = read(&ebpf)?;
    let status = std::process::Command::new(program)
        .status()
        .with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("{program} {status}");
    }
    Ok(read(&ebpf)? - before)
}
