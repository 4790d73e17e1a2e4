//! The `-v` trace: a `log` backend writing to stderr with the time since start and the role.
//!
//! The library itself only uses the `log` facade, so aya users embedding the loader keep their
//! own logger; the binaries install this one.

use std::io::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();
static ROLE: AtomicU8 = AtomicU8::new(Role::Main as u8);

/// Which process a trace line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    Main = 0,
    Supervisor = 1,
    Sandbox = 2,
}

impl Role {
    const fn label(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Supervisor => "supervisor",
            Self::Sandbox => "sandbox",
        }
    }
}

/// Sets the role shown in trace lines of this process (after `fork`, each side sets its own).
pub fn set_role(role: Role) {
    ROLE.store(role as u8, Ordering::Relaxed);
}

fn role() -> Role {
    match ROLE.load(Ordering::Relaxed) {
        1 => Role::Supervisor,
        2 => Role::Sandbox,
        _ => Role::Main,
    }
}

struct StderrLogger {
    /// At `-v` only our own steps are shown; `-vv` adds aya's relocation notes.
    own_only: bool,
    /// Without `-v`, warnings read as a program's warnings (`token_userns_demo: warning: ...`)
    /// rather than as trace lines.
    plain: bool,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
            && (!self.own_only || !metadata.target().starts_with("aya"))
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if self.plain {
            let level = if record.level() == log::Level::Error {
                "error"
            } else {
                "warning"
            };
            let line = format!("{}: {level}: {}\n", program_name(), record.args());
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
            return;
        }
        let elapsed = START.get_or_init(Instant::now).elapsed();
        let line = format!(
            "[{:>9.3} ms {:>10} {:>6}] {}\n",
            elapsed.as_secs_f64() * 1000.0,
            role().label(),
            std::process::id(),
            record.args()
        );
        // One write per line so lines of the two processes do not interleave mid-line.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// The running binary's name, for messages.
fn program_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::env::args_os()
            .next()
            .as_deref()
            .map(std::path::Path::new)
            .and_then(std::path::Path::file_name)
            .map_or_else(
                || "bpf-token".to_owned(),
                |n| n.to_string_lossy().into_owned(),
            )
    })
}

/// Installs the logger: verbosity 0 shows warnings, 1 (`-v`) every step, 2 (`-vv`) also protocol
/// messages and the libraries' own notes.
pub fn init(verbosity: u8) {
    START.get_or_init(Instant::now);
    let level = match verbosity {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    static PLAIN: StderrLogger = StderrLogger {
        own_only: true,
        plain: true,
    };
    static OWN: StderrLogger = StderrLogger {
        own_only: true,
        plain: false,
    };
    static ALL: StderrLogger = StderrLogger {
        own_only: false,
        plain: false,
    };
    let logger = match verbosity {
        0 => &PLAIN,
        1 => &OWN,
        _ => &ALL,
    };
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

/// Writes a report to stdout and flushes it, returning the error instead of panicking as
/// `print!` does (stdout may be `/dev/full` or a pipe whose reader left).
pub fn write_stdout(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// The exit status for a failed write to stdout: a reader that went away (EPIPE) ends the
/// program quietly with the status a shell reports for SIGPIPE (128 + 13), as `cat` under the
/// default SIGPIPE would; anything else is an error worth a line.
pub fn stdout_failure(program: &str, error: &std::io::Error) -> u8 {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        return 141;
    }
    error_line(program, &format_args!("writing to stdout: {error}"));
    1
}

/// Prints `program: message` as one write: the sandbox and the supervisor share stderr, and
/// `eprintln!` writes a formatted message piece by piece, so another process's trace line could
/// land in the middle of it.
pub fn program_line(program: &str, message: &dyn std::fmt::Display) {
    let line = format!("{program}: {message}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// [`program_line`] for an error: `program: error: message`.
pub fn error_line(program: &str, message: &dyn std::fmt::Display) {
    program_line(program, &format_args!("error: {message}"));
}
