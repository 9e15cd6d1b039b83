//! Ports of Python Trio's `src/trio/_tests/test_highlevel_open_tcp_stream.py`
//! not already in `net_open_tcp_stream.rs` (the table is
//! `docs/TRIO_CONFORMANCE.md` (section test_highlevel_open_tcp_stream.py)).
// Native only: WASI has its own socket tests.
#![cfg(not(target_os = "wasi"))]

mod util;

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use trio::abc::AsyncResource;
use trio::net::{TcpListener, open_stream_happy_eyeballs, open_tcp_stream};
use trio::{Error, Instant, Result, current_time};
use util::mock_run;

/// A fake connected stream: just its address.
#[derive(Debug)]
struct Fake(SocketAddr);

impl AsyncResource for Fake {
    async fn aclose(&self) -> Result<()> {
        trio::checkpoint().await
    }
}

fn addr(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), 80)
}

fn approx(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

// trio: test_highlevel_open_tcp_stream.py::test_handles_no_ipv6
// The IPv6 attempts fail at once (as when a socket of that family cannot
// be made), so the IPv4 ones go on without waiting for the delay.
#[test]
fn handles_no_ipv6() {
    mock_run(async {
        let t0: Instant = current_time()?;
        let script = [("::1", 0.0), ("2.2.2.2", 10.0), ("::3", 0.0), ("4.4.4.4", 0.1)];
        let started = RefCell::new(Vec::new());
        let targets: Vec<SocketAddr> = script.iter().map(|(ip, _)| addr(ip)).collect();
        let connect = async |a: SocketAddr| -> Result<Fake> {
            let elapsed = (current_time()? - t0).as_secs_f64();
            if a.is_ipv6() {
                return Err(Error::Io(io::Error::new(io::ErrorKind::Unsupported, "no IPv6 here")));
            }
            started.borrow_mut().push((a.ip().to_string(), elapsed));
            let delay = script.iter().find(|(ip, _)| addr(ip) == a).unwrap().1;
            trio::sleep(Duration::from_secs_f64(delay)).await?;
            Ok(Fake(a))
        };
        let s = open_stream_happy_eyeballs(&targets, Some(Duration::from_secs(1)), connect).await?;
        assert_eq!(s.0, addr("4.4.4.4"));
        assert!(approx((current_time()? - t0).as_secs_f64(), 1.1));
        let started = started.borrow();
        assert_eq!(started.len(), 2, "{started:?}");
        assert_eq!(started[0].0, "2.2.2.2");
        assert!(approx(started[0].1, 0.0), "{started:?}");
        assert_eq!(started[1].0, "4.4.4.4");
        assert!(approx(started[1].1, 1.0), "{started:?}");
        Ok(())
    })
    .unwrap();
}

// trio: test_highlevel_open_tcp_stream.py::test_format_host_port
// What `format_host_port` is for: the error names the address tried,
// IPv6 in brackets.
#[test]
fn a_failed_connect_names_the_address_ipv6_in_brackets() {
    mock_run(async {
        let mut hosts = vec!["127.0.0.1"];
        if std::net::TcpListener::bind("[::1]:0").is_ok() {
            hosts.push("::1");
        }
        for host in hosts {
            let port = {
                let l = TcpListener::bind(SocketAddr::new(host.parse().unwrap(), 0))?;
                l.local_addr()?.port()
            };
            match open_tcp_stream(host, port).await {
                Err(Error::Io(e)) => {
                    let want = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
                    assert!(e.to_string().contains(&want), "{e} should name {want}");
                }
                other => panic!("nothing listens there: {other:?}"),
            }
        }
        Ok(())
    })
    .unwrap();
}
