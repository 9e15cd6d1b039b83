//! The host's own lines on stderr, written so that a stderr nobody can
//! write to (`2>/dev/full`, a closed pipe) never stops the host, and the
//! cap on how many denial lines one run prints.

use std::fmt;
use std::io::Write;
use std::sync::Mutex;

/// Writes `args` to stderr, ignoring any error: the host's lines are
/// informative, and failing to print one must not change how the guest
/// runs or the exit status (`eprintln!` would panic and exit 101).
pub fn say(args: fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// How many denial lines one run prints at most; the rest are counted.
pub const MAX_DENIAL_LINES: usize = 100;

/// Prints denial lines, the first [`MAX_DENIAL_LINES`] of a run, then one
/// line saying further ones are not printed; [`DenialLog::finish`] then
/// says how many were left out.
#[derive(Debug, Default)]
pub(crate) struct DenialLog {
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    printed: usize,
    dropped: usize,
    finished: bool,
}

impl DenialLog {
    /// Reports one denial, or counts it once the cap is reached.
    pub(crate) fn deny(&self, denial: impl fmt::Display) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.printed < MAX_DENIAL_LINES {
            counts.printed += 1;
            say(format_args!("trio-wasi-host: {denial}\n"));
            return;
        }
        counts.dropped += 1;
        if counts.dropped == 1 {
            say(format_args!("trio-wasi-host: further denials are not printed (at most {MAX_DENIAL_LINES} per run)\n"));
        }
    }

    /// Says how many denials were not printed, if any, once, when the guest
    /// has stopped (or `--timeout` stopped it); later calls say nothing.
    pub(crate) fn finish(&self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if !std::mem::replace(&mut counts.finished, true) && counts.dropped > 0 {
            say(format_args!("trio-wasi-host: {} more denials were not printed\n", counts.dropped));
        }
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        (counts.printed, counts.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_past_the_cap_are_counted_not_printed() {
        let log = DenialLog::default();
        for i in 0..MAX_DENIAL_LINES + 5 {
            log.deny(format_args!("denial {i}"));
        }
        assert_eq!(log.counts(), (MAX_DENIAL_LINES, 5));
    }
}
