//! What the guest is given: directories, environment, network, budgets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::policy::NetPolicy;

/// Everything a guest is granted besides stdio (which it always inherits).
///
/// The default grants nothing: no directories, an empty environment, no
/// network, no arguments beyond argv\[0\], unlimited fuel and memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// Preopened directories (`--dir HOST::GUEST[:ro]`).
    pub dirs: Vec<Preopen>,
    /// Environment variables as (key, value) (`--env K=V`); nothing is
    /// inherited from the host.
    pub envs: Vec<(String, String)>,
    /// Addresses the guest may bind and listen on (`--listen`); port 0
    /// means any port on that IP. See [`NetPolicy`] for the exact rules.
    pub listen: Vec<SocketAddr>,
    /// Addresses the guest may connect to (`--connect`); port 0 means any
    /// port on that IP.
    pub connect: Vec<SocketAddr>,
    /// Whether the guest may look names up (`--allow-dns`): each lookup
    /// sends the name, chosen by the guest, to the host's resolver, and
    /// reads the host's `/etc/hosts`. Without it only IP addresses written
    /// out "resolve" (to themselves); every other name is refused with a
    /// [`LookupDenial`](crate::LookupDenial) line.
    pub allow_dns: bool,
    /// Fuel units the guest may consume before it is stopped (`--fuel`);
    /// `None` means unmetered (metering slows code, so it is off by default).
    pub fuel: Option<u64>,
    /// One budget in bytes for all the guest's linear memories and tables
    /// together (`--max-memory`; a table element counts as a pointer); a
    /// growth past it fails in the guest as if the system were out of memory.
    pub max_memory: Option<usize>,
    /// Wall-clock time the guest may run, sleeping and waiting included
    /// (`--timeout`); at the deadline the host prints one line and the
    /// process exits with [`EXIT_TIMEOUT`](crate::EXIT_TIMEOUT).
    pub timeout: Option<Duration>,
    /// Guest arguments after argv\[0\] (everything after `--`). argv\[0\] is
    /// the guest's file name.
    pub args: Vec<String>,
}

/// A host directory the guest sees under a path of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preopen {
    /// The directory on the host.
    pub host: PathBuf,
    /// The path the guest opens it by.
    pub guest: String,
    /// `:ro`: the guest may read files and list directories in it, but not
    /// create, write, rename, remove or change anything (wasmtime-wasi's
    /// `FsPerms::ReadOnly`, checked by the host for every call).
    pub read_only: bool,
}

impl HostConfig {
    /// The network policy `listen` and `connect` describe.
    pub fn net_policy(&self) -> NetPolicy {
        NetPolicy { listen: self.listen.clone(), connect: self.connect.clone() }
    }
}
