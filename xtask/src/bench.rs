//! `cargo xtask bench`: wall times of the demo against `unshare -Urnm true`, measured
//! interleaved in one run, and where the demo's time goes (from its own `-v` timestamps).

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

mod counter;
mod plot;

struct Case {
    name: &'static str,
    command: Vec<String>,
    /// Wall times in ms.
    samples: Vec<f64>,
}

fn time_once(command: &[String]) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let status = Command::new(&command[0])
        .args(&command[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("spawning {command:?}"))?;
    let elapsed = start.elapsed();
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(elapsed)
}

/// `rounds` rounds of one run of each case in turn, so machine noise hits them alike.
fn time_alternating(cases: &mut [Case], rounds: usize) -> anyhow::Result<()> {
    for _ in 0..rounds {
        for case in cases.iter_mut() {
            let t = time_once(&case.command)?;
            case.samples.push(ms(t));
        }
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median_f64(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Phases of one demo run, delimited by the first trace line containing each marker.
const PHASES: [(&str, &str); 7] = [
    (
        "startup (exec, argument and policy checks, clone3)",
        "sandbox child pid",
    ),
    (
        "namespaces and id maps (user, mount)",
        "setresgid(0)/setresuid(0)",
    ),
    (
        "bpffs and token (fsopen; fsconfig while the sandbox creates its network namespace; create, fsmount, token)",
        "token allows allowed_attachs",
    ),
    ("load (BTF, map, program)", "bpf(BPF_PROG_LOAD"),
    ("attach (XDP link)", "bpf(BPF_LINK_CREATE"),
    ("traffic and counter reads", "counter after"),
    (
        "teardown (detach, child exit, wait)",
        "sandbox child exited",
    ),
];

/// Per-phase sums over `runs` traced runs, the time outside the trace, and each run's peak RSS
/// (supervisor, sandbox) in KiB from the trace's last lines.
struct Breakdown {
    sums: Vec<f64>,
    outside: f64,
    peak_rss_supervisor: Vec<f64>,
    peak_rss_sandbox: Vec<f64>,
}

/// The per-phase table: totals, means and shares.
fn phase_table(
    phases: &[(&str, &str)],
    sums: &[f64],
    outside: f64,
    runs: usize,
) -> anyhow::Result<String> {
    let total: f64 = sums.iter().sum::<f64>() + outside;
    let mut table = String::new();
    writeln!(
        table,
        "| phase | total ms over {runs} runs | mean ms per run | share |"
    )?;
    writeln!(table, "|---|---|---|---|")?;
    for ((name, _), sum) in phases.iter().zip(sums) {
        writeln!(
            table,
            "| {name} | {sum:.2} | {:.3} | {:.1}% |",
            sum / runs as f64,
            100.0 * sum / total
        )?;
    }
    writeln!(
        table,
        "| outside the trace (exec before main, exit after the last line) | {outside:.2} | {:.3} | {:.1}% |",
        outside / runs as f64,
        100.0 * outside / total
    )?;
    Ok(table)
}

/// Phases of one sandbox launch (`-v -- /bin/true`), delimited like [`PHASES`].
const LAUNCH_PHASES: [(&str, &str); 6] = [
    (
        "startup (exec, argument and policy checks, clone3)",
        "sandbox child pid",
    ),
    (
        "namespaces and id maps (user, mount, PID, IPC)",
        "setresgid(0)/setresuid(0)",
    ),
    (
        "bpffs (fsopen; four fsconfig delegate options while the sandbox creates its network namespace and brings lo up; create)",
        "superblock created",
    ),
    (
        "fsmount, move_mount, mountinfo read-back",
        "mounted delegation matches",
    ),
    (
        "start of the command (posix_spawn: vfork and exec)",
        "in the PID namespace",
    ),
    (
        "the command runs and exits, the sandbox exits, wait",
        "sandbox child exited",
    ),
];

fn phase_breakdown(
    demo: &Path,
    args: &[&str],
    phases: &[(&str, &str)],
    runs: usize,
) -> anyhow::Result<Breakdown> {
    let mut sums = vec![0.0; phases.len()];
    let mut outside = 0.0;
    let mut peak_rss_supervisor = Vec::new();
    let mut peak_rss_sandbox = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let out = Command::new(demo)
            .arg("-v")
            .args(args)
            .output()
            .context("running the demo with -v")?;
        let wall = ms(start.elapsed());
        if !out.status.success() {
            bail!("demo failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let trace = String::from_utf8_lossy(&out.stderr);
        let stamp = |marker: &str| -> anyhow::Result<f64> {
            let line = trace
                .lines()
                .find(|l| l.contains(marker))
                .with_context(|| format!("no {marker:?} in the trace"))?;
            let inner = line.trim_start_matches('[');
            let value = inner.split_whitespace().next().context("no timestamp")?;
            Ok(value.parse()?)
        };
        let mut previous = 0.0;
        for (i, (_, marker)) in phases.iter().enumerate() {
            let t = stamp(marker)?;
            sums[i] += t - previous;
            previous = t;
        }
        // What the trace cannot see: process exec before main, and exit after the last line.
        outside += wall - previous;
        let rss = trace
            .lines()
            .find_map(|l| l.split("peak RSS: supervisor ").nth(1))
            .context("no peak RSS line in the trace")?;
        let kib: Vec<f64> = rss
            .split(|c: char| !c.is_ascii_digit())
            .filter(|w| !w.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        let [supervisor, sandbox] = kib[..] else {
            bail!("unexpected peak RSS line {rss:?}");
        };
        peak_rss_supervisor.push(supervisor);
        peak_rss_sandbox.push(sandbox);
    }
    Ok(Breakdown {
        sums,
        outside,
        peak_rss_supervisor,
        peak_rss_sandbox,
    })
}

/// The `cpu` line of `/proc/stat`: all jiffies, and those the hypervisor ran something else.
#[derive(Clone, Copy)]
struct CpuTimes {
    total: u64,
    steal: u64,
}

impl CpuTimes {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal [guest guest_nice, already in user]
        Some(Self {
            total: fields.iter().take(8).sum(),
            steal: *fields.get(7)?,
        })
    }

    /// The share of CPU time stolen by the hypervisor between `self` and `later`.
    fn steal_share(&self, later: &Self) -> f64 {
        let total = later.total.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        later.steal.saturating_sub(self.steal) as f64 / total as f64
    }
}

fn describe_machine() -> (String, String) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    (kernel, format!("{cpu} ({cores} cores)"))
}

/// Runs of the sandbox launch and of its `unshare` floor (the other rows get `runs`).
const LAUNCH_RUNS: usize = 300;

pub fn run(root: &Path, bin_dir: &Path, quick: bool) -> anyhow::Result<()> {
    let runs = if quick { 3 } else { 30 };
    let demo = bin_dir.join("token_userns_demo");
    let demo_s = demo.to_string_lossy().into_owned();
    let mut cases = vec![
        Case {
            name: "token_userns_demo (with traffic)",
            command: vec![demo_s.clone()],
            samples: vec![],
        },
        Case {
            name: "token_userns_demo -n (no traffic)",
            command: vec![demo_s.clone(), "-n".into()],
            samples: vec![],
        },
        Case {
            name: "token_userns_demo -- /bin/true (sandbox launch)",
            command: vec![demo_s.clone(), "--".into(), "/bin/true".into()],
            samples: vec![],
        },
        Case {
            name: "unshare -Urnm true (floor)",
            command: ["unshare", "-Urnm", "true"].map(String::from).to_vec(),
            samples: vec![],
        },
    ];
    // Warm up caches once; each group below is interleaved so machine noise hits its cases alike.
    for case in &cases {
        time_once(&case.command)?;
    }
    // The launch and its floor first, on their own: after each demo run the kernel goes on
    // tearing its network namespace down in a worker for ~15 ms (XDP detach, cleanup_net), which
    // would land on whatever runs next. Their ratio is a target and both are short: more runs.
    let launch_runs = if quick { runs } else { LAUNCH_RUNS };
    let cpu_before = CpuTimes::read();
    time_alternating(&mut cases[2..], launch_runs)?;
    let steal = cpu_before.zip(CpuTimes::read()).map_or_else(
        || "unknown".to_owned(),
        |(a, b)| format!("{:.1}%", a.steal_share(&b) * 100.0),
    );
    time_alternating(&mut cases[..2], runs)?;
    let floor = median_f64(&cases.last().expect("the floor case").samples);
    let mut table = String::new();
    writeln!(
        table,
        "| command | runs | median ms | min ms | max ms | median / floor |"
    )?;
    writeln!(table, "|---|---|---|---|---|---|")?;
    for case in &cases {
        let m = median_f64(&case.samples);
        writeln!(
            table,
            "| `{}` | {} | {m:.2} | {:.2} | {:.2} | {:.2}x |",
            case.name,
            case.samples.len(),
            case.samples.iter().copied().fold(f64::INFINITY, f64::min),
            case.samples.iter().copied().fold(0.0, f64::max),
            m / floor
        )?;
    }
    let Breakdown {
        sums,
        outside,
        peak_rss_supervisor,
        peak_rss_sandbox,
    } = phase_breakdown(&demo, &[], &PHASES, runs)?;
    let phases = phase_table(&PHASES, &sums, outside, runs)?;
    let launch = phase_breakdown(&demo, &["--", "/bin/true"], &LAUNCH_PHASES, runs)?;
    let launch_phases = phase_table(&LAUNCH_PHASES, &launch.sums, launch.outside, runs)?;
    let mut memory = String::new();
    writeln!(memory, "| process | median peak RSS (KiB) | max (KiB) |")?;
    writeln!(memory, "|---|---|---|")?;
    for (name, values) in [
        ("supervisor (host root)", &peak_rss_supervisor),
        ("sandbox child (with what it reaped)", &peak_rss_sandbox),
    ] {
        writeln!(
            memory,
            "| {name} | {:.0} | {:.0} |",
            median_f64(values),
            values.iter().copied().fold(0.0, f64::max)
        )?;
    }

    // Token loader against stock aya.
    let example = bin_dir.join("examples/bench_counter");
    let counter::Loaders {
        token,
        aya_root: aya,
        aya_gateway,
    } = counter::loaders(&demo, &example, runs)?;
    let mut loaders = String::new();
    writeln!(
        loaders,
        "| loader | runs | load median ms | attach median ms | load + attach median ms |"
    )?;
    writeln!(loaders, "|---|---|---|---|---|")?;
    for (name, times) in [
        ("our TokenLoader, token sandbox", &token),
        ("stock aya EbpfLoader, root on the host", &aya),
        (
            "stock aya EbpfLoader, token sandbox through the bpf() gateway",
            &aya_gateway,
        ),
    ] {
        writeln!(
            loaders,
            "| {name} | {} | {:.2} | {:.2} | {:.2} |",
            times.load.len(),
            median_f64(&times.load),
            median_f64(&times.attach),
            median_f64(&times.total())
        )?;
    }
    let loader_ratio = median_f64(&token.total()) / median_f64(&aya.total());
    let load_ratio = median_f64(&token.load) / median_f64(&aya.load);
    writeln!(
        loaders,
        "\nRatio ours / stock aya: load + attach {loader_ratio:.2}x, load alone {load_ratio:.3}x (target: at most 1.1x)."
    )?;
    let gateway_ratio = median_f64(&aya_gateway.total()) / median_f64(&aya.total());
    let calls = if quick { 200 } else { 2000 };
    let gateway = counter::gateway_calls(&demo, &example, calls)?;
    writeln!(
        loaders,
        "Stock aya through the gateway / stock aya as root: load + attach {gateway_ratio:.2}x (aya's own feature probes and work dominate; its ~24 bpf() calls are notified).\n\n\
One `bpf(BPF_MAP_CREATE)` of an array in a token sandbox, median of {calls} (`token_userns_demo \
[--no-gateway] -- bench_counter gateway-calls {calls}`): carrying the token itself with the \
gateway off, {:.1} µs (the kernel's own cost); with the gateway on, every such call is notified \
to the sandbox's PID 1: a call carrying its token is passed on untouched in {:.1} µs, one \
without a token gets the token injected and patched in {:.1} µs ({:.1}x the kernel's cost). \
Commands that make no such call pay nothing per call: the seccomp filter is a few instructions \
in the kernel.",
        gateway.direct_us,
        gateway.passed_us,
        gateway.patched_us,
        gateway.patched_us / gateway.direct_us
    )?;

    // Exactness under load, and the racy control.
    let datagrams = if quick { 10_000 } else { 100_000 };
    let atomic = counter::flood(&demo, &example, datagrams, None)?;
    if atomic.counted != atomic.sent {
        bail!(
            "the counter is not exact: {} datagrams sent, {} counted",
            atomic.sent,
            atomic.counted
        );
    }
    let racy_object = counter::build_non_atomic_counter(root)?;
    let racy = counter::flood(&demo, &example, datagrams, Some(&racy_object))?;
    let mut exactness = String::new();
    writeln!(
        exactness,
        "| counter | sent | counted | lost | received by the socket | datagrams/s without XDP | with XDP | with / without |"
    )?;
    writeln!(exactness, "|---|---|---|---|---|---|---|---|")?;
    for (name, run) in [
        ("atomic add (shipped)", &atomic),
        ("plain load/add/store (control)", &racy),
    ] {
        writeln!(
            exactness,
            "| {name} | {} | {} | {} | {} | {:.0} | {:.0} | {:.2} |",
            run.sent,
            run.counted,
            run.sent.saturating_sub(run.counted),
            run.received,
            run.rate_without,
            run.rate_with,
            run.rate_with / run.rate_without
        )?;
    }
    let control = if racy.counted < racy.sent {
        format!(
            "The racy control lost {} of {} counts on two CPUs, so the check can fail.",
            racy.sent - racy.counted,
            racy.sent
        )
    } else {
        "The racy control lost no counts in this run: the check has not shown it can fail."
            .to_owned()
    };

    // --quick draws too, so the plotting code is exercised, but leaves the committed plot alone.
    let plot_path = if quick {
        root.join("target/BENCHMARKS-quick.png")
    } else {
        root.join("BENCHMARKS.png")
    };
    let series: Vec<(String, Vec<f64>)> = cases
        .iter()
        .map(|c| {
            (
                c.name.split(" (").next().unwrap_or(c.name).to_owned(),
                c.samples.clone(),
            )
        })
        .collect();
    plot::wall_times(
        &plot_path,
        &format!(
            "wall time per run ({launch_runs} launch and floor runs, {runs} demo runs; bar: median)"
        ),
        &series,
    )?;

    print!("{table}\n{phases}\n{launch_phases}\n{memory}\n{loaders}\n{exactness}\n{control}\n");
    if quick {
        eprintln!("xtask: --quick: BENCHMARKS.md not written");
        return Ok(());
    }
    let (kernel, cpu) = describe_machine();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let shown = |path: &Path| {
        path.strip_prefix(root)
            .unwrap_or(path)
            .display()
            .to_string()
    };
    let (shown_demo, shown_example) = (shown(&demo), shown(&example));
    let report = format!(
        "# Benchmarks\n\nProduced by `sudo -E cargo xtask bench` (release build) on {date}.\nKernel {kernel}; CPU {cpu}.\n\n\
## Demo end to end\n\nWall time of whole processes in one run, after one warm-up run each: first `{demo} -- /bin/true`\n\
and `unshare -Urnm true` alternating, {launch_runs} runs each (their ratio is a target), then `{demo}`\n\
and `{demo} -n` alternating, {runs} runs each. Alternating makes machine noise hit both sides of a\n\
ratio alike; the launch goes first because the kernel tears each demo's network namespace down in\n\
a worker for ~15 ms after the demo exits, which would land on whatever runs next.\n\n{table}\n\
The sandbox launch does what `unshare -Urnm` does (user, mount and network namespaces, id maps,\n\
`/` private) plus: starting the supervisor (a static musl executable: it reaches `main` faster than\n\
the dynamically linked `/bin/true`), `clone3` of the sandbox with a PID namespace, `lo` up, the\n\
delegated bpffs (a check that the received context is a bpf one, fsopen, four `fsconfig` delegate\n\
options, superblock, fsmount, move_mount), the mountinfo read-back, the command's confinement\n\
(host cgroup2 mounts covered, CAP_PERFMON and CAP_SYS_ADMIN dropped, no_new_privs, the seccomp\n\
filter; the caller's descriptors closed at start-up) and the start of the command. The kernel walks the vmlinux BTF for every\n\
delegate option (~0.2 ms each, whatever the form of the value) and again to show the options in\n\
mountinfo, about 1 ms of kernel time the floor never spends; the supervisor's options overlap the\n\
sandbox's network namespace creation, each process on a CPU of its own (`launcher/src/placement.rs`).\n\
Target: at most 1.5x the floor. While the launch and floor runs ran, the hypervisor took {steal} of\n\
this VM's CPU time (steal time in `/proc/stat`); the ratio grows with it, because a launch hands\n\
work between two processes on two vCPUs several times and each handoff waits for a vCPU to run,\n\
where the floor is one process after another.\n\n\
## Where the time goes\n\nFrom the timestamps of `token_userns_demo -v` (each phase ends at the first trace line of the next\n\
step), summed over {runs} runs. The `-v` runs are separate from the timed runs above.\n\n{phases}\n\
Reading: the user-space work (namespaces, bpffs, token, BTF/map/program load, traffic) takes a few\n\
milliseconds; attaching the XDP link and tearing it down (link close detaches the program, then the\n\
sandbox's network namespace goes away) are where the kernel waits, most of the run. The\n\
`unshare -Urnm true` floor does none of that, hence the ratio.\n\n\
The sandbox launch, phase by phase (`{demo} -v -- /bin/true`, {runs} runs; `-v` itself adds the\n\
trace writes and loads the kernel's enum names, ~0.5 ms in the bpffs phase):\n\n{launch_phases}\n\
`/bin/true` alone takes about 1 ms to start and exit here, and `unshare -Urnm` spends most of its\n\
time creating the same namespaces. What the floor never pays: the supervisor's own start, the\n\
delegate options and the read-back (the BTF walks above), and a second process to wait for.\n\n\
![wall times](BENCHMARKS.png)\n\n\
## Memory\n\nPeak RSS from `getrusage` in the supervisor at the end of each traced demo run (`-v` prints it).\n\n{memory}\n\
## Token loader against stock aya\n\nThe counter object loaded and attached to `lo` {runs} times each, alternating: through our\n\
`TokenLoader` in a token sandbox (`{demo} -- {example} token-load 1`) and through aya's `EbpfLoader`\n\
and `Xdp::attach` as root in a fresh network namespace (`{example} aya-load 1`), and the same stock\n\
aya code in a token sandbox, where the bpf() gateway gives it the token (`{demo} -- {example}\n\
aya-load-here 1`). Each run is a new process, so all pay their first-load costs. Stock aya parses the kernel's BTF (for CO-RE) and\n\
probes kernel features on every load; our loader does neither.\n\n{loaders}\n\
## Counter exactness under load\n\n{datagrams} UDP datagrams sent over the sandbox's `lo` by two threads at once\n\
(`{demo} -- {example} flood {datagrams} [OBJECT]`), first without the counter, then with it attached;\n\
the counter's delta must equal the number sent (the socket may drop some; XDP runs before it).\n\
The control is the same program with a plain `+=`, built with `--features non-atomic` only for\n\
this check.\n\n{exactness}\n{control}\n",
        demo = shown_demo,
        example = shown_example,
    );
    std::fs::write(root.join("BENCHMARKS.md"), report).context("writing BENCHMARKS.md")?;
    eprintln!("xtask: wrote BENCHMARKS.md");
    Ok(())
}
