//! `trio::subprocess` on every OS that has it (Unix and Windows, the
//! latter under Wine in CI): the children are this test program itself,
//! run again with `TRIO_TEST_CHILD` set, so no shell or Unix tool is needed.
//!
//! The file has its own `main` (`harness = false` in `Cargo.toml`): a child
//! must act before any test harness prints to its stdout, which is the pipe
//! under test. Without `TRIO_TEST_CHILD` it runs the tests below in order
//! (the arguments that do not start with `-` filter them by substring) and
//! fails if any fails.

#[cfg(any(unix, windows))]
mod util;

#[cfg(any(unix, windows))]
mod portable {
    use std::cell::Cell;
    use std::io::{Read, Write};
    use std::process::{Command, ExitStatus};
    use std::rc::Rc;
    use std::time::Duration;

    use trio::abc::{AsyncResource, ReceiveStream, SendStream};
    use trio::subprocess::{
        CalledProcessError, PipeReceiveStream, Process, Redirect, RunProcessOptions, StdioOptions, open_pipe,
        open_process, run_process,
    };
    use trio::testing::wait_all_tasks_blocked;
    use trio::{CancelScope, Error, TaskStatus, fail_after, open_nursery};

    use super::util::pseudo_random;

    /// The environment variable that turns this program into a child.
    const CHILD: &str = "TRIO_TEST_CHILD";

    /// A generous bound on every test (real time): a hang fails instead of
    /// blocking CI. Nothing is timed with it.
    const GUARD: Duration = Duration::from_secs(120);

    /// The longest a `sleep` child lives if nobody kills it.
    const CHILD_SLEEP: Duration = Duration::from_secs(600);

    // ---- the child ----

    /// What a child does, by `TRIO_TEST_CHILD`:
    /// - `cat`: copies stdin to stdout until end of stream;
    /// - `cat-err:N`: `cat`, then writes N bytes `e` to stderr;
    /// - `print:TEXT`: writes TEXT to stdout;
    /// - `exit:K`: exits with code K;
    /// - `sleep`: sleeps (up to ten minutes) until killed.
    fn child(mode: &str) -> i32 {
        let mut out = std::io::stdout().lock();
        if mode == "cat" || mode.starts_with("cat-err:") {
            let mut input = std::io::stdin().lock();
            let mut buf = vec![0u8; 64 * 1024];
            // Bounded by the input: each turn copies at least one byte.
            loop {
                match input.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if out.write_all(&buf[..n]).is_err() {
                            return 3;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return 4,
                }
            }
            if out.flush().is_err() {
                return 5;
            }
            if let Some(n) = mode.strip_prefix("cat-err:") {
                let n: usize = n.parse().unwrap_or(0);
                let mut err = std::io::stderr().lock();
                if err.write_all(&vec![b'e'; n]).and_then(|()| err.flush()).is_err() {
                    return 6;
                }
            }
            0
        } else if let Some(text) = mode.strip_prefix("print:") {
            if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
                return 3;
            }
            0
        } else if let Some(code) = mode.strip_prefix("exit:") {
            code.parse().unwrap_or(2)
        } else if mode == "sleep" {
            std::thread::sleep(CHILD_SLEEP);
            99
        } else {
            2
        }
    }

    /// This program as a child doing `mode`.
    fn child_cmd(mode: &str) -> Command {
        let exe = std::env::current_exe().expect("the test program's path");
        let mut c = Command::new(exe);
        c.env(CHILD, mode);
        c
    }

    /// Reads `s` to its end (bounded: each turn reads at least a byte, and
    /// there are at most `limit` bytes).
    async fn read_to_end(s: &PipeReceiveStream, limit: usize) -> trio::Result<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..=limit {
            match s.receive_some(&mut buf).await? {
                0 => return Ok(got),
                n => got.extend_from_slice(&buf[..n]),
            }
        }
        panic!("more than {limit} bytes");
    }

    /// Sends `data` and closes `tx` in one task while reading `rx` to its
    /// end in another; what was read.
    async fn send_and_read_back(
        tx: &trio::subprocess::PipeSendStream,
        rx: &PipeReceiveStream,
        data: &[u8],
    ) -> trio::Result<Vec<u8>> {
        let got = Cell::new(Vec::new());
        open_nursery(async |n| {
            n.spawn(async {
                tx.send_all(data).await?;
                tx.aclose().await
            });
            got.set(read_to_end(rx, data.len()).await?);
            Ok(())
        })
        .await?;
        Ok(got.take())
    }

    fn killed(s: ExitStatus) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            s.signal().is_some()
        }
        // `TerminateProcess` with exit code 1, as `std`'s `Child::kill`.
        #[cfg(windows)]
        {
            s.code() == Some(1)
        }
    }

    /// Runs `f` in a fresh run under [`GUARD`].
    fn run(f: impl AsyncFnOnce() -> trio::Result<()>) {
        trio::run(fail_after(GUARD, f())).unwrap();
    }

    // ---- the tests ----

    fn run_process_feeds_input_and_captures_stdout_and_stderr() {
        run(async || {
            let out = run_process(
                &mut child_cmd("cat-err:1000"),
                RunProcessOptions::new()
                    .input(&b"hello through the child"[..])
                    .capture_stdout(true)
                    .capture_stderr(true),
            )
            .await?;
            assert!(out.status.success(), "{:?}", out.status);
            assert_eq!(out.stdout, b"hello through the child");
            assert_eq!(out.stderr, vec![b'e'; 1000]);

            // Default stdin: empty, so `cat` ends at once.
            let out = run_process(&mut child_cmd("cat"), RunProcessOptions::new().capture_stdout(true)).await?;
            assert!(out.status.success());
            assert!(out.stdout.is_empty());
            Ok(())
        });
    }

    fn run_process_reports_the_exit_status_and_checks_it() {
        run(async || {
            let out = run_process(&mut child_cmd("exit:3"), RunProcessOptions::new().check(false)).await?;
            assert_eq!(out.status.code(), Some(3));

            let err = run_process(&mut child_cmd("exit:4"), RunProcessOptions::new()).await.unwrap_err();
            let Error::User(e) = &err else { panic!("{err}") };
            let failed = e.downcast_ref::<CalledProcessError>().expect("a CalledProcessError");
            assert_eq!(failed.status.code(), Some(4));

            let out = run_process(&mut child_cmd("exit:0"), RunProcessOptions::new()).await?;
            assert!(out.status.success());

            // A program that does not exist: an I/O error, nothing left behind.
            let r = run_process(&mut Command::new("trio-no-such-program-here"), RunProcessOptions::new()).await;
            assert!(matches!(r, Err(Error::Io(ref e)) if e.kind() == std::io::ErrorKind::NotFound), "{r:?}");
            Ok(())
        });
    }

    fn cancelling_run_process_kills_and_reaps_the_child() {
        run(async || {
            let result = Cell::new(None);
            let mut started = None;
            open_nursery(async |n| {
                let p: Rc<Process> = n
                    .start(async |status: TaskStatus<Rc<Process>>| {
                        let opts = RunProcessOptions::new().check(false).task_status(status);
                        result.set(Some(run_process(&mut child_cmd("sleep"), opts).await));
                        Ok(())
                    })
                    .await?;
                assert!(p.returncode().is_none(), "the child sleeps");
                started = Some(p);
                n.cancel_scope().cancel();
                Ok(())
            })
            .await?;
            let r = result.take().expect("run_process returned");
            assert!(matches!(r, Err(Error::Cancelled(_))), "{r:?}");
            // Reaped before run_process returned.
            let status = started.unwrap().returncode().expect("the child was reaped");
            assert!(killed(status), "{status:?}");

            // Cancelled before it starts: no child at all, `Cancelled`.
            let scope = CancelScope::new();
            scope.cancel();
            let r = scope.run(run_process(&mut child_cmd("sleep"), RunProcessOptions::new())).await?;
            assert!(r.is_none(), "{r:?}");
            Ok(())
        });
    }

    fn a_mebibyte_goes_through_cat_while_it_is_read_back() {
        run(async || {
            let mut p =
                open_process(&mut child_cmd("cat"), StdioOptions::new().stdin(Redirect::Pipe).stdout(Redirect::Pipe))?;
            assert!(p.stderr.is_none());
            let stdin = p.stdin.take().unwrap();
            let stdout = p.stdout.take().unwrap();
            let data = pseudo_random(1 << 20);
            let got = send_and_read_back(&stdin, &stdout, &data).await?;
            assert_eq!(got.len(), data.len());
            assert!(got == data, "the data came back changed");
            // End of stream stays.
            let mut buf = [0u8; 8];
            assert_eq!(stdout.receive_some(&mut buf).await?, 0);
            assert!(p.wait().await?.success());
            stdout.aclose().await?;
            Ok(())
        });
    }

    fn stdout_reaches_end_of_stream_when_the_child_exits() {
        run(async || {
            let p = open_process(&mut child_cmd("print:hello"), StdioOptions::new().stdout(Redirect::Pipe))?;
            let out = p.stdout.as_ref().unwrap();
            assert_eq!(read_to_end(out, 100).await?, b"hello");
            let mut buf = [0u8; 8];
            assert_eq!(out.receive_some(&mut buf).await?, 0);
            let status = p.wait().await?;
            assert!(status.success());
            assert_eq!(p.returncode().map(|s| s.success()), Some(true));
            assert_eq!(p.wait().await?.code(), Some(0), "a second wait returns the same status");
            p.aclose().await?;
            assert!(matches!(out.receive_some(&mut buf).await, Err(Error::Closed)));
            Ok(())
        });
    }

    fn kill_wait_and_returncode() {
        run(async || {
            let p = open_process(&mut child_cmd("sleep"), StdioOptions::new())?;
            assert!(p.returncode().is_none());
            // A wait is a checkpoint: cancelled, it leaves the child alone.
            let scope = CancelScope::new();
            scope.cancel();
            assert!(scope.run(p.wait()).await?.is_none());
            assert!(p.returncode().is_none());
            // Several waiters, all woken by the exit.
            let statuses = std::cell::RefCell::new(Vec::new());
            open_nursery(async |n| {
                for _ in 0..3 {
                    n.spawn(async {
                        let s = p.wait().await?;
                        statuses.borrow_mut().push(s);
                        Ok(())
                    });
                }
                wait_all_tasks_blocked(Duration::ZERO).await?;
                p.terminate()?;
                Ok(())
            })
            .await?;
            let statuses = statuses.into_inner();
            assert_eq!(statuses.len(), 3);
            assert!(statuses.iter().all(|s| killed(*s) && *s == statuses[0]), "{statuses:?}");
            assert_eq!(p.returncode(), Some(statuses[0]));
            // Killing a reaped child does nothing.
            p.kill()?;
            p.terminate()?;
            Ok(())
        });
    }

    fn a_dropped_process_is_killed() {
        run(async || {
            let mut p = open_process(&mut child_cmd("sleep"), StdioOptions::new().stdout(Redirect::Pipe))?;
            let stdout = p.stdout.take().unwrap();
            let pid = p.pid();
            drop(p);
            // The child held the only other end of the pipe: end of stream
            // means it is gone.
            assert_eq!(read_to_end(&stdout, 0).await?, b"");
            #[cfg(target_os = "linux")]
            {
                // Reaped by a background thread soon after.
                let gone = || !std::path::Path::new(&format!("/proc/{pid}")).exists();
                super::util::until_within(Duration::from_secs(10), gone).await?;
            }
            #[cfg(not(target_os = "linux"))]
            let _ = pid;
            Ok(())
        });
    }

    fn concurrent_receivers_and_senders_are_busy_and_a_cancelled_send_breaks() {
        run(async || {
            let p = open_process(
                &mut child_cmd("sleep"),
                StdioOptions::new().stdin(Redirect::Pipe).stdout(Redirect::Pipe),
            )?;
            let stdin = p.stdin.as_ref().unwrap();
            let stdout = p.stdout.as_ref().unwrap();
            let big = vec![1u8; 4 << 20];
            let send_scope = CancelScope::new();
            let send_scope = &send_scope;
            open_nursery(async |n| {
                // Nobody reads the child's stdin: this send blocks once the
                // pipe is full, having sent part of the data.
                n.spawn(async {
                    let r = send_scope.run(stdin.send_all(&big)).await?;
                    assert!(r.is_none(), "the send cannot finish: {r:?}");
                    Ok(())
                });
                // The child writes nothing: this receive waits.
                n.spawn(async {
                    let mut buf = [0u8; 16];
                    assert_eq!(stdout.receive_some(&mut buf).await?, 0, "end of stream once killed");
                    Ok(())
                });
                wait_all_tasks_blocked(Duration::ZERO).await?;
                let mut buf = [0u8; 16];
                assert!(matches!(stdout.receive_some(&mut buf).await, Err(Error::Busy)));
                assert!(matches!(stdin.send_all(b"x").await, Err(Error::Busy)));
                assert!(matches!(stdin.wait_send_all_might_not_block().await, Err(Error::Busy)));
                send_scope.cancel();
                wait_all_tasks_blocked(Duration::ZERO).await?;
                assert!(matches!(stdin.send_all(b"x").await, Err(Error::Broken)), "a cancelled partial send breaks");
                p.kill()
            })
            .await?;
            assert!(killed(p.wait().await?));
            p.aclose().await?;
            assert!(matches!(stdin.send_all(b"x").await, Err(Error::Closed)));
            Ok(())
        });
    }

    fn stderr_merged_into_stdout() {
        run(async || {
            let out = run_process(
                &mut child_cmd("cat-err:5"),
                RunProcessOptions::new().input(&b"abc"[..]).capture_stdout(true).stderr(Redirect::Stdout),
            )
            .await?;
            assert_eq!(out.stdout, b"abceeeee");
            assert!(out.stderr.is_empty());
            Ok(())
        });
    }

    fn open_pipe_carries_bytes_and_end_of_stream() {
        run(async || {
            let (tx, rx) = open_pipe()?;
            let data = pseudo_random(300_000);
            assert!(send_and_read_back(&tx, &rx, &data).await? == data);
            assert!(matches!(tx.send_all(b"x").await, Err(Error::Closed)));
            rx.aclose().await
        });
    }

    fn input_a_child_never_reads_is_not_an_error() {
        run(async || {
            // The child exits without reading: feeding stdin breaks, which
            // run_process ignores, as Trio does.
            let out =
                run_process(&mut child_cmd("exit:0"), RunProcessOptions::new().input(vec![b'x'; 1 << 20])).await?;
            assert!(out.status.success());
            Ok(())
        });
    }

    fn sending_to_a_child_that_exited_is_broken() {
        run(async || {
            let p = open_process(&mut child_cmd("exit:0"), StdioOptions::new().stdin(Redirect::Pipe))?;
            assert!(p.wait().await?.success());
            let stdin = p.stdin.as_ref().unwrap();
            stdin.wait_send_all_might_not_block().await?;
            // On Windows a write completes in the background and its failure
            // is reported by the next one, so the first send may succeed.
            let mut result = Ok(());
            for _ in 0..3 {
                result = stdin.send_all(b"nobody reads this").await;
                if result.is_err() {
                    break;
                }
            }
            assert!(matches!(result, Err(Error::Broken)), "{result:?}");
            assert!(matches!(stdin.send_all(b"x").await, Err(Error::Broken)), "Broken stays");
            Ok(())
        });
    }

    #[cfg(feature = "futures-io")]
    fn pipes_implement_futures_io() {
        use futures_lite::{AsyncReadExt, AsyncWriteExt};
        run(async || {
            let mut p =
                open_process(&mut child_cmd("cat"), StdioOptions::new().stdin(Redirect::Pipe).stdout(Redirect::Pipe))?;
            let mut stdin = p.stdin.take().unwrap();
            let mut stdout = p.stdout.take().unwrap();
            let data = pseudo_random(200_000);
            let mut got = Vec::new();
            open_nursery(async |n| {
                n.spawn(async {
                    stdin.write_all(&data).await?;
                    stdin.close().await?;
                    Ok(())
                });
                stdout.read_to_end(&mut got).await?;
                Ok(())
            })
            .await?;
            assert!(got == data);
            assert!(p.wait().await?.success());
            Ok(())
        });
    }

    /// Handles (Windows) or descriptors (Linux) this process has open.
    #[cfg(any(windows, target_os = "linux"))]
    fn open_handles() -> usize {
        #[cfg(windows)]
        {
            let mut n = 0u32;
            // SAFETY: the pseudo-handle of this process and an out-parameter.
            let ok = unsafe {
                windows_sys::Win32::System::Threading::GetProcessHandleCount(
                    windows_sys::Win32::System::Threading::GetCurrentProcess(),
                    &mut n,
                )
            };
            assert_ne!(ok, 0, "GetProcessHandleCount failed");
            if n > 0 {
                return n as usize;
            }
            // Wine answers 0: count the handle values (multiples of 4) that
            // name an open handle instead.
            (1..=1usize << 16)
                .filter(|i| {
                    let mut flags = 0u32;
                    // SAFETY: asks about a handle value; fails for one that
                    // is not open.
                    unsafe { windows_sys::Win32::Foundation::GetHandleInformation((i * 4) as _, &mut flags) != 0 }
                })
                .count()
        }
        #[cfg(target_os = "linux")]
        {
            std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
        }
    }

    /// One run using every kind of pipe and ending every way: closed while
    /// a read waits, closed with a write in flight, a child killed, one
    /// dropped, `run_process` to the end and cancelled.
    #[cfg(any(windows, target_os = "linux"))]
    fn exercise_everything() {
        run(async || {
            let p = open_process(&mut child_cmd("sleep"), StdioOptions::piped())?;
            open_nursery(async |n| {
                n.spawn(async {
                    let mut buf = [0u8; 8];
                    let r = p.stdout.as_ref().unwrap().receive_some(&mut buf).await;
                    assert!(matches!(r, Err(Error::Closed)), "{r:?}");
                    Ok(())
                });
                wait_all_tasks_blocked(Duration::ZERO).await?;
                // Nobody reads: on Unix this must fit in the pipe's buffer;
                // on Windows the part beyond it stays in flight, and the
                // send returns once it is handed over.
                let n = if cfg!(windows) { 100_000 } else { 10_000 };
                p.stdin.as_ref().unwrap().send_all(&vec![1u8; n]).await?;
                p.stdout.as_ref().unwrap().aclose().await
            })
            .await?;
            p.kill()?;
            p.aclose().await?;
            drop(open_process(&mut child_cmd("sleep"), StdioOptions::piped())?);
            let out = run_process(
                &mut child_cmd("cat-err:10"),
                RunProcessOptions::new().input(&b"x"[..]).capture_stdout(true).capture_stderr(true),
            )
            .await?;
            assert_eq!(out.stdout, b"x");
            open_nursery(async |n| {
                n.start(async |status: TaskStatus<Rc<Process>>| {
                    run_process(&mut child_cmd("sleep"), RunProcessOptions::new().task_status(status)).await.map(drop)
                })
                .await?;
                n.cancel_scope().cancel();
                Ok(())
            })
            .await?;
            let (tx, rx) = open_pipe()?;
            tx.send_all(b"abc").await?;
            drop((tx, rx));
            // Last: pipes closed with their reads in flight.
            drop(open_process(&mut child_cmd("sleep"), StdioOptions::piped())?);
            Ok(())
        });
    }

    #[cfg(any(windows, target_os = "linux"))]
    fn no_handle_is_leaked() {
        // The first rounds start what stays (the thread pool's threads...).
        for _ in 0..2 {
            exercise_everything();
        }
        let before = open_handles();
        const ROUNDS: usize = 5;
        for _ in 0..ROUNDS {
            exercise_everything();
        }
        let after = open_handles();
        // Leaking even one handle a round would show as ROUNDS more.
        assert!(after < before + ROUNDS, "{before} handles open before, {after} after {ROUNDS} rounds");
    }

    const TESTS: &[(&str, fn())] = &[
        #[cfg(any(windows, target_os = "linux"))]
        ("no_handle_is_leaked", no_handle_is_leaked),
        ("input_a_child_never_reads_is_not_an_error", input_a_child_never_reads_is_not_an_error),
        ("sending_to_a_child_that_exited_is_broken", sending_to_a_child_that_exited_is_broken),
        #[cfg(feature = "futures-io")]
        ("pipes_implement_futures_io", pipes_implement_futures_io),
        (
            "run_process_feeds_input_and_captures_stdout_and_stderr",
            run_process_feeds_input_and_captures_stdout_and_stderr,
        ),
        ("run_process_reports_the_exit_status_and_checks_it", run_process_reports_the_exit_status_and_checks_it),
        ("cancelling_run_process_kills_and_reaps_the_child", cancelling_run_process_kills_and_reaps_the_child),
        ("a_mebibyte_goes_through_cat_while_it_is_read_back", a_mebibyte_goes_through_cat_while_it_is_read_back),
        ("stdout_reaches_end_of_stream_when_the_child_exits", stdout_reaches_end_of_stream_when_the_child_exits),
        ("kill_wait_and_returncode", kill_wait_and_returncode),
        ("a_dropped_process_is_killed", a_dropped_process_is_killed),
        (
            "concurrent_receivers_and_senders_are_busy_and_a_cancelled_send_breaks",
            concurrent_receivers_and_senders_are_busy_and_a_cancelled_send_breaks,
        ),
        ("stderr_merged_into_stdout", stderr_merged_into_stdout),
        ("open_pipe_carries_bytes_and_end_of_stream", open_pipe_carries_bytes_and_end_of_stream),
    ];

    /// The libtest command line as far as this harness needs it (cargo test
    /// and cargo nextest both drive it): `--list` (with `--ignored`: there are
    /// no ignored tests), `--exact`, and names filtering the tests; other flags
    /// are accepted and ignored.
    struct Args {
        list: bool,
        ignored: bool,
        exact: bool,
        filters: Vec<String>,
    }

    fn parse_args() -> Args {
        let mut args = Args { list: false, ignored: false, exact: false, filters: Vec::new() };
        let mut it = std::env::args().skip(1);
        // Bounded by the arguments.
        while let Some(a) = it.next() {
            match a.as_str() {
                "--list" => args.list = true,
                "--ignored" => args.ignored = true,
                "--exact" => args.exact = true,
                // Flags with a value.
                "--format" | "--test-threads" | "--skip" | "--logfile" | "--color" | "-Z" => {
                    it.next();
                }
                _ if a.starts_with('-') => {}
                _ => args.filters.push(a),
            }
        }
        args
    }

    pub(crate) fn main() {
        if let Ok(mode) = std::env::var(CHILD) {
            std::process::exit(child(&mode));
        }
        let args = parse_args();
        let chosen: Vec<_> = TESTS
            .iter()
            .filter(|(name, _)| {
                !args.ignored
                    && (args.filters.is_empty()
                        || args.filters.iter().any(|f| if args.exact { name == f } else { name.contains(f.as_str()) }))
            })
            .collect();
        if args.list {
            for (name, _) in chosen {
                println!("{name}: test");
            }
            return;
        }
        println!("\nrunning {} tests", chosen.len());
        let mut failed = Vec::new();
        for (name, test) in &chosen {
            let started = std::time::Instant::now();
            let ok = std::panic::catch_unwind(test).is_ok();
            println!("test {name} ... {} ({} ms)", if ok { "ok" } else { "FAILED" }, started.elapsed().as_millis());
            if !ok {
                failed.push(*name);
            }
        }
        if failed.is_empty() {
            println!("\ntest result: ok. {} passed", chosen.len());
        } else {
            println!("\nfailures: {failed:?}\ntest result: FAILED");
            std::process::exit(101);
        }
    }
}

fn main() {
    #[cfg(any(unix, windows))]
    portable::main();
}
