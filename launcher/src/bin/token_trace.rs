//! `token_trace`: create a BPF token from a delegated bpffs, load the XDP counter with it,
//! attach it, and count one datagram. Also lists the bpffs mounts a caller can see and prints
//! the least-privilege policy of an eBPF object, with what it lets a sandbox reach.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bpf_token_launcher::bpf::inventory;
use bpf_token_launcher::counter::{self, TraceOptions};
use bpf_token_launcher::logging;
use bpf_token_launcher::policy::report::{Format, PolicyReport};
use bpf_token_launcher::policy::risk::CapsKept;
use bpf_token_launcher::policy::{self, EnumNames};
use bpf_token_launcher::sys::file::read_untrusted_file;
use clap::Parser;

/// Load the demo XDP counter with a BPF token and count one packet.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// bpffs root to create the token from (a delegated bpffs mounted in this user namespace)
    /// [default: $LIBBPF_BPF_TOKEN_PATH, else /sys/fs/bpf]
    #[arg(short = 't', long = "token-path", value_name = "PATH")]
    token_path: Option<PathBuf>,
    /// Interface to attach the XDP program to (the test datagram always goes over loopback)
    #[arg(
        short = 'i',
        long = "interface",
        value_name = "IFACE",
        default_value = "lo"
    )]
    interface: String,
    /// Send no test datagram (the delta is then 0)
    #[arg(short = 'n', long = "no-traffic")]
    no_traffic: bool,
    /// After attaching, count until stdin closes (traffic from elsewhere, e.g. a veth peer)
    #[arg(long)]
    hold: bool,
    /// List every bpffs mounted here, its delegation, and whether a token can be made from it
    #[arg(long, conflicts_with_all = ["token_path", "no_traffic", "interface", "hold", "print_policy"])]
    list: bool,
    /// Print the least-privilege delegation of an eBPF object (ELF), and what it lets a sandbox
    /// reach beyond itself, and exit
    #[arg(long, value_name = "OBJECT", conflicts_with_all = ["token_path", "no_traffic", "interface", "hold"])]
    print_policy: Option<PathBuf>,
    /// With --list or --print-policy: print JSON
    #[arg(long)]
    json: bool,
    /// With --print-policy: text, flags, toml (a --policy file), systemd, lxd, incus or json
    #[arg(
        long,
        value_name = "FORMAT",
        requires = "print_policy",
        conflicts_with = "json"
    )]
    format: Option<Format>,
    /// Trace every step on stderr (repeat for more)
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose);
    if cli.json && !cli.list && cli.print_policy.is_none() {
        eprintln!("token_trace: error: --json goes with --list or --print-policy");
        return ExitCode::from(2);
    }
    if cli.list {
        return list(cli.json);
    }
    if let Some(object) = &cli.print_policy {
        return print_policy(object, Format::from_flags(cli.json, cli.format));
    }
    let options = TraceOptions {
        token_path: cli.token_path.unwrap_or_else(counter::default_token_path),
        interface: cli.interface,
        send_traffic: !cli.no_traffic,
        hold: cli.hold,
    };
    match counter::run_trace(&options) {
        Ok(report) => print_or_exit(&report.to_string()),
        Err(err) => {
            eprintln!("token_trace: error: {}: {err}", err.step());
            ExitCode::FAILURE
        }
    }
}

fn list(json: bool) -> ExitCode {
    let names = EnumNames::for_running_kernel();
    log::debug!("kernel enum names: {}", names.source());
    let mounts = match inventory::bpffs_mounts() {
        Ok(mounts) => mounts,
        Err(err) => {
            eprintln!("token_trace: error: reading /proc/self/mountinfo: {err}");
            return ExitCode::FAILURE;
        }
    };
    let text = if json {
        let list: Vec<_> = mounts.iter().map(|m| m.to_json(names)).collect();
        format!("{}\n", serde_json::Value::Array(list))
    } else if mounts.is_empty() {
        "no bpffs is mounted in this mount namespace\n".to_owned()
    } else {
        mounts
            .iter()
            .map(|mount| mount.display(names).to_string())
            .collect()
    };
    print_or_exit(&text)
}

fn print_policy(object: &Path, format: Format) -> ExitCode {
    let names = EnumNames::for_running_kernel();
    let delegation = match read_untrusted_file(object, MAX_OBJECT_LEN)
        .map_err(|e| e.kind.to_string())
        .and_then(|elf| policy::least_privilege_for_elf(&elf).map_err(|e| e.to_string()))
    {
        Ok(d) => d,
        Err(err) => {
            eprintln!("token_trace: error: {}: {err}", object.display());
            return ExitCode::FAILURE;
        }
    };
    // As token_userns_demo runs a command by default: without CAP_PERFMON and CAP_SYS_ADMIN.
    let report = PolicyReport::new(&delegation, CapsKept::DROPPED, names, Some(object));
    let text = report.render(format, names);
    print_or_exit(&text)
}

/// The largest object `--print-policy` reads.
const MAX_OBJECT_LEN: u64 = 256 << 20;

/// Writes `text` to stdout: success, or the status for a failed write (quiet on EPIPE).
fn print_or_exit(text: &str) -> ExitCode {
    match logging::write_stdout(text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => ExitCode::from(logging::stdout_failure("token_trace", &error)),
    }
}
