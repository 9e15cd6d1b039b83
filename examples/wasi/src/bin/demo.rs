//! Nurseries, cancel scopes and timers, the same source for WASI and native.
//!
//! Built for `wasm32-wasip1` it is a preview 1 module whose timers are
//! `poll_oneoff` clock subscriptions:
//! `trio-wasi-host run target/wasm32-wasip1/debug/demo.wasm`. It prints a
//! timeline and a last line `demo: all checks passed`, and exits with 0; a
//! check that fails prints `demo: FAILED: ...` and exits with 1.
//!
//! What it shows, in one nursery:
//! 1. a producer and two consumers on a memory channel (the consumers share
//!    the receiver; closing the sender ends them);
//! 2. `move_on_after`: a slow task gives up quietly at its deadline;
//! 3. `fail_after`: a deadline turned into `TooSlow`, handled;
//! 4. an error in one child cancels its siblings, and the nursery reports it;
//! 5. a shielded scope that lets clean-up sleep inside a cancelled task;
//! 6. `to_thread` on WASI: a clear "no threads" error rather than a hang.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use trio::{CancelScope, Error, fail_after, move_on_after, open_memory_channel, open_nursery, sleep, sleep_forever};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Milliseconds since the start, for the left margin.
struct Timeline(Instant);

impl Timeline {
    fn say(&self, what: impl std::fmt::Display) {
        println!("{:>6.1} ms  {what}", self.0.elapsed().as_secs_f64() * 1e3);
    }
}

/// Records a failed check (the demo goes on, and exits with 1 at the end).
fn check(failures: &RefCell<Vec<String>>, ok: bool, what: &str) {
    if !ok {
        failures.borrow_mut().push(what.to_owned());
    }
}

async fn demo(t: &Timeline, failures: &RefCell<Vec<String>>) -> trio::Result<()> {
    // 1. Producer and consumers.
    let consumed = Cell::new(0u32);
    let (tx, rx) = open_memory_channel::<u32>(2);
    open_nursery(async |n| {
        n.spawn(async move {
            for i in 1..=6 {
                tx.send(i).await?;
                sleep(ms(5)).await?;
            }
            Ok(()) // dropping `tx` closes the channel
        });
        for name in ["consumer a", "consumer b"] {
            let rx = rx.clone();
            let consumed = &consumed;
            n.spawn(async move {
                while let Some(v) = rx.recv().await? {
                    consumed.set(consumed.get() + v);
                    t.say(format!("{name}: got {v}"));
                }
                Ok(())
            });
        }
        Ok(())
    })
    .await?;
    drop(rx);
    t.say(format!("channel: consumers saw a total of {}", consumed.get()));
    check(failures, consumed.get() == 21, "the consumers got 1..=6");

    // 2. move_on_after: gives up quietly.
    let r = move_on_after(ms(30), sleep(ms(10_000))).await?;
    t.say(format!("move_on_after(30 ms) around a 10 s sleep -> {r:?}"));
    check(failures, r.is_none(), "move_on_after returned None");

    // 3. fail_after: the deadline becomes TooSlow.
    let r = fail_after(ms(20), sleep_forever()).await;
    t.say(format!(
        "fail_after(20 ms) around sleep_forever -> {}",
        if matches!(r, Err(Error::TooSlow)) { "TooSlow" } else { "?" }
    ));
    check(failures, matches!(r, Err(Error::TooSlow)), "fail_after gave TooSlow");

    // 4 and 5. A failing child cancels its siblings; one cleans up shielded.
    let cleaned = Cell::new(false);
    let r = open_nursery(async |n| {
        n.spawn(async {
            sleep(ms(15)).await?;
            t.say("child 1: failing on purpose");
            Err(Error::User("child 1 failed".into()))
        });
        n.spawn(async {
            let r = sleep_forever().await;
            t.say("child 2: cancelled by its failing sibling; cleaning up in a shielded scope");
            CancelScope::shielded().run(sleep(ms(10))).await?;
            cleaned.set(true);
            t.say("child 2: clean-up done");
            r.map(|_| ())
        });
        Ok(())
    })
    .await;
    t.say(format!(
        "nursery with a failing child -> {}",
        match &r {
            Err(e) => format!("Err({e})"),
            Ok(_) => "Ok".to_owned(),
        }
    ));
    check(
        failures,
        matches!(&r, Err(Error::User(m)) if m.to_string() == "child 1 failed"),
        "the nursery reported child 1's error",
    );
    check(failures, cleaned.get(), "child 2's shielded clean-up ran");

    // 6. to_thread.
    let r = trio::to_thread::run_sync(|| 42).await;
    match &r {
        Ok(v) => t.say(format!("to_thread -> {v} (this platform has threads)")),
        Err(e) => t.say(format!("to_thread -> error: {e}")),
    }
    if cfg!(target_os = "wasi") {
        check(failures, r.is_err(), "to_thread reports that WASI has no threads");
    } else {
        check(failures, matches!(r, Ok(42)), "to_thread ran the closure");
    }
    Ok(())
}

fn main() {
    let t = Timeline(Instant::now());
    let failures = RefCell::new(Vec::new());
    t.say(format!("demo on {}", if cfg!(target_os = "wasi") { "WASI" } else { std::env::consts::OS }));
    let result = trio::run(demo(&t, &failures));
    if let Err(e) = result {
        failures.borrow_mut().push(format!("the run failed: {e}"));
    }
    let failures = failures.into_inner();
    if failures.is_empty() {
        println!("demo: all checks passed");
    } else {
        for f in &failures {
            println!("demo: FAILED: {f}");
        }
        std::process::exit(1);
    }
}
