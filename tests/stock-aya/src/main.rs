//! `stock-aya xdp OBJECT [IFACE]` / `stock-aya raw-tp OBJECT PROGRAM`: see the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["xdp", object, ref rest @ ..] => std::fs::read(object)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| stock_aya::count_one_datagram(&bytes, rest.first().unwrap_or(&"lo")))
            .map(|n| println!("packets counted: {n}")),
        ["raw-tp", object, program] => std::fs::read(object)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| stock_aya::count_execs(&bytes, program))
            .map(|n| println!("execs counted: {n}")),
        _ => {
            eprintln!("usage: stock-aya xdp OBJECT [IFACE] | stock-aya raw-tp OBJECT PROGRAM");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("stock-aya: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
