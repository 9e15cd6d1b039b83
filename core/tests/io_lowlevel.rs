//! `lowlevel::wait_readable`, `wait_writable`, `notify_closing` on raw
//! descriptors (Unix).
#![cfg(unix)]
// Native only: WASI has its own socket tests (examples/wasi/tests).
#![cfg(not(target_os = "wasi"))]

mod util;

use std::cell::Cell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use trio::lowlevel::{notify_closing, wait_readable, wait_writable};
use trio::testing::{assert_checkpoints, wait_all_tasks_blocked};
use trio::{CancelScope, Error, move_on_after, open_nursery};
use util::{mock_run, secs};

/// A non-blocking pipe: (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: a valid two-int array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors we own.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn write(fd: RawFd, data: &[u8]) -> isize {
    // SAFETY: valid buffer.
    unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) }
}

fn read(fd: RawFd, buf: &mut [u8]) -> isize {
    // SAFETY: valid buffer.
    unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) }
}

#[test]
fn wait_readable_wakes_when_data_arrives() {
    let (r, w) = pipe();
    mock_run(async {
        let woke = Cell::new(false);
        open_nursery(async |n| {
            n.spawn(async {
                wait_readable(r.as_raw_fd()).await?;
                woke.set(true);
                Ok(())
            });
            wait_all_tasks_blocked(Duration::ZERO).await?;
            assert!(!woke.get(), "nothing to read yet");
            assert_eq!(write(w.as_raw_fd(), b"x"), 1);
            Ok(())
        })
        .await?;
        assert!(woke.get());
        Ok(())
    })
    .unwrap();
}

#[test]
fn wait_is_level_triggered_and_a_checkpoint() {
    let (r, w) = pipe();
    assert_eq!(write(w.as_raw_fd(), b"abc"), 3);
    mock_run(async {
        // Readable already: returns after a checkpoint, every time.
        for _ in 0..3 {
            assert_checkpoints(wait_readable(r.as_raw_fd())).await?;
        }
        assert_checkpoints(wait_writable(w.as_raw_fd())).await?;
        // Drained: now it blocks (the deadline gives up).
        let mut buf = [0u8; 8];
        assert_eq!(read(r.as_raw_fd(), &mut buf), 3);
        let r2 = move_on_after(secs(1), wait_readable(r.as_raw_fd())).await?;
        assert!(r2.is_none(), "a drained pipe is not readable");
        Ok(())
    })
    .unwrap();
}

#[test]
fn second_waiter_in_the_same_direction_is_busy() {
    let (r, w) = pipe();
    mock_run(async {
        open_nursery(async |n| {
            n.spawn(async { wait_readable(r.as_raw_fd()).await });
            wait_all_tasks_blocked(Duration::ZERO).await?;
            assert!(matches!(wait_readable(r.as_raw_fd()).await, Err(Error::Busy)));
            // The other direction of another descriptor is fine meanwhile.
            wait_writable(w.as_raw_fd()).await?;
            assert_eq!(write(w.as_raw_fd(), b"x"), 1);
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn notify_closing_wakes_waiters_with_closed() {
    let (r, _w) = pipe();
    mock_run(async {
        let got = std::cell::RefCell::new(None);
        open_nursery(async |n| {
            n.spawn(async {
                *got.borrow_mut() = Some(wait_readable(r.as_raw_fd()).await);
                Ok(())
            });
            wait_all_tasks_blocked(Duration::ZERO).await?;
            notify_closing(r.as_raw_fd())?;
            Ok(())
        })
        .await?;
        assert!(matches!(got.take(), Some(Err(Error::Closed))));
        // Unknown descriptors are fine.
        notify_closing(12345)?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn cancelled_wait_leaves_no_registration_behind() {
    let (r, w) = pipe();
    mock_run(async {
        for _ in 0..5 {
            let scope = CancelScope::new();
            scope.cancel();
            assert!(scope.run(wait_readable(r.as_raw_fd())).await?.is_none());
            assert!(move_on_after(secs(1), wait_readable(r.as_raw_fd())).await?.is_none());
        }
        // Not Busy: the cancelled waiters are gone; and it still works.
        assert_eq!(write(w.as_raw_fd(), b"x"), 1);
        wait_readable(r.as_raw_fd()).await?;
        Ok(())
    })
    .unwrap();
    // The temporary registration is gone: closing the descriptor and
    // reusing its number in a new run is fine.
    drop(r);
    let (r, w) = pipe();
    mock_run(async {
        assert_eq!(write(w.as_raw_fd(), b"y"), 1);
        wait_readable(r.as_raw_fd()).await
    })
    .unwrap();
}

#[test]
fn reregistering_a_reused_descriptor_number_works() {
    mock_run(async {
        for i in 0..20u8 {
            let (r, w) = pipe();
            assert_eq!(write(w.as_raw_fd(), &[i]), 1);
            wait_readable(r.as_raw_fd()).await?;
            let mut b = [0u8; 1];
            assert_eq!(read(r.as_raw_fd(), &mut b), 1);
            assert_eq!(b[0], i);
            // Closed without notify_closing: the wait's registration was
            // temporary, so the number can come back next round.
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn waiting_on_a_regular_file_is_a_clear_error() {
    let f = std::fs::File::open("/proc/self/exe").or_else(|_| std::fs::File::open("/bin/sh")).unwrap();
    let r = mock_run(async { wait_readable(f.as_raw_fd()).await });
    match r {
        Err(Error::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::EPERM)),
        other => panic!("expected EPERM, got {other:?}"),
    }
}

#[test]
fn wait_outside_run_is_a_runtime_error() {
    let (r, _w) = pipe();
    let mut fut = std::pin::pin!(wait_readable(r.as_raw_fd()));
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    assert!(matches!(fut.as_mut().poll(&mut cx), std::task::Poll::Ready(Err(Error::Runtime(_)))));
    assert!(matches!(notify_closing(r.as_raw_fd()), Err(Error::Runtime(_))));
}
