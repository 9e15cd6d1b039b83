//! Running a guest file: detect its kind, set up wasmtime and WASI the same
//! way for both kinds, and turn how the guest stopped into an exit status.
//!
//! The kind-specific parts live beside this file: `module.rs` (preview 1)
//! and `component.rs` (preview 2).

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap, WasmBacktrace, WasmBacktraceDetails};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::config::HostConfig;
use crate::error::{HOST_STATUSES, HostError, guest_status};
use crate::report::{DenialLog, say};
use crate::{component, module};

/// What a WebAssembly binary's 8-byte header says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WasmKind {
    /// A core module (`\0asm`, version 1, layer 0): run as preview 1.
    Module,
    /// A component (`\0asm`, any version, layer 1): run as preview 2.
    Component,
}

/// Reads the header of `bytes`: the magic `\0asm`, a 16-bit version and a
/// 16-bit layer (0 for core modules, 1 for components). Returns `None` for
/// anything else, including the WebAssembly text format and precompiled
/// `.cwasm` files.
pub fn detect_kind(bytes: &[u8]) -> Option<WasmKind> {
    match bytes.get(..8)? {
        [0, b'a', b's', b'm', 1, 0, 0, 0] => Some(WasmKind::Module),
        [0, b'a', b's', b'm', _, _, 1, 0] => Some(WasmKind::Component),
        _ => None,
    }
}

/// Runs the guest in `path` with what `config` grants, to completion.
///
/// Blocks the calling thread until the guest exits. The guest inherits the
/// process's stdin, stdout and stderr. Socket operations the policy refuses
/// are reported on stderr as they happen, one line each, at most
/// [`MAX_DENIAL_LINES`](crate::MAX_DENIAL_LINES) per run: then one line says
/// further denials are not printed, and when the guest stops, one line says
/// how many were left out. Failing to write to stderr is ignored.
///
/// # Errors
///
/// Returns `Ok(status)` when the guest exits on its own: 0 when `_start` or
/// `wasi:cli/run` returns successfully, 1 when `wasi:cli/run` returns an
/// error, the exit code when it calls `proc_exit` or `wasi:cli/exit`,
/// except that a status the host uses itself
/// ([`HOST_STATUSES`](crate::HOST_STATUSES): 2, 124, 125, 134) becomes
/// [`EXIT_GUEST_RESERVED`](crate::EXIT_GUEST_RESERVED) (125), with one
/// line on stderr giving the guest's own status. Returns a [`HostError`]
/// when the guest cannot be loaded or linked, or stops abnormally (trap,
/// fuel, memory); see [`HostError::exit_status`] for the status to exit
/// with.
///
/// With [`HostConfig::timeout`], a thread watches the wall clock: if the
/// guest has not stopped by then, whatever it is doing (running, sleeping,
/// blocked in `poll_oneoff` or `wasi:io/poll`), that thread prints
/// [`HostError::TimedOut`] on stderr and **exits the process** with
/// [`EXIT_TIMEOUT`](crate::EXIT_TIMEOUT) (124): wasmtime cannot interrupt
/// a guest blocked in a host call.
pub fn run_file(path: &Path, config: &HostConfig) -> Result<i32, HostError> {
    let bytes = std::fs::read(path).map_err(|source| HostError::Read { path: path.to_owned(), source })?;
    let kind = detect_kind(&bytes).ok_or_else(|| HostError::NotWasm { path: path.to_owned() })?;
    if kind == WasmKind::Module {
        // Checked before compiling: the answer does not depend on the code.
        for (given, flag) in [(&config.listen, "--listen"), (&config.connect, "--connect")] {
            if !given.is_empty() {
                return Err(HostError::P1Sockets { path: path.to_owned(), flag });
            }
        }
        if config.allow_dns {
            return Err(HostError::P1Sockets { path: path.to_owned(), flag: "--allow-dns" });
        }
    }
    let engine = engine(path, config)?;
    let denials = Arc::new(DenialLog::default());
    let watchdog = config.timeout.map(|timeout| watchdog(timeout, Arc::clone(&denials)));
    let status = match kind {
        WasmKind::Module => module::run(&engine, path, &bytes, config, &denials),
        WasmKind::Component => component::run(&engine, path, &bytes, config, &denials),
    };
    // Disconnects the watchdog: it returns without a word.
    drop(watchdog);
    denials.finish();
    let status = status?;
    let shown = guest_status(status);
    if HOST_STATUSES.contains(&status) {
        say(format_args!(
            "trio-wasi-host: the guest exited with status {status}, which the host uses for its own \
             errors; exiting with {shown} instead\n"
        ));
    }
    Ok(shown)
}

/// Starts the `--timeout` thread; dropping the sender it returns stops it.
fn watchdog(timeout: Duration, denials: Arc<DenialLog>) -> mpsc::Sender<()> {
    let (stop, stopped) = mpsc::channel::<()>();
    thread::spawn(move || {
        if stopped.recv_timeout(timeout) != Err(RecvTimeoutError::Timeout) {
            return;
        }
        // The line is written from a thread of its own and waited for only
        // briefly: a guest blocked writing to the same stderr (a pipe
        // nobody reads) holds its lock, and must not keep the host alive.
        let (written, wait) = mpsc::channel::<()>();
        thread::spawn(move || {
            denials.finish();
            let err = HostError::TimedOut { timeout };
            say(format_args!("trio-wasi-host: {err}\n"));
            let _ = written.send(());
        });
        let _ = wait.recv_timeout(Duration::from_millis(500));
        std::process::exit(crate::EXIT_TIMEOUT);
    });
    stop
}

fn engine(path: &Path, config: &HostConfig) -> Result<Engine, HostError> {
    let mut c = Config::new();
    // Metering costs speed, so only when asked for.
    c.consume_fuel(config.fuel.is_some());
    // Built without DWARF support: no file/line details, and no hint
    // telling the user to set WASMTIME_BACKTRACE_DETAILS.
    c.wasm_backtrace_details(WasmBacktraceDetails::Disable);
    Engine::new(&c)
        .map_err(|e| HostError::Compile { path: path.to_owned(), reason: format!("cannot set up wasmtime: {e:#}") })
}

/// The WASI context both kinds share: stdio, argv, env, preopens, network.
/// Refused socket operations are reported through `denials`.
pub(crate) fn wasi_builder(
    path: &Path,
    config: &HostConfig,
    denials: &Arc<DenialLog>,
) -> Result<WasiCtxBuilder, HostError> {
    let mut b = WasiCtxBuilder::new();
    b.inherit_stdio();
    let argv0 = path.file_name().map_or_else(|| path.to_string_lossy(), |n| n.to_string_lossy());
    b.arg(argv0);
    b.args(&config.args);
    b.envs(&config.envs);
    for dir in &config.dirs {
        let perms = if dir.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
        b.preopened_dir(&dir.host, &dir.guest, perms)
            .map_err(|e| HostError::Preopen { host: dir.host.clone(), reason: format!("{e:#}") })?;
    }

    let policy = config.net_policy();
    // Off here; a component's linker puts the host's own check
    // (`--allow-dns`, with a denial line) in front and switches it on.
    b.allow_ip_name_lookup(false);
    b.allow_udp(false);
    // TCP stays on even with an empty policy, so that every refused
    // operation goes through the check below and gets reported.
    b.allow_tcp(true);
    let denials = Arc::clone(denials);
    b.socket_addr_check(move |addr, addr_use| {
        let allowed = match policy.check(addr, addr_use) {
            Ok(()) => true,
            Err(denial) => {
                denials.deny(denial);
                false
            }
        };
        Box::pin(std::future::ready(allowed))
    });
    Ok(b)
}

/// Applies `--fuel` and `--max-memory` to a fresh store.
pub(crate) fn limit_store<T: 'static>(
    store: &mut Store<T>,
    config: &HostConfig,
    limiter: fn(&mut T) -> &mut MemoryLimiter,
) -> Result<(), HostError> {
    store.limiter(move |data| limiter(data));
    if let Some(fuel) = config.fuel {
        store.set_fuel(fuel).map_err(|e| HostError::Failed { report: format!("cannot set fuel: {e:#}") })?;
    }
    Ok(())
}

/// Bytes one table element counts for against `--max-memory`: a pointer,
/// as wasmtime 48 stores every table element (see
/// [`ResourceLimiter::table_growing`]).
pub(crate) const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

/// Enforces `--max-memory` as one budget per store: the bytes of every
/// linear memory and every table (at [`TABLE_ELEMENT_BYTES`] per element)
/// the guest's instances hold, added together. Remembers whether it refused
/// a growth, so that a later abort can be explained.
///
/// A guest cannot create instances, memories or tables at run time: they
/// come from the binary's own structure (a component may hold several core
/// instances), and each one's initial size is a growth from zero, counted
/// here like any other.
#[derive(Debug, Default)]
pub(crate) struct MemoryLimiter {
    limit: Option<usize>,
    /// Bytes granted so far, memories and tables together.
    used: usize,
    /// The bytes of the last growth granted, given back if it then fails.
    last_granted: usize,
    refused: bool,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: Option<usize>) -> Self {
        MemoryLimiter { limit, ..MemoryLimiter::default() }
    }

    /// Grants growing by `more` bytes if the budget allows it.
    fn grow(&mut self, more: usize) -> bool {
        let total = self.used.saturating_add(more);
        if self.limit.is_some_and(|limit| total > limit) {
            self.refused = true;
            return false;
        }
        self.used = total;
        self.last_granted = more;
        true
    }

    fn give_back(&mut self) {
        self.used -= std::mem::take(&mut self.last_granted);
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        // The module's own maximum is not the host's limit: checked first,
        // so that it neither uses the budget nor counts as refused.
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        Ok(self.grow(desired.saturating_sub(current)))
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.give_back();
        Ok(())
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        Ok(self.grow(desired.saturating_sub(current).saturating_mul(TABLE_ELEMENT_BYTES)))
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.give_back();
        Ok(())
    }
}

/// Turns the error a guest stopped with into its exit status or the
/// host's explanation.
pub(crate) fn stopped(err: wasmtime::Error, config: &HostConfig, limiter: &MemoryLimiter) -> Result<i32, HostError> {
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return Ok(exit.0);
    }
    let trap = err.downcast_ref::<Trap>().copied();
    if let (Some(Trap::OutOfFuel), Some(fuel)) = (trap, config.fuel) {
        return Err(HostError::OutOfFuel { fuel });
    }
    if limiter.refused
        && let Some(limit) = limiter.limit
    {
        return Err(HostError::OutOfMemory { limit });
    }
    match trap {
        Some(trap) => Err(HostError::Trapped { report: trap_report(trap, err.downcast_ref::<WasmBacktrace>()) }),
        None => Err(HostError::Failed { report: failure_report(&err) }),
    }
}

/// Why the guest failed (the innermost error's message) and, on the next
/// lines, its wasm backtrace. Not the error's `Debug` form, which adds the
/// host's own stack when `RUST_BACKTRACE` is set: the guest failed, not the
/// host.
fn failure_report(err: &wasmtime::Error) -> String {
    let mut report = err.root_cause().to_string();
    if let Some(bt) = err.downcast_ref::<WasmBacktrace>() {
        let bt = bt.to_string();
        report.push('\n');
        report.push_str(bt.strip_prefix("error while executing at ").unwrap_or(&bt));
    }
    report
}

/// `wasm `unreachable` instruction executed` and, on the next lines,
/// `wasm backtrace:` and the frames (wasmtime's wording, minus the
/// redundant "wasm trap: " and "error while executing at ").
fn trap_report(trap: Trap, backtrace: Option<&WasmBacktrace>) -> String {
    let trap = trap.to_string();
    let mut report = trap.strip_prefix("wasm trap: ").unwrap_or(&trap).to_owned();
    if let Some(bt) = backtrace {
        let bt = bt.to_string();
        report.push('\n');
        report.push_str(bt.strip_prefix("error while executing at ").unwrap_or(&bt));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        let module = b"\0asm\x01\0\0\0";
        let component = b"\0asm\x0d\0\x01\0";
        assert_eq!(detect_kind(module), Some(WasmKind::Module));
        assert_eq!(detect_kind(component), Some(WasmKind::Component));
        assert_eq!(detect_kind(b"\0asm\x01\0\0"), None);
        assert_eq!(detect_kind(b"\0asm\x02\0\0\0"), None);
        assert_eq!(detect_kind(b"(module)"), None);
        assert_eq!(detect_kind(b"\x7fELF\x02\x01\x01\0\0\0"), None);
        assert_eq!(detect_kind(b""), None);
    }

    #[test]
    fn limiter_refuses_past_the_limit_only() {
        let mut l = MemoryLimiter::new(Some(2 << 16));
        assert!(l.memory_growing(0, 2 << 16, None).unwrap());
        assert!(!l.refused);
        // The module's own maximum is not the host's limit.
        assert!(!l.memory_growing(0, 1 << 16, Some(0)).unwrap());
        assert!(!l.refused);
        assert!(!l.memory_growing(2 << 16, 3 << 16, None).unwrap());
        assert!(l.refused);
    }

    #[test]
    fn memories_and_tables_share_one_budget() {
        let mut l = MemoryLimiter::new(Some(1 << 20));
        // Two memories of 512 KiB each fill the budget...
        assert!(l.memory_growing(0, 1 << 19, None).unwrap());
        assert!(l.memory_growing(0, 1 << 19, None).unwrap());
        // ...so not one more table element fits.
        assert!(!l.table_growing(0, 1, None).unwrap());
        assert!(l.refused);

        let mut l = MemoryLimiter::new(Some((1 << 17) * TABLE_ELEMENT_BYTES));
        assert!(l.table_growing(0, 1000, None).unwrap());
        assert!(l.table_growing(1000, 1 << 17, None).unwrap());
        assert_eq!(l.used, (1 << 17) * TABLE_ELEMENT_BYTES);
        assert!(!l.table_growing(1 << 17, (1 << 17) + 1, None).unwrap());
        assert!(!l.memory_growing(0, 1 << 16, None).unwrap());
    }

    #[test]
    fn a_failed_growth_gives_its_bytes_back() {
        let mut l = MemoryLimiter::new(Some(1 << 20));
        assert!(l.memory_growing(0, 1 << 20, None).unwrap());
        l.memory_grow_failed(wasmtime::Error::msg("mmap failed")).unwrap();
        assert_eq!(l.used, 0);
        assert!(l.table_growing(0, 10, None).unwrap());
        l.table_grow_failed(wasmtime::Error::msg("too big")).unwrap();
        assert_eq!(l.used, 0);
        assert!(!l.refused);
    }

    #[test]
    fn no_limit_grants_everything_within_the_maximum() {
        let mut l = MemoryLimiter::new(None);
        assert!(l.memory_growing(0, usize::MAX / 2, None).unwrap());
        assert!(l.table_growing(0, usize::MAX, None).unwrap());
        assert!(!l.table_growing(0, 11, Some(10)).unwrap());
        assert!(!l.refused);
    }
}
