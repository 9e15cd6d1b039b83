//! A tour of the engine: nurseries, deadlines, error propagation, shielded
//! cleanup and `start()`. Runs on the real clock in well under a second.
//!
//! `cargo run -p trio --example demo`

use std::time::Duration;

use trio::lowlevel::current_task;
use trio::{
    CancelScope, Error, TaskStatus, current_time, fail_after, move_on_after, open_nursery, sleep, sleep_forever,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Debug)]
struct DiskFull;

impl std::fmt::Display for DiskFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("disk full")
    }
}

impl std::error::Error for DiskFull {}

fn main() -> trio::Result<()> {
    trio::run(async {
        let t0 = current_time()?;
        let elapsed = || current_time().map(|t| (t - t0).as_millis()).unwrap_or(0);

        println!("1. a nursery waits for all of its children (they borrow `elapsed`):");
        open_nursery(async |n| {
            for (name, delay) in [("alpha", 60), ("beta", 20), ("gamma", 40)] {
                let elapsed = &elapsed;
                n.spawn_named(name, async move {
                    sleep(ms(delay)).await?;
                    let me = current_task()?.name().unwrap_or_default();
                    println!("   {me:<5} finished at ~{} ms", elapsed());
                    Ok(())
                });
            }
            Ok(())
        })
        .await?;

        println!("2. deadlines are cancel scopes:");
        let r = move_on_after(ms(30), async { sleep(Duration::from_secs(3600)).await }).await?;
        println!("   move_on_after(30 ms) around a one-hour sleep -> {r:?} at ~{} ms", elapsed());
        let r = fail_after(ms(10), async { sleep_forever().await.map(|_| ()) }).await;
        println!("   fail_after(10 ms) -> {}", r.unwrap_err());

        println!("3. a failing child cancels its siblings; cleanup can await in a shield:");
        let r = open_nursery(async |n| {
            n.spawn(async {
                sleep(ms(20)).await?;
                Err(Error::user(DiskFull))
            });
            n.spawn(async {
                let r = sleep_forever().await;
                CancelScope::shielded()
                    .run(async {
                        sleep(ms(10)).await?;
                        println!("   sibling: cancelled, flushed its state in a shield");
                        Ok(())
                    })
                    .await?;
                r.map(|_| ())
            });
            Ok(())
        })
        .await;
        println!("   the nursery reported: {}", r.unwrap_err());

        println!("4. start() waits until a task says it is ready:");
        open_nursery(async |n| {
            let port = n
                .start(async |status: TaskStatus<u16>| {
                    sleep(ms(10)).await?;
                    status.started(8080);
                    sleep(ms(10)).await?;
                    println!("   server task: shutting down");
                    Ok(())
                })
                .await?;
            println!("   server task reported port {port}; it keeps running in the nursery");
            Ok(())
        })
        .await?;
        println!("done in ~{} ms", elapsed());
        Ok(())
    })
}
