//! The bench rows that need the `bench_counter` example: token loader against stock aya, and
//! the counter's exactness under load (with the racy variant as the control).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use serde_json::Value;

/// The JSON lines a `bench_counter` run printed.
fn json_lines(command: &mut Command) -> anyhow::Result<Vec<Value>> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad JSON line {l:?}")))
        .collect()
}

fn field(value: &Value, key: &str) -> anyhow::Result<f64> {
    value[key]
        .as_f64()
        .with_context(|| format!("no number {key:?} in {value}"))
}

/// Load and attach times of one loader, in ms, one entry per run.
pub struct LoadTimes {
    pub load: Vec<f64>,
    pub attach: Vec<f64>,
}

impl LoadTimes {
    fn from_lines(lines: &[Value]) -> anyhow::Result<Self> {
        Ok(Self {
            load: lines
                .iter()
                .map(|l| field(l, "load_ms"))
                .collect::<anyhow::Result<_>>()?,
            attach: lines
                .iter()
                .map(|l| field(l, "attach_ms"))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    pub fn total(&self) -> Vec<f64> {
        self.load
            .iter()
            .zip(&self.attach)
            .map(|(l, a)| l + a)
            .collect()
    }
}

/// The three loaders' times: ours in a token sandbox, stock aya as root in a fresh network
/// namespace, and stock aya in a token sandbox whose bpf() gateway gives it the token.
pub struct Loaders {
    pub token: LoadTimes,
    pub aya_root: LoadTimes,
    pub aya_gateway: LoadTimes,
}

/// The loaders alternate run by run so machine noise hits them alike.
pub fn loaders(demo: &Path, example: &Path, runs: usize) -> anyhow::Result<Loaders> {
    let mut token = Vec::new();
    let mut aya = Vec::new();
    let mut gateway = Vec::new();
    let in_sandbox = |mode: &str| {
        let mut command = Command::new(demo);
        command.arg("--").arg(example).args([mode, "1"]);
        command
    };
    for _ in 0..runs {
        token.extend(json_lines(&mut in_sandbox("token-load"))?);
        aya.extend(json_lines(Command::new(example).args(["aya-load", "1"]))?);
        gateway.extend(json_lines(&mut in_sandbox("aya-load-here"))?);
    }
    Ok(Loaders {
        token: LoadTimes::from_lines(&token)?,
        aya_root: LoadTimes::from_lines(&aya)?,
        aya_gateway: LoadTimes::from_lines(&gateway)?,
    })
}

/// Median µs of one `BPF_MAP_CREATE`: carrying its own token under `--no-gateway` (the call
/// as the kernel alone costs it), carrying its token with the gateway on (notified, passed on
/// untouched), and without a token (notified, patched by the gateway).
pub struct GatewayCalls {
    pub direct_us: f64,
    pub passed_us: f64,
    pub patched_us: f64,
}

pub fn gateway_calls(demo: &Path, example: &Path, runs: usize) -> anyhow::Result<GatewayCalls> {
    let run = |gateway: bool| -> anyhow::Result<Value> {
        let mut command = Command::new(demo);
        if !gateway {
            command.arg("--no-gateway");
        }
        command
            .arg("--")
            .arg(example)
            .args(["gateway-calls", &runs.to_string()]);
        json_lines(&mut command)?
            .into_iter()
            .next()
            .context("gateway-calls printed nothing")
    };
    let off = run(false)?;
    let on = run(true)?;
    let median = |line: &Value, key: &str| field(&line[key], "median_us");
    Ok(GatewayCalls {
        direct_us: median(&off, "with_token")?,
        passed_us: median(&on, "with_token")?,
        patched_us: median(&on, "without_token")?,
    })
}

/// One flood run: datagrams sent, counted by XDP, received by the socket, and the send rates.
pub struct Flood {
    pub sent: u64,
    pub counted: u64,
    pub received: u64,
    pub rate_without: f64,
    pub rate_with: f64,
}

pub fn flood(
    demo: &Path,
    example: &Path,
    datagrams: u64,
    object: Option<&Path>,
) -> anyhow::Result<Flood> {
    let mut command = Command::new(demo);
    command
        .arg("--")
        .arg(example)
        .args(["flood", &datagrams.to_string()]);
    if let Some(object) = object {
        command.arg(object);
    }
    let lines = json_lines(&mut command)?;
    let line = lines.first().context("flood printed nothing")?;
    let count = |key| field(line, key).map(|v| v as u64);
    Ok(Flood {
        sent: count("sent")?,
        counted: count("counted")?,
        received: count("received")?,
        rate_without: field(line, "rate_without")?,
        rate_with: field(line, "rate_with")?,
    })
}

/// Builds the racy counter (`demo-ebpf --features non-atomic`) for the control run, with the
/// flags aya-build uses for the embedded one, into its own target directory.
pub fn build_non_atomic_counter(root: &Path) -> anyhow::Result<PathBuf> {
    let target_dir = root.join("target/bench-ebpf");
    let rustflags = [
        format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
        "-Cdebuginfo=2".to_owned(),
        "-Clink-arg=--btf".to_owned(),
    ]
    .join("\x1f");
    let status = Command::new("rustup")
        .current_dir(root)
        .args(["run", "nightly", "cargo", "build", "--package", "demo-ebpf"])
        .args([
            "--bin",
            "demo-ebpf",
            "--release",
            "--features",
            "non-atomic",
        ])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        // The outer cargo's compiler settings are for the host, not for the BPF target.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .status()
        .context("running cargo for the non-atomic counter")?;
    if !status.success() {
        bail!("building the non-atomic counter failed: {status}");
    }
    Ok(target_dir.join("bpfel-unknown-none/release/demo-ebpf"))
}
