//! Project tasks: `cargo xtask build | demo | test | bench`.

mod bench;

use std::path::{Path, PathBuf};
use std::process::Command;

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

pub fn build_release(root: &Path) -> anyhow::Result<PathBuf> {
    run(cargo()
        .current_dir(root)
        .args(["build", "--release", "-p", "launcher", "--bins"]))?;
    Ok(root.join("target/release"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.task {
        Task::Build => {
            setup_toolchain(&root)?;
            build_release(&root)?;
        }
        Task::Demo { args } => {
            setup_toolchain(&root)?;
            let bin = build_release(&root)?.join("token_userns_demo");
            run(as_root(&bin).args(args))?;
        }
        Task::Test { args } => {
            let mut command = cargo();
            command.current_dir(&root).args(["test", "-p", "launcher"]);
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
            let bin_dir = build_release(&root)?;
            bench::run(&root, &bin_dir, quick)?;
        }
    }
    Ok(())
}
