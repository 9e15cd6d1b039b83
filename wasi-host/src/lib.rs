//! `trio-wasi-host`: runs trio's WASI guests in wasmtime 48.
//!
//! A guest is either a preview 1 core module (run through
//! `wasmtime_wasi::p1`, entry point `_start`) or a preview 2 component (run
//! through the `wasi:cli/command` world, entry point `wasi:cli/run`); the
//! file's header decides ([`detect_kind`]).
//!
//! The guest gets stdio, argv (its file name, then [`HostConfig::args`]) and
//! nothing else unless granted: directories, environment variables, and
//! TCP addresses to listen on or connect to ([`NetPolicy`]). Refused socket
//! operations are reported on the host's stderr and seen by the guest as
//! `access-denied`. UDP is never allowed; names are looked up only with
//! `--allow-dns`. Preview 1 modules get no sockets at all: wasmtime 48 can
//! neither preopen a listener for them nor connect for them.
//!
//! # Examples
//!
//! ```no_run
//! use trio_wasi_host::{HostConfig, run_file};
//!
//! let config = HostConfig {
//!     listen: vec!["127.0.0.1:0".parse().unwrap()],
//!     fuel: Some(1_000_000_000),
//!     ..HostConfig::default()
//! };
//! match run_file("server.wasm".as_ref(), &config) {
//!     Ok(status) => std::process::exit(status),
//!     Err(e) => {
//!         eprintln!("trio-wasi-host: {e}");
//!         std::process::exit(e.exit_status());
//!     }
//! }
//! ```

#![forbid(unsafe_code)]

mod cli;
mod component;
mod config;
mod error;
mod module;
mod policy;
mod report;
mod run;
mod sockets;

pub use cli::{Command, HELP, USAGE, parse_args};
pub use config::{HostConfig, Preopen};
pub use error::{EXIT_ABNORMAL, EXIT_GUEST_RESERVED, EXIT_TIMEOUT, EXIT_USAGE, HOST_STATUSES, HostError, guest_status};
pub use policy::{Denial, LookupDenial, NetPolicy, UdpDenial, Use};
pub use report::{MAX_DENIAL_LINES, say};
pub use run::{WasmKind, detect_kind, run_file};
