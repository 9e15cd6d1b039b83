//! A tour of structured concurrency over real sockets: one nursery holds an
//! echo server and its clients. `start()` hands back the server's address
//! once it listens; every connection is a task in the server's own nursery;
//! clients run under deadlines (`move_on_after` gives up quietly,
//! `fail_after` turns the deadline into an error); and when the clients are
//! done, cancelling the nursery's scope shuts down everything that is left
//! (the accept loop, open connections, an idle client) and waits for it.
//! Loopback only; runs on the real clock in about a quarter of a second.
//!
//! `cargo run -p trio --example demo`

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use trio::abc::{HalfCloseableStream, Listener, ReceiveStream, SendStream};
use trio::net::{TcpListener, TcpStream};
use trio::{
    CancelScope, Error, TaskStatus, fail_after, move_on_after, open_memory_channel, open_nursery, sleep, sleep_forever,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Milliseconds since the start of the demo, for the left margin.
struct Clock(Instant);

impl Clock {
    fn say(&self, what: impl std::fmt::Display) {
        println!("{:>6.1} ms  {what}", self.0.elapsed().as_secs_f64() * 1e3);
    }
}

/// The server: listens on an OS-chosen port, reports it through `start()`,
/// then runs one task per connection in its own nursery until cancelled.
async fn server(clock: &Clock, status: TaskStatus<SocketAddr>) -> trio::Result<()> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let addr = listener.local_addr()?;
    clock.say(format!("server: listening on {addr}"));
    status.started(addr);
    let served = Cell::new(0);
    let r = open_nursery(async |conns| -> trio::Result<()> {
        loop {
            let stream = listener.accept().await?;
            served.set(served.get() + 1);
            conns.spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = stream.receive_some(&mut buf).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    stream.send_all(&buf[..n]).await?;
                }
            });
        }
    })
    .await;
    // Only a cancellation ends the accept loop; by now the connection tasks
    // have been cancelled and have finished too (nothing outlives a nursery).
    clock.say(format!(
        "server: cancelled after {} connections; the connection tasks still running were cancelled with it",
        served.get()
    ));
    r.map(|_| ())
}

/// Sends `count` messages of `size` bytes, pausing `pause` after each, and
/// checks every echo; counts finished round trips in `echoed`.
async fn talk(addr: SocketAddr, count: usize, size: usize, pause: Duration, echoed: &Cell<usize>) -> trio::Result<()> {
    let stream = TcpStream::connect(addr).await?;
    let mut reply = vec![0u8; size];
    for i in 0..count {
        let msg: Vec<u8> = (0..size).map(|j| (i + j) as u8).collect();
        stream.send_all(&msg).await?;
        let mut got = 0;
        while got < size {
            match stream.receive_some(&mut reply[got..]).await? {
                0 => return Err(Error::Broken),
                n => got += n,
            }
        }
        if reply != msg {
            return Err(Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, "the echo differs")));
        }
        echoed.set(i + 1);
        if !pause.is_zero() {
            sleep(pause).await?;
        }
    }
    stream.send_eof().await
}

fn main() -> trio::Result<()> {
    let clock = Clock(Instant::now());
    trio::run(async {
        let clock = &clock;
        println!("one nursery: an echo server, four clients with deadlines, one idle client");
        open_nursery(async |n| {
            let addr = n.start(async |status| server(clock, status).await).await?;
            clock.say("main: start() returned the address; spawning the clients");

            // Each client reports on this channel when it is done.
            let (done_tx, done_rx) = open_memory_channel::<()>(4);
            let clients: [(&str, usize, usize, Duration, Duration); 3] = [
                ("client 1", 5, 64, Duration::ZERO, ms(100)),
                ("client 2", 50, 4096, Duration::ZERO, ms(100)),
                ("client 3", 5, 64, ms(80), ms(200)),
            ];
            for (name, count, size, pause, limit) in clients {
                let done = done_tx.clone();
                n.spawn_named(name, async move {
                    let echoed = Cell::new(0);
                    let t = Instant::now();
                    let r = move_on_after(limit, talk(addr, count, size, pause, &echoed)).await?;
                    let took = t.elapsed().as_secs_f64() * 1e3;
                    match r {
                        Some(()) => clock.say(format!("{name}: echoed {count} messages of {size} B in {took:.1} ms")),
                        None => clock.say(format!(
                            "{name}: gave up after {} ms (move_on_after deadline), {} of {count} messages echoed",
                            limit.as_millis(),
                            echoed.get()
                        )),
                    }
                    done.send(()).await
                });
            }
            let done = done_tx.clone();
            n.spawn_named("client 4", async move {
                let echoed = Cell::new(0);
                // fail_after: the deadline becomes an error this client handles.
                match fail_after(ms(120), talk(addr, 5, 64, ms(50), &echoed)).await {
                    Err(Error::TooSlow) => clock.say(format!(
                        "client 4: fail_after(120 ms) -> Err(TooSlow) after {} of 5 messages; handled, no one else disturbed",
                        echoed.get()
                    )),
                    other => other?,
                }
                done.send(()).await
            });
            drop(done_tx);
            n.spawn_named("client 5", async move {
                // Connects and then waits for nothing: only the shutdown ends it.
                let _stream = TcpStream::connect(addr).await?;
                clock.say("client 5: connected, idle until the shutdown");
                let r = sleep_forever().await;
                CancelScope::shielded()
                    .run(async {
                        // A shielded scope lets clean-up await even while cancelled.
                        sleep(ms(5)).await?;
                        clock.say("client 5: cancelled; said goodbye in a shielded scope");
                        Ok(())
                    })
                    .await?;
                r.map(|_| ())
            });

            for _ in 0..4 {
                done_rx.receive().await?;
            }
            clock.say("main: clients 1-4 are done; cancelling the nursery's scope");
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        clock.say("main: the nursery has closed: every task in it has finished");
        Ok(())
    })
}
