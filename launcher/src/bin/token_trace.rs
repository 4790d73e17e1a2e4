//! `token_trace`: create a BPF token from a delegated bpffs, load the XDP counter with it,
//! attach it, and count one datagram.

use std::path::PathBuf;
use std::process::ExitCode;

use bpf_token_launcher::counter::{self, TraceOptions};
use bpf_token_launcher::logging;
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
    /// Trace every step on stderr (repeat for more)
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose);
    let options = TraceOptions {
        token_path: cli.token_path.unwrap_or_else(counter::default_token_path),
        interface: cli.interface,
        send_traffic: !cli.no_traffic,
    };
    match counter::run_trace(&options) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("token_trace: error: {}: {err}", err.step());
            ExitCode::FAILURE
        }
    }
}
