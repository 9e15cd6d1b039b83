//! The one error type of the runtime.
//!
//! Everything the runtime can fail with is a variant of [`Error`], so user code
//! can match on what happened (`Cancelled`, `TooSlow`, ...) and `?` carries it
//! up to the cancel scope or nursery that handles it.

use std::fmt;

/// The result type of every fallible operation in `trio`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed user error, carried by [`Error::User`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in `trio`.
///
/// `Cancelled` is special: it is how cancellation travels from a checkpoint up
/// to the cancel scope that caught it. Propagate it with `?`; a scope that was
/// cancelled turns it back into a normal return when the code leaves it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A checkpoint ran inside a cancelled scope.
    Cancelled,
    /// A [`fail_after`](crate::fail_after)/[`fail_at`](crate::fail_at) deadline
    /// expired before the operation finished.
    TooSlow,
    /// The resource was closed by this side (use after close).
    Closed,
    /// The other side is gone (for example every receiver of a channel closed).
    Broken,
    /// Another task is already waiting on this resource in the same way.
    Busy,
    /// A non-blocking (`try_*`/`*_nowait`) operation would have had to wait.
    WouldBlock,
    /// Every sender of a channel closed and its buffer is empty.
    EndOfChannel,
    /// The run this operation was meant for has finished (a `TrioToken`
    /// used after `trio::run` returned).
    RunFinished,
    /// Ctrl-C (SIGINT) interrupted the run: every task was cancelled and
    /// finished its cleanup.
    KeyboardInterrupt,
    /// An operating-system I/O error.
    Io(std::io::Error),
    /// Several errors happened at once (for example in different children of
    /// one nursery). Never empty, never nested: groups are flattened.
    Group(Vec<Error>),
    /// An error from user code, boxed so that `?` works inside tasks.
    User(BoxError),
    /// The runtime was used the wrong way; the message says how (called outside
    /// `trio::run`, nested `trio::run`, a cancel scope entered twice, a
    /// `start()`ed task that never called `started`, ...).
    Runtime(&'static str),
}

impl Error {
    /// Wraps any error type as [`Error::User`].
    pub fn user<E: std::error::Error + Send + Sync + 'static>(err: E) -> Error {
        Error::User(Box::new(err))
    }

    /// True if this is [`Error::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Cancelled)
    }

    /// The leaf errors: the members of a group, or this error alone.
    pub fn leaves(&self) -> &[Error] {
        match self {
            Error::Group(v) => v,
            other => std::slice::from_ref(other),
        }
    }

    /// True if this error is `Cancelled` or a group that contains `Cancelled`.
    pub fn contains_cancelled(&self) -> bool {
        self.leaves().iter().any(Error::is_cancelled)
    }

    /// Combines errors the way a nursery does: groups are flattened, repeated
    /// `Cancelled` collapses into one, one error stays itself, several become
    /// a [`Error::Group`]. `None` if there are none.
    pub fn combine(errors: Vec<Error>) -> Option<Error> {
        let mut out: Vec<Error> = Vec::with_capacity(errors.len());
        let push = |e: Error, out: &mut Vec<Error>| {
            if e.is_cancelled() && out.iter().any(Error::is_cancelled) {
                return;
            }
            out.push(e);
        };
        for e in errors {
            match e {
                Error::Group(inner) => {
                    for leaf in inner {
                        push(leaf, &mut out);
                    }
                }
                other => push(other, &mut out),
            }
        }
        match out.len() {
            0 => None,
            1 => out.pop(),
            _ => Some(Error::Group(out)),
        }
    }

    /// This error as an `io::Error` (for the `futures-io` traits): OS errors
    /// stay themselves, `Closed` is `NotConnected`, `Broken` is
    /// `BrokenPipe`, the rest `Other`.
    #[cfg_attr(not(feature = "futures-io"), allow(dead_code))]
    pub(crate) fn into_io(self) -> std::io::Error {
        use std::io::{Error as IoError, ErrorKind};
        match self {
            Error::Io(e) => e,
            Error::Closed => IoError::new(ErrorKind::NotConnected, Error::Closed),
            Error::Broken => IoError::new(ErrorKind::BrokenPipe, Error::Broken),
            other => IoError::other(other),
        }
    }

    /// Removes `Cancelled` from this error: `None` if nothing else is left.
    pub(crate) fn without_cancelled(self) -> Option<Error> {
        match self {
            Error::Cancelled => None,
            Error::Group(v) => Error::combine(v.into_iter().filter(|e| !e.is_cancelled()).collect()),
            other => Some(other),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Cancelled => f.write_str("cancelled"),
            Error::TooSlow => f.write_str("deadline expired (too slow)"),
            Error::Closed => f.write_str("resource closed"),
            Error::Broken => f.write_str("resource broken: the other side is gone"),
            Error::Busy => f.write_str("another task is already waiting on this resource"),
            Error::WouldBlock => f.write_str("operation would block"),
            Error::EndOfChannel => f.write_str("end of channel"),
            Error::RunFinished => f.write_str("the trio run has finished"),
            Error::KeyboardInterrupt => f.write_str("interrupted by Ctrl-C"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Group(v) => {
                write!(f, "{} errors:", v.len())?;
                for (i, e) in v.iter().enumerate() {
                    write!(f, " [{i}] {e};")?;
                }
                Ok(())
            }
            Error::User(e) => write!(f, "{e}"),
            Error::Runtime(msg) => write!(f, "runtime misuse: {msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::User(e) => Some(&**e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Io(e)
    }
}

impl From<BoxError> for Error {
    fn from(e: BoxError) -> Error {
        Error::User(e)
    }
}

impl From<String> for Error {
    fn from(msg: String) -> Error {
        Error::User(msg.into())
    }
}

impl From<&str> for Error {
    fn from(msg: &str) -> Error {
        Error::User(msg.into())
    }
}

/// `?` on the standard library's common error types lands in [`Error::User`].
/// (A blanket impl over every `std::error::Error` is impossible while `Error`
/// itself implements that trait; use [`Error::user`] for other types.)
macro_rules! user_from {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::user(e)
            }
        }
    )*};
}

user_from!(
    std::num::ParseIntError,
    std::num::ParseFloatError,
    std::num::TryFromIntError,
    std::str::Utf8Error,
    std::string::FromUtf8Error,
    std::fmt::Error,
    std::net::AddrParseError,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combine_flattens_and_dedups_cancelled() {
        let e =
            Error::combine(vec![Error::Cancelled, Error::Group(vec![Error::Busy, Error::Cancelled]), Error::Closed])
                .unwrap();
        let leaves = e.leaves();
        assert_eq!(leaves.len(), 3);
        assert_eq!(leaves.iter().filter(|e| e.is_cancelled()).count(), 1);
        assert!(Error::combine(vec![]).is_none());
        assert!(matches!(Error::combine(vec![Error::Busy]), Some(Error::Busy)));
    }

    #[test]
    fn without_cancelled_keeps_the_rest() {
        assert!(Error::Cancelled.without_cancelled().is_none());
        let g = Error::Group(vec![Error::Cancelled, Error::Busy]);
        assert!(matches!(g.without_cancelled(), Some(Error::Busy)));
    }

    #[test]
    fn question_mark_converts_std_errors() {
        fn parse(s: &str) -> Result<i32> {
            Ok(s.parse::<i32>()?)
        }
        assert!(matches!(parse("x"), Err(Error::User(_))));
        assert_eq!(parse("7").unwrap(), 7);
    }
}
