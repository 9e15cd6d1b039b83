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
    /// A checkpoint ran inside a cancelled scope. The [`CancelReason`] says
    /// what cancelled it (a deadline, `cancel()`, a failing sibling, Ctrl-C),
    /// as Trio's `Cancelled` does; match it as `Error::Cancelled(_)` or use
    /// [`Error::is_cancelled`] / [`Error::cancel_reason`].
    Cancelled(CancelReason),
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
        matches!(self, Error::Cancelled(_))
    }

    /// A `Cancelled` whose source is unknown (for code that reports a
    /// cancellation it did not get from a checkpoint, for example one that
    /// crossed the C boundary as an error code).
    pub fn cancelled() -> Error {
        Error::Cancelled(CancelReason::unknown())
    }

    /// Why this error's cancellation happened: the reason of
    /// [`Error::Cancelled`], of the first `Cancelled` in a group, or of one
    /// carried in the `source()` chain (see
    /// [`is_cancellation`](Error::is_cancellation)). `None` if this is no
    /// cancellation.
    pub fn cancel_reason(&self) -> Option<&CancelReason> {
        self.cancel_reason_at(0)
    }

    fn cancel_reason_at(&self, depth: usize) -> Option<&CancelReason> {
        if depth >= CHAIN_DEPTH {
            return None;
        }
        match self {
            Error::Cancelled(r) => Some(r),
            Error::Group(v) => v.iter().find_map(|e| e.cancel_reason_at(depth + 1)),
            Error::Io(e) => e.get_ref().and_then(|inner| chain_reason(inner, depth + 1)),
            Error::User(e) => chain_reason(&**e, depth + 1),
            _ => None,
        }
    }

    /// The leaf errors: the members of a group, or this error alone.
    pub fn leaves(&self) -> &[Error] {
        match self {
            Error::Group(v) => v,
            other => std::slice::from_ref(other),
        }
    }

    /// True if this error is a cancellation: [`Error::Cancelled`] itself, or
    /// an error that carries it somewhere in its [`source`] chain (looking
    /// inside `io::Error`s too). That is how a cancellation comes back
    /// through foreign code: a `futures-io` read of a trio stream fails with
    /// an `io::Error` that holds `Cancelled`, and hyper, tungstenite and
    /// others wrap that `io::Error` in their own error types.
    ///
    /// [`source`]: std::error::Error::source
    pub fn is_cancellation(&self) -> bool {
        self.is_cancellation_at(0)
    }

    /// True if this error is a cancellation (see [`is_cancellation`]) or a
    /// group that contains one. A cancel scope that catches cancellation
    /// catches such an error.
    ///
    /// [`is_cancellation`]: Error::is_cancellation
    pub fn contains_cancelled(&self) -> bool {
        self.leaves().iter().any(Error::is_cancellation)
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

    /// Removes the cancellations (see [`is_cancellation`](Error::is_cancellation))
    /// from this error: `None` if nothing else is left.
    pub(crate) fn without_cancelled(self) -> Option<Error> {
        match self {
            Error::Group(v) => Error::combine(v.into_iter().filter(|e| !e.is_cancellation()).collect()),
            e if e.is_cancellation() => None,
            other => Some(other),
        }
    }
}

/// How deep [`chain_holds_cancelled`] looks (error chains can be made to
/// loop by a careless `source()`).
const CHAIN_DEPTH: usize = 32;

/// Does `e` or anything in its `source()` chain hold [`Error::Cancelled`]?
fn chain_holds_cancelled(e: &(dyn std::error::Error + 'static), depth: usize) -> bool {
    let mut cur = Some(e);
    let mut depth = depth;
    while let Some(e) = cur {
        if depth >= CHAIN_DEPTH {
            return false;
        }
        depth += 1;
        if let Some(t) = e.downcast_ref::<Error>() {
            return t.is_cancellation_at(depth);
        }
        // `io::Error::source()` skips the error it wraps: look inside.
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io_holds_cancelled(io, depth);
        }
        cur = e.source();
    }
    false
}

/// The reason of the first trio `Cancelled` in `e`'s `source()` chain.
fn chain_reason<'a>(e: &'a (dyn std::error::Error + 'static), depth: usize) -> Option<&'a CancelReason> {
    let mut cur = Some(e);
    let mut depth = depth;
    while let Some(e) = cur {
        if depth >= CHAIN_DEPTH {
            return None;
        }
        depth += 1;
        if let Some(t) = e.downcast_ref::<Error>() {
            return t.cancel_reason_at(depth);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.get_ref().and_then(|inner| chain_reason(inner, depth + 1));
        }
        cur = e.source();
    }
    None
}

/// Does the error an `io::Error` wraps (or its chain) hold `Cancelled`?
fn io_holds_cancelled(e: &std::io::Error, depth: usize) -> bool {
    match e.get_ref() {
        Some(inner) => chain_holds_cancelled(inner, depth + 1),
        None => false,
    }
}

impl Error {
    /// [`is_cancellation`](Error::is_cancellation), bounded in depth.
    fn is_cancellation_at(&self, depth: usize) -> bool {
        match self {
            Error::Cancelled(_) => true,
            Error::Io(e) => io_holds_cancelled(e, depth),
            Error::User(e) => chain_holds_cancelled(&**e, depth),
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Cancelled(r) => write!(f, "cancelled{}", r.describe()),
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

/// What cancelled a scope, carried by [`Error::Cancelled`] (Trio's
/// `Cancelled.source`, `.reason` and `.source_task`).
///
/// A scope remembers the reason of its first cancellation; a scope
/// cancelled because an enclosing one was takes that one's reason. A
/// checkpoint's `Cancelled` carries the reason of the scope it ran in.
/// Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelReason {
    source: CancelSource,
    detail: Option<std::sync::Arc<ReasonDetail>>,
}

#[derive(Debug, PartialEq, Eq)]
struct ReasonDetail {
    reason: Option<String>,
    source_task: Option<String>,
}

/// Where a cancellation came from (Trio's `CancelReason.source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CancelSource {
    /// The scope's deadline passed.
    Deadline,
    /// Someone called [`CancelScope::cancel`](crate::CancelScope::cancel)
    /// (or `cancel_with_reason`).
    Explicit,
    /// A nursery cancelled its children because one of them (or its body)
    /// failed, or a `start()`ed task lost its caller.
    Nursery,
    /// Ctrl-C (SIGINT) interrupted the run.
    KeyboardInterrupt,
    /// Not known (a cancellation rebuilt from an error code).
    Unknown,
}

impl CancelReason {
    /// A reason with only a source.
    pub fn new(source: CancelSource) -> CancelReason {
        CancelReason { source, detail: None }
    }

    /// A reason with a source, an optional message and the task that caused
    /// it (by name).
    pub fn with_detail(source: CancelSource, reason: Option<String>, source_task: Option<String>) -> CancelReason {
        if reason.is_none() && source_task.is_none() {
            return CancelReason::new(source);
        }
        CancelReason { source, detail: Some(std::sync::Arc::new(ReasonDetail { reason, source_task })) }
    }

    /// The reason of a cancellation whose source is not known.
    pub fn unknown() -> CancelReason {
        CancelReason::new(CancelSource::Unknown)
    }

    /// Where the cancellation came from.
    pub fn source(&self) -> CancelSource {
        self.source
    }

    /// The message given to `cancel_with_reason`, or the runtime's own
    /// explanation (for example which child failed).
    pub fn reason(&self) -> Option<&str> {
        self.detail.as_ref().and_then(|d| d.reason.as_deref())
    }

    /// The name of the task that cancelled the scope, when known.
    pub fn source_task(&self) -> Option<&str> {
        self.detail.as_ref().and_then(|d| d.source_task.as_deref())
    }

    /// `" due to SOURCE[ with reason R][ from task T]"`, for `Display`.
    fn describe(&self) -> String {
        let source = match self.source {
            CancelSource::Deadline => "deadline",
            CancelSource::Explicit => "explicit",
            CancelSource::Nursery => "nursery",
            CancelSource::KeyboardInterrupt => "KeyboardInterrupt",
            CancelSource::Unknown => return String::new(),
        };
        let mut s = format!(" due to {source}");
        if let Some(r) = self.reason() {
            s.push_str(&format!(" with reason {r:?}"));
        }
        if let Some(t) = self.source_task() {
            s.push_str(&format!(" from task {t}"));
        }
        s
    }
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            CancelSource::Unknown => f.write_str("unknown"),
            _ => f.write_str(self.describe().trim_start_matches(" due to ")),
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

/// An `io::Error` that wraps a trio [`Error`] (what the `futures-io` impls
/// and `abc::Compat` return, for example `Cancelled`)
/// becomes that error again; any other is [`Error::Io`]. So `?` on a
/// `futures-io` read inside a cancelled scope gives `Err(Cancelled)`, which
/// the scope catches.
impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            match e.into_inner().map(|inner| inner.downcast::<Error>()) {
                Some(Ok(inner)) => return *inner,
                // Unreachable (checked above), but lose nothing.
                Some(Err(other)) => return Error::Io(std::io::Error::other(other)),
                None => return Error::Io(std::io::Error::other("an I/O error")),
            }
        }
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
        let e = Error::combine(vec![
            Error::cancelled(),
            Error::Group(vec![Error::Busy, Error::cancelled()]),
            Error::Closed,
        ])
        .unwrap();
        let leaves = e.leaves();
        assert_eq!(leaves.len(), 3);
        assert_eq!(leaves.iter().filter(|e| e.is_cancelled()).count(), 1);
        assert!(Error::combine(vec![]).is_none());
        assert!(matches!(Error::combine(vec![Error::Busy]), Some(Error::Busy)));
    }

    #[test]
    fn without_cancelled_keeps_the_rest() {
        assert!(Error::cancelled().without_cancelled().is_none());
        let g = Error::Group(vec![Error::cancelled(), Error::Busy]);
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
