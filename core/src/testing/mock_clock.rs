//! A virtual clock for tests (Trio's `MockClock`).

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use crate::time::{Clock, Instant};

/// A clock that runs at a chosen rate (0 by default: time stands still until
/// you [`jump`](MockClock::jump)) and can jump to the next deadline by
/// itself whenever every task is blocked ("autojump"), so a test with
/// one-hour timeouts finishes in microseconds.
///
/// Clone the handle before giving it to
/// [`RunOptions::clock`](crate::RunOptions::clock) to control it from inside
/// the run. Virtual time starts at [`Instant::ZERO`].
#[derive(Clone, Debug)]
pub struct MockClock {
    inner: Rc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Virtual time at `real_base`.
    virtual_base: Cell<Instant>,
    real_base: Cell<std::time::Instant>,
    rate: Cell<f64>,
    autojump: Cell<Option<Duration>>,
}

impl Default for MockClock {
    fn default() -> MockClock {
        MockClock::new()
    }
}

impl MockClock {
    /// A clock at time zero, rate 0, autojump off.
    pub fn new() -> MockClock {
        MockClock {
            inner: Rc::new(Inner {
                virtual_base: Cell::new(Instant::ZERO),
                real_base: Cell::new(std::time::Instant::now()),
                rate: Cell::new(0.0),
                autojump: Cell::new(None),
            }),
        }
    }

    /// Virtual time now.
    pub fn now(&self) -> Instant {
        let rate = self.inner.rate.get();
        let base = self.inner.virtual_base.get();
        if rate == 0.0 {
            return base;
        }
        let real = self.inner.real_base.get().elapsed();
        base + real.mul_f64(rate)
    }

    /// Moves virtual time forward by `d`. Deadlines that pass fire at the
    /// run loop's next pass.
    pub fn jump(&self, d: Duration) {
        self.rebase();
        self.inner.virtual_base.set(self.inner.virtual_base.get() + d);
    }

    fn rebase(&self) {
        let now = self.now();
        self.inner.virtual_base.set(now);
        self.inner.real_base.set(std::time::Instant::now());
    }

    /// How fast virtual time runs relative to real time (0 = stopped).
    pub fn rate(&self) -> f64 {
        self.inner.rate.get()
    }

    /// Sets the rate. Negative or non-finite rates are treated as 0.
    pub fn set_rate(&self, rate: f64) {
        self.rebase();
        self.inner.rate.set(if rate.is_finite() && rate > 0.0 { rate } else { 0.0 });
    }

    /// The autojump threshold (`None`: off).
    pub fn autojump_threshold(&self) -> Option<Duration> {
        self.inner.autojump.get()
    }

    /// Turns autojump on (with `Some(real time to wait first)`, usually
    /// `Duration::ZERO`) or off (`None`).
    pub fn set_autojump_threshold(&self, threshold: Option<Duration>) {
        self.inner.autojump.set(threshold);
    }
}

impl Clock for MockClock {
    fn current_time(&self) -> Instant {
        self.now()
    }

    fn deadline_to_sleep_time(&self, deadline: Instant) -> Option<Duration> {
        let now = self.now();
        if deadline <= now {
            return Some(Duration::ZERO);
        }
        let rate = self.inner.rate.get();
        if rate == 0.0 || deadline == Instant::MAX { None } else { Some((deadline - now).div_f64(rate)) }
    }

    fn autojump_threshold(&self) -> Option<Duration> {
        self.inner.autojump.get()
    }

    fn autojump(&self, deadline: Instant) {
        let now = self.now();
        if deadline > now && deadline != Instant::MAX {
            self.jump(deadline - now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_and_rate() {
        let c = MockClock::new();
        assert_eq!(c.now(), Instant::ZERO);
        c.jump(Duration::from_secs(3));
        assert_eq!(c.now(), Instant::ZERO + Duration::from_secs(3));
        assert_eq!(c.deadline_to_sleep_time(Instant::ZERO + Duration::from_secs(2)), Some(Duration::ZERO));
        assert_eq!(c.deadline_to_sleep_time(Instant::ZERO + Duration::from_secs(5)), None);
        c.set_rate(2.0);
        let d = c.deadline_to_sleep_time(c.now() + Duration::from_secs(10)).unwrap();
        assert!(d <= Duration::from_secs(5) && d > Duration::from_secs(4));
        c.set_rate(-1.0);
        assert_eq!(c.rate(), 0.0);
    }
}
