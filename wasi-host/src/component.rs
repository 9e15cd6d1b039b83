//! Preview 2: a component exporting `wasi:cli/run`, linked against
//! wasmtime-wasi's synchronous `wasi:cli/command` imports.

use std::path::Path;
use std::sync::Arc;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::sockets::WasiSocketsCtxView;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::config::HostConfig;
use crate::error::HostError;
use crate::report::DenialLog;
use crate::run::{MemoryLimiter, limit_store, stopped, wasi_builder};
use crate::sockets::{Guarded, HasSocketGuard, SocketGuard};

struct State {
    ctx: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    guard: SocketGuard,
}

impl HasSocketGuard for State {
    fn guarded(&mut self) -> Guarded<'_> {
        Guarded::new(WasiSocketsCtxView { ctx: self.ctx.sockets(), table: &mut self.table }, &self.guard)
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
    }
}

/// Runs a `wasi:cli/command` component; see [`crate::run_file`].
pub(crate) fn run(
    engine: &Engine,
    path: &Path,
    bytes: &[u8],
    config: &HostConfig,
    denials: &Arc<DenialLog>,
) -> Result<i32, HostError> {
    let link_error = |e: wasmtime::Error| HostError::Link { path: path.to_owned(), reason: format!("{e:#}") };
    let component = Component::new(engine, bytes)
        .map_err(|e| HostError::Compile { path: path.to_owned(), reason: format!("{e:#}") })?;

    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(link_error)?;
    crate::sockets::shadow(&mut linker).map_err(link_error)?;
    let pre = linker.instantiate_pre(&component).map_err(link_error)?;
    // Fails when the component does not export `wasi:cli/run`.
    let pre = CommandPre::new(pre).map_err(link_error)?;

    let mut builder = wasi_builder(path, config, denials)?;
    // Names are looked up only past the guard in front (`--allow-dns`).
    builder.allow_ip_name_lookup(true);
    let state = State {
        ctx: builder.build(),
        table: ResourceTable::new(),
        limiter: MemoryLimiter::new(config.max_memory),
        guard: SocketGuard { allow_dns: config.allow_dns, denials: Arc::clone(denials) },
    };
    let mut store = Store::new(engine, state);
    limit_store(&mut store, config, |s| &mut s.limiter)?;

    let result = pre.instantiate(&mut store).and_then(|command| command.wasi_cli_run().call_run(&mut store));
    match result {
        Ok(Ok(())) => Ok(0),
        Ok(Err(())) => Ok(1),
        Err(e) => stopped(e, config, &store.data().limiter),
    }
}
