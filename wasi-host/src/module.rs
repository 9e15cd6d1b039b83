//! Preview 1: a core module with a `_start` export, linked against
//! wasmtime-wasi's `wasi_snapshot_preview1` (itself built on preview 2).

use std::path::Path;
use std::sync::Arc;

use wasmtime::{Engine, ExternType, Linker, Module, Store};
use wasmtime_wasi::p1::{self, WasiP1Ctx};

use crate::config::HostConfig;
use crate::error::HostError;
use crate::report::DenialLog;
use crate::run::{MemoryLimiter, limit_store, stopped, wasi_builder};

struct State {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
}

/// Runs a preview 1 command module; see [`crate::run_file`].
pub(crate) fn run(
    engine: &Engine,
    path: &Path,
    bytes: &[u8],
    config: &HostConfig,
    denials: &Arc<DenialLog>,
) -> Result<i32, HostError> {
    let link_error = |reason: String| HostError::Link { path: path.to_owned(), reason };
    let module = Module::new(engine, bytes)
        .map_err(|e| HostError::Compile { path: path.to_owned(), reason: format!("{e:#}") })?;
    match module.get_export("_start") {
        Some(ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => {}
        Some(_) => return Err(link_error("`_start` is not a function `() -> ()`".into())),
        None => {
            return Err(link_error("no `_start` export (not a WASI command module)".into()));
        }
    }

    let mut linker = Linker::new(engine);
    p1::add_to_linker_sync(&mut linker, |s: &mut State| &mut s.wasi)
        .map_err(|e| link_error(format!("cannot set up WASI: {e:#}")))?;
    let pre = linker.instantiate_pre(&module).map_err(|e| link_error(format!("{e:#}")))?;

    let wasi = wasi_builder(path, config, denials)?.build_p1();
    let mut store = Store::new(engine, State { wasi, limiter: MemoryLimiter::new(config.max_memory) });
    limit_store(&mut store, config, |s| &mut s.limiter)?;

    // Instantiating runs the module's start function, which may trap too.
    let result = pre.instantiate(&mut store).and_then(|instance| {
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
        start.call(&mut store, ())
    });
    match result {
        Ok(()) => Ok(0),
        Err(e) => stopped(e, config, &store.data().limiter),
    }
}
