use std::time::Duration;
use trio::testing::MockClock;
use trio::*;

#[test]
fn smoke() {
    let clock = MockClock::new();
    clock.set_autojump_threshold(Some(Duration::ZERO));
    let c2 = clock.clone();
    let r = RunOptions::new().clock(clock).run(async {
        let x = std::cell::Cell::new(0);
        open_nursery(async |n| {
            n.spawn(async {
                sleep(Duration::from_secs(5)).await?;
                x.set(x.get() + 1);
                Ok(())
            });
            n.spawn(async {
                checkpoint().await?;
                x.set(x.get() + 10);
                Ok(())
            });
            Ok(())
        })
        .await?;
        Ok(x.get())
    });
    assert_eq!(r.unwrap(), 11);
    assert_eq!(c2.now(), Instant::ZERO + Duration::from_secs(5));
}
