//! Measurements for `cargo xtask bench`, not shipped. Prints one JSON object per run.
//!
//! - `token-load RUNS`: in a token sandbox (`token_userns_demo -- bench_counter token-load 30`):
//!   load the counter through [`TokenLoader`] with the token from `LIBBPF_BPF_TOKEN_PATH`, attach
//!   it to `lo`, detach; the time of each step.
//! - `aya-load RUNS`: as root on the host, in a fresh network namespace: the same with stock
//!   aya's `EbpfLoader` and `Xdp::attach`.
//! - `aya-load-here RUNS`: the same in the caller's own network namespace, for a token sandbox
//!   whose bpf() gateway gives stock aya the token (`token_userns_demo -- bench_counter
//!   aya-load-here 30`).
//! - `gateway-calls RUNS`: in a token sandbox: RUNS pairs of `BPF_MAP_CREATE` (an array), one
//!   carrying the token itself, one without (which the gateway patches), interleaved; the
//!   median and 90th percentile of each in µs (`null` when the call fails, as the one without a
//!   token does under `--no-gateway`).
//! - `flood DATAGRAMS [OBJECT]`: in a token sandbox: send DATAGRAMS UDP datagrams over `lo` from
//!   two threads without the counter, then again with it attached, and compare its delta with the
//!   number sent. OBJECT replaces the embedded counter (the bench's non-atomic variant).

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use aya::maps::{Array, MapData};
use bpf_token_launcher::bpf::loader::TokenLoader;
use bpf_token_launcher::bpf::token::Token;
use bpf_token_launcher::counter::{
    self, COUNTER_MAP, COUNTER_OBJECT, COUNTER_PROGRAM, CounterValue,
};

const SENDERS: u64 = 2;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["token-load", runs] => token_load(runs.parse()?),
        ["aya-load", runs] => aya_load(runs.parse()?, true),
        ["aya-load-here", runs] => aya_load(runs.parse()?, false),
        ["gateway-calls", runs] => gateway_calls(runs.parse()?),
        ["flood", datagrams] => flood(datagrams.parse()?, COUNTER_OBJECT.to_vec()),
        ["flood", datagrams, object] => flood(
            datagrams.parse()?,
            std::fs::read(object).with_context(|| format!("reading {object}"))?,
        ),
        _ => {
            bail!(
                "usage: bench_counter token-load RUNS | aya-load RUNS | aya-load-here RUNS | gateway-calls RUNS | flood DATAGRAMS [OBJECT]"
            )
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn token() -> anyhow::Result<Token> {
    Ok(Token::from_bpffs_path(&counter::default_token_path())?)
}

fn token_load(runs: usize) -> anyhow::Result<()> {
    let token = token()?;
    let ifindex = bpf_token_launcher::sandbox::net::interface_index("lo")?;
    for _ in 0..runs {
        let start = Instant::now();
        let loaded = TokenLoader::new(&token).load(COUNTER_OBJECT)?;
        let program = loaded
            .program(COUNTER_PROGRAM)
            .ok_or_else(|| anyhow!("no {COUNTER_PROGRAM}"))?;
        let loaded_at = start.elapsed();
        let link = counter::attach_xdp(program.fd(), ifindex, "lo")?;
        let attached_at = start.elapsed();
        drop(link);
        println!(
            "{{\"load_ms\":{:.3},\"attach_ms\":{:.3}}}",
            ms(loaded_at),
            ms(attached_at - loaded_at)
        );
    }
    Ok(())
}

fn aya_load(runs: usize, own_netns: bool) -> anyhow::Result<()> {
    if own_netns {
        // A fresh network namespace: the host's own lo is left alone.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .context("unshare(CLONE_NEWNET)")?;
        bpf_token_launcher::sandbox::net::bring_up_loopback()?;
    }
    for _ in 0..runs {
        let start = Instant::now();
        let mut ebpf = aya::EbpfLoader::new().load(COUNTER_OBJECT)?;
        let program: &mut aya::programs::Xdp = ebpf
            .program_mut(COUNTER_PROGRAM)
            .ok_or_else(|| anyhow!("no {COUNTER_PROGRAM}"))?
            .try_into()?;
        program.load()?;
        let loaded_at = start.elapsed();
        let link = program.attach("lo", aya::programs::XdpMode::Default)?;
        let attached_at = start.elapsed();
        program.detach(link)?;
        println!(
            "{{\"load_ms\":{:.3},\"attach_ms\":{:.3}}}",
            ms(loaded_at),
            ms(attached_at - loaded_at)
        );
    }
    Ok(())
}

/// `BPF_MAP_CREATE` of a one-entry array with aya 0.14's attr size, with the token or without.
fn map_create(token: Option<&Token>) -> Result<std::os::fd::OwnedFd, std::io::Error> {
    use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _};
    let mut attr = [0u8; 152];
    for (offset, value) in [(0usize, 2u32), (4, 4), (8, 8), (12, 1)] {
        attr[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }
    if let Some(token) = token {
        attr[16..20].copy_from_slice(&aya_obj::generated::BPF_F_TOKEN_FD.to_le_bytes());
        attr[76..80].copy_from_slice(&token.as_fd().as_raw_fd().to_le_bytes());
    }
    // SAFETY: attr is a complete bpf_attr prefix of the size passed.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_mut_ptr(), attr.len()) };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        // SAFETY: a new descriptor from the kernel.
        Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(ret as i32) })
    }
}

fn gateway_calls(runs: usize) -> anyhow::Result<()> {
    let token = token()?;
    let mut with = Vec::with_capacity(runs);
    let mut without = Vec::with_capacity(runs);
    let mut without_fails = None;
    // Unmeasured warm-up (page faults, the gateway's first injection).
    for _ in 0..10 {
        drop(map_create(Some(&token))?);
        drop(map_create(None));
    }
    let time = |token: Option<&Token>| {
        let start = Instant::now();
        let result = map_create(token);
        (start.elapsed(), result)
    };
    for _ in 0..runs {
        let (spent, result) = time(Some(&token));
        drop(result?);
        with.push(spent);
        let (spent, result) = time(None);
        match result {
            Ok(map) => {
                drop(map);
                without.push(spent);
            }
            Err(error) => without_fails = Some(error),
        }
    }
    let quantiles = |times: &mut Vec<Duration>| {
        if times.is_empty() {
            return "null".to_owned();
        }
        times.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        format!(
            "{{\"median_us\":{:.1},\"p90_us\":{:.1}}}",
            us(times[times.len() / 2]),
            us(times[times.len() * 9 / 10])
        )
    };
    println!(
        "{{\"runs\":{runs},\"with_token\":{},\"without_token\":{},\"without_token_error\":{}}}",
        quantiles(&mut with),
        quantiles(&mut without),
        without_fails.map_or("null".to_owned(), |e| format!("{:?}", e.to_string()))
    );
    Ok(())
}

/// Sends `datagrams` from [`SENDERS`] threads to `destination`; returns how many were sent and
/// the rate. A receiver thread drains the socket so it never fills up for long.
fn send_all(datagrams: u64, receiver: &UdpSocket) -> anyhow::Result<(u64, f64, u64)> {
    let destination = receiver.local_addr()?;
    let done = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let drain = {
        let receiver = receiver.try_clone()?;
        receiver.set_read_timeout(Some(Duration::from_millis(20)))?;
        let (done, received) = (done.clone(), received.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            loop {
                match receiver.recv(&mut buf) {
                    Ok(_) => {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) if done.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
        })
    };
    let start = Instant::now();
    let senders: Vec<_> = (0..SENDERS)
        .map(|i| {
            let share = datagrams / SENDERS + u64::from(i < datagrams % SENDERS);
            std::thread::spawn(move || -> std::io::Result<u64> {
                let socket = UdpSocket::bind("127.0.0.1:0")?;
                let payload = [0x5au8; 16];
                let mut sent = 0;
                while sent < share {
                    match socket.send_to(&payload, destination) {
                        Ok(_) => sent += 1,
                        // The loopback queue is full for a moment: try again.
                        Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                            std::thread::yield_now();
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(sent)
            })
        })
        .collect();
    let mut sent = 0;
    for sender in senders {
        sent += sender.join().map_err(|_| anyhow!("a sender panicked"))??;
    }
    let elapsed = start.elapsed();
    // Let the drain catch up, then stop it.
    std::thread::sleep(Duration::from_millis(50));
    done.store(true, Ordering::Relaxed);
    drain.join().map_err(|_| anyhow!("the receiver panicked"))?;
    Ok((
        sent,
        sent as f64 / elapsed.as_secs_f64(),
        received.load(Ordering::Relaxed),
    ))
}

fn flood(datagrams: u64, object: Vec<u8>) -> anyhow::Result<()> {
    let receiver = UdpSocket::bind("127.0.0.1:0")?;
    // Unmeasured: the first threads and sends of the process pay for page faults and caches.
    send_all(datagrams / 10, &receiver)?;
    let (_, rate_without, _) = send_all(datagrams, &receiver)?;

    let token = token()?;
    let ifindex = bpf_token_launcher::sandbox::net::interface_index("lo")?;
    let mut loaded = TokenLoader::new(&token).load(&object)?;
    let map = loaded
        .take_map(COUNTER_MAP)
        .ok_or_else(|| anyhow!("no {COUNTER_MAP}"))?;
    let counter: Array<MapData, CounterValue> = Array::try_from(map)?;
    let program = loaded
        .program(COUNTER_PROGRAM)
        .ok_or_else(|| anyhow!("no {COUNTER_PROGRAM}"))?;
    let link = counter::attach_xdp(program.fd(), ifindex, "lo")?;
    let before = counter.get(&0, 0)?.packets;
    let (sent, rate_with, received) = send_all(datagrams, &receiver)?;
    let after = counter.get(&0, 0)?.packets;
    drop(link);
    println!(
        "{{\"sent\":{sent},\"counted\":{},\"received\":{received},\"rate_without\":{rate_without:.0},\"rate_with\":{rate_with:.0}}}",
        after - before
    );
    Ok(())
}
