//! The echo servers, run in a child process (`trio-bench --serve
//! trio|tokio|trio-uring|monoio ADDR`), and the parent's handle on that
//! process: trio on epoll, tokio's current-thread runtime, and, on Linux
//! with io_uring, trio on its io_uring driver and monoio on its own.
//!
//! All are built the same way: one listener, one task per
//! connection, a 16 KiB buffer per connection, `TCP_NODELAY`, receive then
//! send everything received, until end of stream.
//!
//! Control channel: the child prints `listening ADDR` once bound; every
//! byte it then reads on stdin makes it print one line
//! `rusage USER_NS SYS_NS VOLUNTARY_CSW INVOLUNTARY_CSW` (its
//! `getrusage(RUSAGE_SELF)`); end of stdin makes it exit. A thread blocked on
//! stdin does that, so it costs the server nothing between requests.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trio::abc::{Listener, ReceiveStream, SendStream};

const BUF: usize = 16 * 1024;

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// trio on its readiness driver (epoll).
    Trio,
    Tokio,
    /// trio on its io_uring driver.
    TrioUring,
    /// monoio (thread-per-core, io_uring) on its io_uring driver.
    Monoio,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Trio => "trio",
            Kind::Tokio => "tokio",
            Kind::TrioUring => "trio-uring",
            Kind::Monoio => "monoio",
        }
    }
}

/// Whether this machine can run the io_uring servers (trio's driver and
/// monoio's need the same kernel features).
pub(crate) fn uring_here() -> bool {
    cfg!(target_os = "linux") && trio::RunOptions::new().driver(trio::Driver::Uring).run(async { Ok(()) }).is_ok()
}

/// The child's side: serves forever (until stdin closes or a signal).
pub(crate) fn serve(kind: &str, addr: &str) -> ! {
    let addr: SocketAddr = addr.parse().unwrap_or_else(|e| panic!("--serve: bad address {addr:?}: {e}"));
    std::thread::spawn(control_loop);
    let result = match kind {
        "trio" => serve_trio(addr, trio::Driver::Epoll),
        "trio-uring" => serve_trio(addr, trio::Driver::Uring),
        "tokio" => serve_tokio(addr),
        #[cfg(target_os = "linux")]
        "monoio" => serve_monoio(addr),
        other => panic!("--serve: unknown server {other:?} (trio, tokio, trio-uring or monoio)"),
    };
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{kind} echo server: {e}");
            std::process::exit(1);
        }
    }
}

fn announce(addr: SocketAddr) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "listening {addr}");
    let _ = out.flush();
}

fn control_loop() {
    let mut stdin = io::stdin().lock();
    let mut byte = [0u8; 1];
    loop {
        match stdin.read(&mut byte) {
            Ok(1) => {
                let u = Rusage::now();
                let mut out = io::stdout().lock();
                let _ = writeln!(out, "rusage {} {} {} {}", u.user_ns, u.sys_ns, u.vol_csw, u.invol_csw);
                let _ = out.flush();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // End of stdin: the bench is done with us (or gone).
            _ => std::process::exit(0),
        }
    }
}

fn serve_trio(addr: SocketAddr, driver: trio::Driver) -> Result<(), Box<dyn std::error::Error>> {
    trio::RunOptions::new().driver(driver).run(async {
        let listener = trio::net::TcpListener::bind(addr)?;
        announce(listener.local_addr()?);
        trio::open_nursery(async |n| -> trio::Result<()> {
            loop {
                let stream = listener.accept().await?;
                n.spawn(async move {
                    let mut buf = vec![0u8; BUF];
                    loop {
                        let k = match stream.receive_some(&mut buf).await {
                            Ok(0) | Err(_) => return Ok(()),
                            Ok(k) => k,
                        };
                        if stream.send_all(&buf[..k]).await.is_err() {
                            return Ok(());
                        }
                    }
                });
            }
        })
        .await?;
        Ok(())
    })?;
    Ok(())
}

fn serve_tokio(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        announce(listener.local_addr()?);
        loop {
            let (mut stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(async move {
                let mut buf = vec![0u8; BUF];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => {
                            if stream.write_all(&buf[..k]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    })
}

/// monoio's echo server on its io_uring driver: its buffers are owned
/// (handed to the kernel and back), so a receive's buffer is sent as it is.
#[cfg(target_os = "linux")]
fn serve_monoio(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    use monoio::buf::IoBufMut;
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().build()?;
    rt.block_on(async {
        let listener = monoio::net::TcpListener::bind(addr)?;
        announce(listener.local_addr()?);
        loop {
            let (mut stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            monoio::spawn(async move {
                let mut buf = Vec::with_capacity(BUF);
                loop {
                    let (r, b) = stream.read(buf).await;
                    match r {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let (r, b) = stream.write_all(b).await;
                    if r.is_err() {
                        return;
                    }
                    buf = b;
                    // SAFETY: shrinking to 0 (the next read fills it again).
                    unsafe { buf.set_init(0) };
                }
            });
        }
    })
}

/// `getrusage(RUSAGE_SELF)`: CPU times and context switches of a process.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Rusage {
    pub(crate) user_ns: u64,
    pub(crate) sys_ns: u64,
    pub(crate) vol_csw: u64,
    pub(crate) invol_csw: u64,
}

impl Rusage {
    fn now() -> Rusage {
        // SAFETY: `getrusage` fills the zeroed struct it is given.
        let ru = unsafe {
            let mut ru: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_SELF, &mut ru);
            ru
        };
        let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
        Rusage {
            user_ns: ns(ru.ru_utime),
            sys_ns: ns(ru.ru_stime),
            vol_csw: ru.ru_nvcsw as u64,
            invol_csw: ru.ru_nivcsw as u64,
        }
    }

    fn parse(line: &str) -> Option<Rusage> {
        let mut it = line.strip_prefix("rusage ")?.split_whitespace().map(|w| w.parse::<u64>());
        let mut next = || it.next()?.ok();
        Some(Rusage { user_ns: next()?, sys_ns: next()?, vol_csw: next()?, invol_csw: next()? })
    }

    /// `self - earlier`.
    pub(crate) fn since(self, earlier: Rusage) -> Rusage {
        Rusage {
            user_ns: self.user_ns.saturating_sub(earlier.user_ns),
            sys_ns: self.sys_ns.saturating_sub(earlier.sys_ns),
            vol_csw: self.vol_csw.saturating_sub(earlier.vol_csw),
            invol_csw: self.invol_csw.saturating_sub(earlier.invol_csw),
        }
    }
}

/// Kills the child when dropped, whether the bench returns or unwinds.
pub(crate) struct ChildGuard(pub(crate) Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Makes the child die with the bench even if the bench is killed outright
/// (`PR_SET_PDEATHSIG`; the guards cover normal exits and panics).
pub(crate) fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: `getpid` before the fork; in the child only
        // async-signal-safe calls (`prctl`, `getppid`, `_exit`).
        unsafe {
            let parent = libc::getpid();
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// A running echo server in a child process (this executable with
/// `--serve`). Dropping it kills the child.
pub(crate) struct ServerProcess {
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// Declared last: the pipes close before the kill.
    child: ChildGuard,
    pub(crate) addr: SocketAddr,
}

impl ServerProcess {
    /// Starts an echo server of `kind` (pinned to `cpu`, if given) and waits
    /// for its address.
    pub(crate) fn spawn_on(kind: Kind, cpu: Option<usize>) -> io::Result<ServerProcess> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["--serve", kind.name(), "127.0.0.1:0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        die_with_parent(&mut cmd);
        if let Some(cpu) = cpu {
            crate::affinity::pin_command(&mut cmd, cpu);
        }
        let mut child = ChildGuard(cmd.spawn()?);
        let stdin = child.0.stdin.take();
        let stdout = BufReader::new(child.0.stdout.take().expect("piped stdout"));
        let mut server = ServerProcess { stdin, stdout, child, addr: SocketAddr::from(([127, 0, 0, 1], 0)) };
        let line = server.read_line()?;
        server.addr = line
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| io::Error::other(format!("{} server said {line:?}", kind.name())))?;
        Ok(server)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.0.id()
    }

    fn read_line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server process exited"));
        }
        Ok(line.trim_end().to_owned())
    }

    /// The server's resource usage now (call it while no message is in
    /// flight).
    pub(crate) fn rusage(&mut self) -> io::Result<Rusage> {
        let stdin = self.stdin.as_mut().expect("stdin open while the server lives");
        stdin.write_all(b"r")?;
        stdin.flush()?;
        let line = self.read_line()?;
        Rusage::parse(&line).ok_or_else(|| io::Error::other(format!("bad rusage line {line:?}")))
    }
}
