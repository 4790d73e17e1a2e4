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

/// Installs the logger: verbosity 0 shows warnings, 1 (`-v`) every step, 2 (`-vv`) also protocol
/// messages and the libraries' own notes.
pub fn init(verbosity: u8) {
    START.get_or_init(Instant::now);
    let level = match verbosity {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    static OWN: StderrLogger = StderrLogger { own_only: true };
    static ALL: StderrLogger = StderrLogger { own_only: false };
    if log::set_logger(if verbosity >= 2 { &ALL } else { &OWN }).is_ok() {
        log::set_max_level(level);
    }
}
