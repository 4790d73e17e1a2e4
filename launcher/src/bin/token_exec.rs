//! `token_exec`: run a command with the `bpf()` gateway, for a delegated bpffs someone else made
//! (see [`bpf_token_launcher::sandbox::exec`]).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use bpf_token_launcher::logging;
use bpf_token_launcher::sandbox::exec::{self, ExecOptions};
use clap::Parser;

/// Run CMD with the bpf() gateway: loaders that know no BPF tokens (stock aya, anything calling
/// bpf() itself) use a delegated bpffs someone else made. No root needed.
///
/// For a systemd service with PrivateBPF=, an LXD or Incus container with BPF delegation, a
/// pod, or token_userns_demo's own sandbox: wherever a bpffs mounted with delegate_* options
/// belongs to this process's user namespace.
///
/// token_exec makes a token from PATH, installs a seccomp filter that hands CMD's bpf() calls
/// BPF_MAP_CREATE, BPF_PROG_LOAD and BPF_BTF_LOAD to it, and starts CMD with
/// LIBBPF_BPF_TOKEN_PATH=PATH. A call without a token gets this one (a copy in CMD's descriptor
/// table, and the token fields of its bpf_attr filled in); a call with its own token passes
/// untouched. The kernel still checks the delegation and CMD's capabilities on every call:
/// token_exec grants nothing CMD could not take from the bpffs itself. When CMD fails, each
/// kind of call the delegation did not cover is explained, with the mount options that would
/// cover it.
///
/// token_exec drops no capabilities and makes no namespace: the environment decides what CMD
/// may do. It sets no_new_privs (the kernel requires it to install a seccomp filter without
/// CAP_SYS_ADMIN), which CMD inherits: setuid programs and file capabilities give CMD nothing.
/// The filter also refuses the TIOCSTI and TIOCLINUX ioctls (typing into the caller's
/// terminal).
///
/// SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to token_exec are forwarded to CMD. token_exec is
/// not an init: it reaps only CMD. Processes CMD leaves behind go to whoever reaps orphans there,
/// and once token_exec has exited (or was killed) their bpf() calls of those three commands fail
/// with ENOSYS, as nobody is left to answer them.
///
/// Exit status: CMD's, or 128+N if it was killed by signal N; 127 if CMD is not found, 126 if it
/// cannot be run; 1 if no token can be made from PATH (the message says why: not a bpffs, a
/// bpffs of another user namespace, no delegation) or the gateway cannot start; 2 for bad
/// usage.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// The delegated bpffs to make the token from [default: $LIBBPF_BPF_TOKEN_PATH, else
    /// /sys/fs/bpf, as libbpf]
    #[arg(short = 't', long = "token-path", value_name = "PATH")]
    token_path: Option<PathBuf>,
    /// Do not explain, when CMD fails, the bpf() calls the delegation did not cover
    #[arg(long)]
    no_explain: bool,
    /// Trace every step and every bpf() call handled on stderr (repeat for more)
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
    /// The command and its arguments (after `--`, or after token_exec's own options)
    #[arg(value_name = "CMD", required = true, trailing_var_arg = true)]
    command: Vec<OsString>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose);
    let token_path = match cli.token_path.map_or_else(exec::default_token_path, Ok) {
        Ok(path) => path,
        Err(error) => return fail(&error),
    };
    let options = ExecOptions {
        argv: &cli.command,
        token_path: &token_path,
        explain: !cli.no_explain,
    };
    // `finished.gateway` holds what the gateway saw, for reports after the run (--learn).
    match exec::run(&options) {
        Ok(finished) => ExitCode::from(u8::try_from(finished.exit.exit_code()).unwrap_or(1)),
        Err(error) => fail(&error),
    }
}

fn fail(error: &exec::ExecError) -> ExitCode {
    eprintln!("token_exec: error: {error}");
    ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(1))
}
