//! Copies standard input to standard output through `trio::stdio` while a
//! timer task ticks, to show that waiting for stdin does not stop the loop.
//!
//! - `wasm32-wasip1` (`wasmtime run -Spreview2=n p1_stdio_echo.wasm`): the
//!   copy runs on `trio::stdio::stdin()`/`stdout()` (receives of 1000 bytes,
//!   smaller than what a read takes from the host, so the kept remainder is
//!   exercised too) beside a task that ticks every 10 ms. At end of input it
//!   writes `p1_stdio_echo: copied N bytes, M ticks` to standard error and
//!   exits with 0. While the input is idle the ticks go on; if waiting for
//!   stdin blocked the guest, there would be (almost) none.
//! - elsewhere (`trio::stdio` is WASI preview 1 only): a plain blocking
//!   `std::io::copy`, with the same last line and 0 ticks.

#[cfg(all(target_os = "wasi", target_env = "p1"))]
fn main() {
    use std::cell::Cell;
    use std::time::Duration;

    use trio::abc::{ReceiveStream, SendStream};

    let copied = Cell::new(0u64);
    let ticks = Cell::new(0u64);
    let result = trio::run(async {
        trio::open_nursery(async |n| {
            n.spawn(async {
                loop {
                    trio::sleep(Duration::from_millis(10)).await?;
                    ticks.set(ticks.get() + 1);
                }
            });
            let (stdin, stdout) = (trio::stdio::stdin(), trio::stdio::stdout());
            let mut buf = [0u8; 1000];
            loop {
                let got = stdin.receive_some(&mut buf).await?;
                if got == 0 {
                    break;
                }
                stdout.send_all(&buf[..got]).await?;
                copied.set(copied.get() + got as u64);
            }
            n.cancel_scope().cancel();
            Ok(())
        })
        .await
    });
    if let Err(e) = result {
        eprintln!("p1_stdio_echo: {e}");
        std::process::exit(1);
    }
    eprintln!("p1_stdio_echo: copied {} bytes, {} ticks", copied.get(), ticks.get());
}

#[cfg(not(all(target_os = "wasi", target_env = "p1")))]
fn main() {
    let copied = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::stdout().lock()).unwrap_or_else(|e| {
        eprintln!("p1_stdio_echo: {e}");
        std::process::exit(1);
    });
    eprintln!("p1_stdio_echo: copied {copied} bytes, 0 ticks (trio::stdio is WASI preview 1 only)");
}
