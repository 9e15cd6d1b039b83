//! The network policy: deny by default, allow what `--listen` and `--connect`
//! name. The rules are on [`NetPolicy`].

use std::fmt;
use std::net::SocketAddr;

use wasmtime_wasi::sockets::SocketAddrUse;

/// The addresses a guest may use. (Name lookups have their own flag,
/// `--allow-dns`; see [`LookupDenial`].)
///
/// wasmtime-wasi asks a `socket_addr_check` before every bind, listen,
/// connect and accept of a preview 2 socket. [`check`](Self::check) answers it:
///
/// * bind: the address must match a `--listen` entry, except that binding
///   the unspecified address (`0.0.0.0` or `::`) with port 0 is always
///   allowed. That is what wasmtime-wasi checks for the implicit bind before
///   every outgoing connect and before `listen` on an unbound socket; the
///   connect or listen check that follows then decides, so the denial names
///   the real problem. A bound socket that neither listens nor connects
///   exposes nothing.
/// * listen: the socket's local address (with the real port if it was bound
///   to port 0) must match a `--listen` entry.
/// * accept: always allowed; the listener itself was allowed.
/// * connect: the remote address must match a `--connect` entry.
/// * UDP: denied (UDP sockets are also switched off as a whole).
///
/// An entry with port 0 matches any port on its IP address. IPv4-mapped IPv6
/// addresses are compared as the IPv4 address they map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetPolicy {
    /// Addresses the guest may bind and listen on (`--listen`).
    pub listen: Vec<SocketAddr>,
    /// Addresses the guest may connect to (`--connect`).
    pub connect: Vec<SocketAddr>,
}

/// A refused socket operation, displayed as the line the host prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denial {
    /// What the guest tried.
    pub addr_use: Use,
    /// The address it tried it with.
    pub addr: SocketAddr,
}

/// The kind of socket operation a [`Denial`] refused (wasmtime-wasi's
/// `SocketAddrUse`, with `Eq` and a stable set of variants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Binding a TCP socket, explicitly or implicitly.
    TcpBind,
    /// Turning a TCP socket into a listener.
    TcpListen,
    /// Accepting a client on a TCP listener.
    TcpAccept,
    /// Connecting a TCP socket.
    TcpConnect,
    /// Any UDP operation.
    Udp,
}

impl From<SocketAddrUse> for Use {
    fn from(u: SocketAddrUse) -> Self {
        match u {
            SocketAddrUse::TcpBind => Use::TcpBind,
            SocketAddrUse::TcpListen => Use::TcpListen,
            SocketAddrUse::TcpAccept => Use::TcpAccept,
            SocketAddrUse::TcpConnect => Use::TcpConnect,
            SocketAddrUse::UdpBind | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => Use::Udp,
        }
    }
}

impl NetPolicy {
    /// Whether nothing is allowed (no `--listen`, no `--connect`).
    pub fn is_empty(&self) -> bool {
        self.listen.is_empty() && self.connect.is_empty()
    }

    /// Decides whether the guest may use `addr` for `addr_use`.
    ///
    /// # Errors
    ///
    /// Returns the [`Denial`] to report when the policy refuses.
    pub fn check(&self, addr: SocketAddr, addr_use: impl Into<Use>) -> Result<(), Denial> {
        let addr_use = addr_use.into();
        let allowed = match addr_use {
            Use::TcpBind => (addr.ip().is_unspecified() && addr.port() == 0) || matches_any(&self.listen, addr),
            Use::TcpListen => matches_any(&self.listen, addr),
            Use::TcpAccept => true,
            Use::TcpConnect => matches_any(&self.connect, addr),
            Use::Udp => false,
        };
        if allowed { Ok(()) } else { Err(Denial { addr_use, addr }) }
    }
}

fn matches_any(entries: &[SocketAddr], addr: SocketAddr) -> bool {
    entries.iter().any(|entry| matches(*entry, addr))
}

fn matches(entry: SocketAddr, addr: SocketAddr) -> bool {
    entry.ip().to_canonical() == addr.ip().to_canonical() && (entry.port() == 0 || entry.port() == addr.port())
}

/// A refused name lookup: the guest asked to resolve a name (not an IP
/// address written out) without `--allow-dns`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupDenial {
    /// The name the guest asked for, as it gave it.
    pub name: String,
}

/// A refused UDP socket: the guest tried to create one (UDP is never
/// allowed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpDenial;

/// The longest part of a guest-chosen name a denial line shows.
const MAX_NAME_SHOWN: usize = 100;

impl fmt::Display for LookupDenial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The name comes from the guest: escaped (no control characters or
        // newlines reach the terminal) and cut short.
        let mut shown: String = self.name.chars().take(MAX_NAME_SHOWN).flat_map(char::escape_debug).collect();
        if self.name.chars().nth(MAX_NAME_SHOWN).is_some() {
            shown.push_str("...");
        }
        write!(f, "access denied: guest tried to look up the name \"{shown}\", not allowed without --allow-dns")
    }
}

impl fmt::Display for UdpDenial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "access denied: guest tried to create a UDP socket; UDP is never allowed")
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = self.addr;
        match self.addr_use {
            Use::TcpBind => write!(f, "access denied: guest tried to bind {addr}, not allowed by --listen"),
            Use::TcpListen => write!(f, "access denied: guest tried to listen on {addr}, not allowed by --listen"),
            Use::TcpAccept => write!(f, "access denied: guest tried to accept a client from {addr}"),
            Use::TcpConnect => write!(f, "access denied: guest tried to connect to {addr}, not allowed by --connect"),
            Use::Udp => write!(f, "access denied: guest tried to use UDP with {addr}; UDP is not supported"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn policy(listen: &[&str], connect: &[&str]) -> NetPolicy {
        NetPolicy { listen: listen.iter().map(|s| a(s)).collect(), connect: connect.iter().map(|s| a(s)).collect() }
    }

    #[test]
    fn empty_policy_denies_everything_but_accept_and_wildcard_bind() {
        let p = policy(&[], &[]);
        assert!(p.is_empty());
        assert!(p.check(a("127.0.0.1:0"), Use::TcpBind).is_err());
        assert!(p.check(a("0.0.0.0:80"), Use::TcpBind).is_err());
        // The implicit bind before connect/listen; those checks decide.
        assert!(p.check(a("0.0.0.0:0"), Use::TcpBind).is_ok());
        assert!(p.check(a("[::]:0"), Use::TcpBind).is_ok());
        assert!(p.check(a("0.0.0.0:0"), Use::TcpListen).is_err());
        assert!(p.check(a("127.0.0.1:80"), Use::TcpListen).is_err());
        assert!(p.check(a("127.0.0.1:80"), Use::TcpConnect).is_err());
        assert!(p.check(a("127.0.0.1:80"), Use::Udp).is_err());
    }

    #[test]
    fn listen_exact_address() {
        let p = policy(&["127.0.0.1:8080"], &[]);
        assert!(p.check(a("127.0.0.1:8080"), Use::TcpBind).is_ok());
        assert!(p.check(a("127.0.0.1:8080"), Use::TcpListen).is_ok());
        assert!(p.check(a("127.0.0.1:8081"), Use::TcpBind).is_err());
        assert!(p.check(a("0.0.0.0:8080"), Use::TcpBind).is_err());
        assert!(p.check(a("127.0.0.1:0"), Use::TcpBind).is_err());
        // Listening does not grant connecting.
        assert!(p.check(a("127.0.0.1:8080"), Use::TcpConnect).is_err());
        // Nor listening on the wildcard address.
        assert!(p.check(a("0.0.0.0:8080"), Use::TcpListen).is_err());
    }

    #[test]
    fn listen_port_zero_is_a_wildcard_for_that_ip() {
        let p = policy(&["127.0.0.1:0"], &[]);
        assert!(p.check(a("127.0.0.1:0"), Use::TcpBind).is_ok());
        // listen sees the real, ephemeral port.
        assert!(p.check(a("127.0.0.1:40123"), Use::TcpListen).is_ok());
        assert!(p.check(a("127.0.0.2:0"), Use::TcpBind).is_err());
        assert!(p.check(a("[::1]:0"), Use::TcpBind).is_err());
        // Bound to the wildcard address, then listening: refused at listen.
        assert!(p.check(a("0.0.0.0:0"), Use::TcpBind).is_ok());
        assert!(p.check(a("0.0.0.0:40123"), Use::TcpListen).is_err());
    }

    #[test]
    fn connect_does_not_grant_listen() {
        let p = policy(&[], &["127.0.0.1:9000"]);
        assert!(p.check(a("0.0.0.0:0"), Use::TcpBind).is_ok());
        assert!(p.check(a("[::]:0"), Use::TcpBind).is_ok());
        assert!(p.check(a("127.0.0.1:9000"), Use::TcpConnect).is_ok());
        assert!(p.check(a("127.0.0.1:9001"), Use::TcpConnect).is_err());
        assert!(p.check(a("10.0.0.1:9000"), Use::TcpConnect).is_err());
        // A socket bound for connecting cannot become a listener.
        assert!(p.check(a("0.0.0.0:0"), Use::TcpListen).is_err());
        assert!(p.check(a("0.0.0.0:41000"), Use::TcpListen).is_err());
        assert!(p.check(a("0.0.0.0:80"), Use::TcpBind).is_err());
    }

    #[test]
    fn connect_port_zero_and_mapped_addresses() {
        let p = policy(&[], &["127.0.0.1:0"]);
        assert!(p.check(a("127.0.0.1:1"), Use::TcpConnect).is_ok());
        assert!(p.check(a("[::ffff:127.0.0.1]:443"), Use::TcpConnect).is_ok());
        assert!(p.check(a("[::1]:443"), Use::TcpConnect).is_err());
    }

    #[test]
    fn accept_is_allowed_and_udp_is_not() {
        let p = policy(&["127.0.0.1:0"], &["127.0.0.1:0"]);
        assert!(p.check(a("10.1.2.3:5555"), Use::TcpAccept).is_ok());
        for u in [SocketAddrUse::UdpBind, SocketAddrUse::UdpSend, SocketAddrUse::UdpReceive] {
            assert!(p.check(a("127.0.0.1:53"), u).is_err());
        }
    }

    #[test]
    fn denial_messages() {
        let p = policy(&[], &[]);
        let d = p.check(a("0.0.0.0:80"), Use::TcpBind).unwrap_err();
        assert_eq!(d.to_string(), "access denied: guest tried to bind 0.0.0.0:80, not allowed by --listen");
        let d = p.check(a("[::1]:22"), Use::TcpConnect).unwrap_err();
        assert_eq!(d.to_string(), "access denied: guest tried to connect to [::1]:22, not allowed by --connect");
        let d = LookupDenial { name: "example.com".into() };
        assert_eq!(
            d.to_string(),
            "access denied: guest tried to look up the name \"example.com\", not allowed without --allow-dns"
        );
        assert_eq!(UdpDenial.to_string(), "access denied: guest tried to create a UDP socket; UDP is never allowed");
    }

    #[test]
    fn a_looked_up_name_is_escaped_and_cut_short() {
        let d = LookupDenial { name: "evil\nname\u{1b}[2J\"".into() };
        assert!(d.to_string().contains(r#""evil\nname\u{1b}[2J\"""#), "{d}");
        assert_eq!(d.to_string().lines().count(), 1);
        let d = LookupDenial { name: "a".repeat(10_000) };
        let line = d.to_string();
        assert!(line.contains(&format!("\"{}...\"", "a".repeat(MAX_NAME_SHOWN))), "{line}");
        assert!(line.len() < 200);
    }
}
