//! The two preview 2 socket calls wasmtime-wasi refuses without asking the
//! host: name lookups (`wasi:sockets/ip-name-lookup`) and UDP sockets
//! (`wasi:sockets/udp-create-socket`). The host links its own versions over
//! wasmtime-wasi's, so that each refusal is decided by the host's policy and
//! reported with a line like every other denial; what is allowed is passed
//! on to wasmtime-wasi unchanged.

use std::net::IpAddr;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{self, ResolveAddressStream};
use wasmtime_wasi::p2::bindings::sockets::network::{self, ErrorCode, IpAddress, Network};
use wasmtime_wasi::p2::bindings::sync::sockets::udp::IpAddressFamily;
use wasmtime_wasi::p2::bindings::sync::sockets::udp_create_socket;
use wasmtime_wasi::p2::{DynPollable, SocketError, SocketResult, UdpSocket};
use wasmtime_wasi::sockets::WasiSocketsCtxView;

use crate::policy::{LookupDenial, UdpDenial};
use crate::report::DenialLog;

/// What the overriding calls need besides wasmtime-wasi's socket state.
pub(crate) struct SocketGuard {
    /// `--allow-dns`: whether names (not IP literals) may be looked up.
    pub(crate) allow_dns: bool,
    /// Where refusals are reported.
    pub(crate) denials: Arc<DenialLog>,
}

/// The state of one call: wasmtime-wasi's view and the guard.
pub(crate) struct Guarded<'a> {
    sockets: WasiSocketsCtxView<'a>,
    guard: &'a SocketGuard,
}

struct Guard;

impl HasData for Guard {
    type Data<'a> = Guarded<'a>;
}

/// The store data of a component with guarded sockets.
pub(crate) trait HasSocketGuard: 'static {
    /// wasmtime-wasi's socket view and the guard, borrowed together.
    fn guarded(&mut self) -> Guarded<'_>;
}

impl<'a> Guarded<'a> {
    /// Pairs wasmtime-wasi's socket view with the guard.
    pub(crate) fn new(sockets: WasiSocketsCtxView<'a>, guard: &'a SocketGuard) -> Self {
        Guarded { sockets, guard }
    }
}

/// Links the guarded `resolve-addresses` and `create-udp-socket` over the
/// ones `wasmtime_wasi::p2::add_to_linker_sync` linked.
pub(crate) fn shadow<T: HasSocketGuard>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    ip_name_lookup::add_to_linker::<T, Guard>(linker, T::guarded)?;
    udp_create_socket::add_to_linker::<T, Guard>(linker, T::guarded)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Whether `name` is an IP address written out, which resolves to itself
/// without asking any resolver (wasmtime-wasi accepts `1.2.3.4`, `::1` and
/// `[::1]`).
fn is_ip_literal(name: &str) -> bool {
    let unbracketed = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
    unbracketed.parse::<IpAddr>().is_ok()
}

// `wasi:sockets/network`, which the two interfaces build on: passed on.
impl network::Host for Guarded<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        network::Host::convert_error_code(&mut self.sockets, error)
    }

    fn network_error_code(&mut self, err: Resource<network::Error>) -> wasmtime::Result<Option<ErrorCode>> {
        network::Host::network_error_code(&mut self.sockets, err)
    }
}

impl network::HostNetwork for Guarded<'_> {
    fn drop(&mut self, net: Resource<Network>) -> wasmtime::Result<()> {
        network::HostNetwork::drop(&mut self.sockets, net)
    }
}

impl ip_name_lookup::Host for Guarded<'_> {
    fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> SocketResult<Resource<ResolveAddressStream>> {
        if !self.guard.allow_dns && !is_ip_literal(&name) {
            self.guard.denials.deny(LookupDenial { name });
            return Err(ErrorCode::AccessDenied.into());
        }
        ip_name_lookup::Host::resolve_addresses(&mut self.sockets, network, name)
    }
}

impl ip_name_lookup::HostResolveAddressStream for Guarded<'_> {
    fn resolve_next_address(&mut self, stream: Resource<ResolveAddressStream>) -> SocketResult<Option<IpAddress>> {
        ip_name_lookup::HostResolveAddressStream::resolve_next_address(&mut self.sockets, stream)
    }

    fn subscribe(&mut self, stream: Resource<ResolveAddressStream>) -> wasmtime::Result<Resource<DynPollable>> {
        ip_name_lookup::HostResolveAddressStream::subscribe(&mut self.sockets, stream)
    }

    fn drop(&mut self, stream: Resource<ResolveAddressStream>) -> wasmtime::Result<()> {
        ip_name_lookup::HostResolveAddressStream::drop(&mut self.sockets, stream)
    }
}

impl udp_create_socket::Host for Guarded<'_> {
    fn create_udp_socket(&mut self, family: IpAddressFamily) -> SocketResult<Resource<UdpSocket>> {
        // UDP is switched off in wasmtime-wasi too (`allow_udp(false)`), so
        // the call below refuses as well; this only adds the host's line.
        self.guard.denials.deny(UdpDenial);
        udp_create_socket::Host::create_udp_socket(&mut self.sockets, family)
    }
}

#[cfg(test)]
mod tests {
    use super::is_ip_literal;

    #[test]
    fn ip_literals_need_no_resolver() {
        for name in ["127.0.0.1", "::1", "[::1]", "::ffff:10.0.0.1", "[fe80::1]"] {
            assert!(is_ip_literal(name), "{name}");
        }
        for name in ["localhost", "example.com", "127.0.0.1.nip.io", "[localhost]", "", "1.2.3", "[::1"] {
            assert!(!is_ip_literal(name), "{name}");
        }
    }
}
