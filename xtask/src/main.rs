//! Project tasks: `cargo xtask build | demo | test | bench | fuzz`.

mod bench;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Build, demo, test and benchmark the BPF token launcher")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what is missing (apt packages, rust-src, bpf-linker) and build in release mode
    Build,
    /// Build, then run `token_userns_demo` (through sudo when not root); extra args are passed on
    Demo {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: unit tests, and the end-to-end tests as root on the real kernel
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure the demo and write BENCHMARKS.md (needs root)
    Bench {
        /// A few runs only, to check the benchmark code works (no BENCHMARKS.md written)
        #[arg(long)]
        quick: bool,
    },
    /// Run the cargo-fuzz targets in launcher/fuzz one after another (nightly; installs cargo-fuzz)
    Fuzz {
        /// How long to fuzz each target
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// One target only (default: every target `cargo fuzz list` shows)
        target: Option<String>,
    },
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: running {command:?}");
    let status = command
        .status()
        .with_context(|| format!("spawning {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

/// `program`, run directly when we are root and through `sudo -E` otherwise.
fn as_root(program: impl AsRef<std::ffi::OsStr>) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut command = Command::new("sudo");
        command.arg("-E").arg(program);
        command
    }
}

fn setup_toolchain(root: &Path) -> anyhow::Result<()> {
    run(as_root("bash").arg(root.join("scripts/setup-toolchain.sh")))
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The target the project's binaries are built for: static musl executables when rustup has that
/// target (the supervisor is started for every sandbox, and on virtual machines glibc's start-up,
/// dynamic loading and CPUID probing, each CPUID a VM exit, cost more than its work before
/// clone3: 5.15 ms against 6.15 ms per launch measured), else the host's own glibc target.
///
/// Chosen here and passed as `--target`, not set in `.cargo/config.toml`: a configured target
/// also applies to `cargo xtask` itself, which then cannot even build on a machine that has only
/// the stable toolchain, before the set-up it is there to run. `CARGO_BUILD_TARGET` overrides.
fn build_target() -> String {
    if let Ok(target) = std::env::var("CARGO_BUILD_TARGET") {
        return target;
    }
    let musl = format!("{}-unknown-linux-musl", std::env::consts::ARCH);
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .any(|l| l.trim() == musl)
        });
    if installed == Some(true) {
        return musl;
    }
    let gnu = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    eprintln!(
        "xtask: warning: the {musl} target is not installed (`rustup target add {musl}`, or `cargo xtask build`); building dynamically linked {gnu} binaries"
    );
    gnu
}

/// Runs `cargo build ARGS --message-format=json-render-diagnostics` in `root` and returns the
/// executable cargo reported for the binary `artifact`; `hint` follows the error when the build
/// fails.
fn build_artifact(
    root: &Path,
    args: &[&str],
    artifact: &str,
    hint: &str,
) -> anyhow::Result<PathBuf> {
    let mut command = cargo();
    command
        .current_dir(root)
        .arg("build")
        .args(args)
        .arg("--message-format=json-render-diagnostics");
    eprintln!("xtask: running {command:?}");
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("spawning {command:?}"))?;
    if !output.status.success() {
        bail!("{command:?} failed: {}{hint}", output.status);
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|message| {
            message["reason"] == "compiler-artifact" && message["target"]["name"] == artifact
        })
        .and_then(|message| Some(PathBuf::from(message["executable"].as_str()?)))
        .with_context(|| format!("cargo build reported no {artifact} executable"))
}

/// Builds the launcher's binaries in release mode for `target` and returns the directory cargo
/// put them in (`target/x86_64-unknown-linux-musl/release` for the static build).
pub fn build_release(root: &Path, target: &str) -> anyhow::Result<PathBuf> {
    let demo = build_artifact(
        root,
        &["--release", "--target", target, "-p", "launcher", "--bins"],
        "token_userns_demo",
        "",
    )?;
    demo.parent()
        .map(Path::to_path_buf)
        .context("the token_userns_demo executable has no directory")
}

/// Builds tests/libbpf-client (the libbpf loader tests/libbpf.rs runs in the sandbox) for the
/// host's glibc target and returns the executable's path. It cannot be a dev-dependency of the
/// launcher: libbpf-sys compiles libbpf's C sources and links the system's libelf and zlib,
/// which do not link into the static musl test binaries.
fn build_libbpf_client(root: &Path) -> anyhow::Result<PathBuf> {
    let gnu = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    build_artifact(
        root,
        &["--target", &gnu, "-p", "libbpf-client"],
        "libbpf-client",
        " (it needs clang-22, libelf-dev, zlib1g-dev, make and pkg-config: scripts/setup-toolchain.sh installs them)",
    )
}

/// `cargo +nightly` through rustup: cargo-fuzz needs nightly for its sanitizer flags.
fn cargo_nightly() -> Command {
    let mut command = Command::new("cargo");
    command.arg("+nightly");
    command
}

/// Runs every fuzz target (or `target`) for `seconds` each; a crash in one does not stop the
/// others, and the task fails if any target failed.
fn fuzz(root: &Path, seconds: u64, target: Option<String>) -> anyhow::Result<()> {
    let has_cargo_fuzz = cargo()
        .args(["fuzz", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !has_cargo_fuzz {
        run(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let launcher = root.join("launcher");
    let targets = match target {
        Some(target) => vec![target],
        None => {
            let output = cargo_nightly()
                .current_dir(&launcher)
                .args(["fuzz", "list"])
                .output()
                .context("spawning cargo +nightly fuzz list")?;
            if !output.status.success() {
                bail!(
                    "cargo +nightly fuzz list failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            String::from_utf8(output.stdout)
                .context("cargo fuzz list printed non-UTF-8")?
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(str::to_owned)
                .collect()
        }
    };
    let mut failed = Vec::new();
    for target in &targets {
        let result = run(cargo_nightly().current_dir(&launcher).args([
            "fuzz",
            "run",
            target,
            "--",
            &format!("-max_total_time={seconds}"),
        ]));
        if let Err(error) = result {
            eprintln!("xtask: {error:#}");
            failed.push(target.as_str());
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzz target(s) failed: {} (inputs in launcher/fuzz/artifacts/)",
            failed.join(", ")
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.task {
        Task::Build => {
            setup_toolchain(&root)?;
            build_release(&root, &build_target())?;
        }
        Task::Demo { args } => {
            setup_toolchain(&root)?;
            let bin = build_release(&root, &build_target())?.join("token_userns_demo");
            run(as_root(&bin).args(args))?;
        }
        Task::Test { args } => {
            // Idempotent and quick when everything is there; the launcher's build script needs
            // bpf-linker and the nightly rust-src.
            setup_toolchain(&root)?;
            let libbpf_client = build_libbpf_client(&root)?;
            let mut command = cargo();
            // tests/libbpf.rs runs this loader in the sandbox.
            command.env("LIBBPF_CLIENT", &libbpf_client);
            // The conformance crate runs its own harness: its scenarios fork, one at a time.
            command.current_dir(&root).args([
                "test",
                "--target",
                &build_target(),
                "-p",
                "launcher",
                "-p",
                "conformance",
            ]);
            if !is_root() {
                // The end-to-end tests need root on the real kernel: run test binaries via sudo,
                // as aya's own xtask does.
                command.args(["--config", "target.'cfg(all())'.runner='sudo -E'"]);
            }
            run(command.args(args))?;
        }
        Task::Bench { quick } => {
            if !is_root() {
                bail!(
                    "the benchmark runs the supervisor, which needs root: sudo -E cargo xtask bench"
                );
            }
            let target = build_target();
            let bin_dir = build_release(&root, &target)?;
            run(cargo().current_dir(&root).args([
                "build",
                "--release",
                "--target",
                &target,
                "-p",
                "launcher",
                "--example",
                "bench_counter",
            ]))?;
            bench::run(&root, &bin_dir, quick)?;
        }
        Task::Fuzz { seconds, target } => fuzz(&root, seconds, target)?,
    }
    Ok(())
}
