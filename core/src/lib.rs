//! # trio for Rust
//!
//! A structured-concurrency async runtime in the spirit of Python's
//! [Trio](https://trio.readthedocs.io): tasks are spawned only into
//! [nurseries](open_nursery) that wait for them, cancellation is
//! [scoped](CancelScope) and level-triggered, deadlines are cancel scopes, and
//! every async operation of the runtime is a checkpoint.
//!
//! ```
//! use std::time::Duration;
//! use trio::{open_nursery, sleep, move_on_after};
//!
//! trio::run(async {
//!     open_nursery(async |n| {
//!         n.spawn(async { sleep(Duration::from_millis(1)).await });
//!         n.spawn(async {
//!             // Gives up after 1 ms instead of sleeping for a day.
//!             let r = move_on_after(Duration::from_millis(1), async {
//!                 sleep(Duration::from_secs(86_400)).await
//!             })
//!             .await?;
//!             assert!(r.is_none());
//!             Ok(())
//!         });
//!         Ok(())
//!     })
//!     .await?;
//!     Ok(())
//! })
//! .unwrap();
//! ```
//!
//! See `docs/ARCHITECTURE.md` in the repository for how it works.

/// The README's example is compiled and run as a doctest, so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

pub mod abc;
mod cancel;
pub mod channel;
#[cfg(feature = "futures-io")]
mod compat;
mod driver;
mod error;
mod io;
pub mod lowlevel;
pub mod net;
mod nursery;
mod runtime;
pub mod signal;
#[cfg(all(target_os = "wasi", target_env = "p1"))]
pub mod stdio;
#[cfg(any(unix, windows))]
pub mod subprocess;
pub mod sync;
pub mod testing;
mod thread;
mod time;
#[cfg(all(feature = "tls", not(target_os = "wasi")))]
pub mod tls;

pub use abc::StapledStream;
pub use cancel::{CancelScope, Scoped};
pub use channel::{
    ChannelReceive, ChannelRecv, ChannelSend, Receiver, Sender, TrySendError, open_memory_channel,
    open_unbounded_memory_channel,
};
pub use driver::Driver;
pub use error::{BoxError, CancelReason, CancelSource, Error, Result};
pub use lowlevel::{checkpoint, checkpoint_if_cancelled};
pub use nursery::{Nursery, TaskStatus, open_nursery};
pub use runtime::{RunOptions, run};
pub use thread::{from_thread, to_thread};
pub use time::{
    Clock, Instant, SystemClock, current_effective_deadline, current_time, fail_after, fail_at, move_on_after,
    move_on_at, sleep, sleep_forever, sleep_until,
};
