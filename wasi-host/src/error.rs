//! The one error type of the host, and the exit status each error maps to.
//!
//! Every message is meant to be printed as is after `trio-wasi-host: `, so it
//! names the file and says what went wrong in one line (a trap adds its wasm
//! backtrace on the following lines).

use std::fmt;
use std::path::PathBuf;

/// Exit status for usage errors and guests that cannot be loaded or linked.
pub const EXIT_USAGE: i32 = 2;

/// Exit status for a guest the host stopped: a trap, running out of fuel or
/// out of memory. Like wasmtime's CLI on unix (128 + SIGABRT).
pub const EXIT_ABNORMAL: i32 = 134;

/// Exit status when `--timeout` passed before the guest stopped, like
/// coreutils' `timeout`.
pub const EXIT_TIMEOUT: i32 = 124;

/// Exit status standing in for a guest's own exit status that is one of
/// the host's ([`HOST_STATUSES`]), so that a status from the host always
/// means the host; the host prints the guest's real status on stderr.
pub const EXIT_GUEST_RESERVED: i32 = 125;

/// The exit statuses the host gives meanings of its own: [`EXIT_USAGE`],
/// [`EXIT_TIMEOUT`], [`EXIT_GUEST_RESERVED`], [`EXIT_ABNORMAL`]. A guest
/// that exits with one of them makes the host exit with
/// [`EXIT_GUEST_RESERVED`] instead (see [`guest_status`]).
pub const HOST_STATUSES: [i32; 4] = [EXIT_USAGE, EXIT_TIMEOUT, EXIT_GUEST_RESERVED, EXIT_ABNORMAL];

/// The exit status for a guest that exited on its own with `status`: the
/// same, unless it is one of [`HOST_STATUSES`], which become
/// [`EXIT_GUEST_RESERVED`] (125).
///
/// ```
/// use trio_wasi_host::guest_status;
///
/// assert_eq!(guest_status(0), 0);
/// assert_eq!(guest_status(7), 7);
/// assert_eq!(guest_status(2), 125);
/// assert_eq!(guest_status(124), 125);
/// ```
pub fn guest_status(status: i32) -> i32 {
    if HOST_STATUSES.contains(&status) { EXIT_GUEST_RESERVED } else { status }
}

/// Why the host could not run a guest to a normal exit.
///
/// A guest that exits with a nonzero status is *not* an error: [`run_file`]
/// returns that status as `Ok`.
///
/// [`run_file`]: crate::run_file
#[derive(Debug)]
#[non_exhaustive]
pub enum HostError {
    /// The command line was malformed; the message says how. Displayed
    /// with the [`USAGE`](crate::USAGE) line after it.
    Usage(String),
    /// The guest file could not be read.
    Read {
        /// The guest file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The guest file is neither a core module nor a component.
    NotWasm {
        /// The guest file.
        path: PathBuf,
    },
    /// The guest failed to compile (validation or code generation).
    Compile {
        /// The guest file.
        path: PathBuf,
        /// Wasmtime's reason, on one line.
        reason: String,
    },
    /// The guest needs something the host does not provide (an unknown
    /// import, a missing `_start` or `wasi:cli/run` export).
    Link {
        /// The guest file.
        path: PathBuf,
        /// Wasmtime's reason, on one line.
        reason: String,
    },
    /// A `--dir` could not be opened.
    Preopen {
        /// The host directory.
        host: PathBuf,
        /// Why it could not be opened, on one line.
        reason: String,
    },
    /// Socket flags were given for a preview 1 module, which wasmtime 48
    /// cannot give sockets to.
    P1Sockets {
        /// The guest file.
        path: PathBuf,
        /// The offending flag, `--listen`, `--connect` or `--allow-dns`.
        flag: &'static str,
    },
    /// The guest executed a trapping instruction (or a host call trapped it).
    Trapped {
        /// The trap and the wasm backtrace, possibly on several lines.
        report: String,
    },
    /// The guest used up the fuel given with `--fuel`.
    OutOfFuel {
        /// The fuel the guest started with.
        fuel: u64,
    },
    /// A memory or table growth was refused because of `--max-memory` (one
    /// budget for all the guest's memories and tables together) and the
    /// guest then stopped abnormally (typically by aborting).
    OutOfMemory {
        /// The `--max-memory` limit in bytes.
        limit: usize,
    },
    /// The guest was still running (or sleeping, or waiting) when
    /// `--timeout` passed. [`run_file`](crate::run_file) never returns it:
    /// it prints it and exits the process with [`EXIT_TIMEOUT`].
    TimedOut {
        /// The `--timeout` given.
        timeout: std::time::Duration,
    },
    /// The guest failed in a way that is neither a trap nor an exit; the
    /// report is wasmtime's error chain.
    Failed {
        /// What went wrong, possibly on several lines.
        report: String,
    },
}

impl HostError {
    /// The process exit status the binary uses for this error:
    /// [`EXIT_USAGE`] (2) when the guest never started, [`EXIT_ABNORMAL`]
    /// (134) when it started and was stopped, [`EXIT_TIMEOUT`] (124) when
    /// `--timeout` stopped it.
    pub fn exit_status(&self) -> i32 {
        match self {
            HostError::Usage(_)
            | HostError::Read { .. }
            | HostError::NotWasm { .. }
            | HostError::Compile { .. }
            | HostError::Link { .. }
            | HostError::Preopen { .. }
            | HostError::P1Sockets { .. } => EXIT_USAGE,
            HostError::Trapped { .. }
            | HostError::OutOfFuel { .. }
            | HostError::OutOfMemory { .. }
            | HostError::Failed { .. } => EXIT_ABNORMAL,
            HostError::TimedOut { .. } => EXIT_TIMEOUT,
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Usage(msg) => write!(f, "{msg}\n{}", crate::cli::USAGE),
            HostError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            HostError::NotWasm { path } => {
                write!(f, "{} is not a WebAssembly module or component (bad header)", path.display())
            }
            HostError::Compile { path, reason } => {
                write!(f, "cannot compile {}: {reason}", path.display())
            }
            HostError::Link { path, reason } => {
                write!(f, "cannot link {}: {reason}", path.display())
            }
            HostError::Preopen { host, reason } => {
                write!(f, "cannot open --dir {}: {reason}", host.display())
            }
            HostError::P1Sockets { path, flag } => write!(
                f,
                "{} is a preview 1 module and {flag} is not supported for it: \
                 preview 1 sockets need a runtime that preopens them \
                 (wasmtime-cli 46's -Stcplisten); build the guest for \
                 wasm32-wasip2 to use sockets here",
                path.display()
            ),
            HostError::Trapped { report } => write!(f, "guest trapped: {report}"),
            HostError::OutOfFuel { fuel } => {
                write!(f, "guest ran out of fuel ({fuel} units)")
            }
            HostError::OutOfMemory { limit } => {
                write!(f, "guest ran out of memory (limit {limit} bytes)")
            }
            HostError::TimedOut { timeout } => {
                write!(f, "guest stopped: --timeout {} passed", crate::cli::show_duration(*timeout))
            }
            HostError::Failed { report } => write!(f, "guest failed: {report}"),
        }
    }
}

impl std::error::Error for HostError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HostError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}
