//! `CapacityLimiter`: a semaphore whose tokens are tracked per borrower.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use super::ParkingLot;
use crate::error::{Error, Result};
use std::ops::ControlFlow;

use crate::lowlevel::{Task, checkpointed, current_task};

/// Who holds a [`CapacityLimiter`] token: a task (the default) or any other
/// identity chosen by the caller (for example a thread or a connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Borrower(BorrowerKind);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum BorrowerKind {
    Task(Task),
    Id(u64),
    ThreadCall(u64),
}

impl Borrower {
    /// A borrower named by an arbitrary number (distinct from every task).
    pub fn id(id: u64) -> Borrower {
        Borrower(BorrowerKind::Id(id))
    }

    /// The borrower of one `to_thread` call.
    pub(crate) fn thread_call(id: u64) -> Borrower {
        Borrower(BorrowerKind::ThreadCall(id))
    }
}

impl From<Task> for Borrower {
    fn from(t: Task) -> Borrower {
        Borrower(BorrowerKind::Task(t))
    }
}

/// Limits how many borrowers can hold a token at once (Trio's
/// `CapacityLimiter`): like a semaphore, but each borrower holds at most one
/// token and only the holder can give it back, so a leaked or doubled release
/// is an error instead of a silent miscount. `total_tokens` can change while
/// tokens are out (0 is allowed: it stops new borrowing).
#[derive(Debug)]
pub struct CapacityLimiter {
    total: Cell<usize>,
    borrowers: RefCell<Vec<Borrower>>,
    /// Waiters' borrowers, by the tag they parked with.
    pending: RefCell<HashMap<usize, Borrower>>,
    next_tag: Cell<usize>,
    lot: ParkingLot,
}

/// A snapshot of a [`CapacityLimiter`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CapacityLimiterStatistics {
    /// Tokens held now.
    pub borrowed_tokens: usize,
    /// The limit.
    pub total_tokens: usize,
    /// Who holds them.
    pub borrowers: Vec<Borrower>,
    /// Tasks blocked waiting for a token.
    pub tasks_waiting: usize,
}

impl CapacityLimiter {
    /// A limiter with `total_tokens` tokens.
    pub fn new(total_tokens: usize) -> CapacityLimiter {
        CapacityLimiter {
            total: Cell::new(total_tokens),
            borrowers: RefCell::new(Vec::new()),
            pending: RefCell::new(HashMap::new()),
            next_tag: Cell::new(1),
            lot: ParkingLot::new(),
        }
    }

    /// The limit.
    pub fn total_tokens(&self) -> usize {
        self.total.get()
    }

    /// Changes the limit, also while tokens are out; raising it wakes
    /// waiters at once. Lowering it below what is borrowed takes effect as
    /// tokens come back. Not a checkpoint.
    pub fn set_total_tokens(&self, total: usize) {
        self.total.set(total);
        self.wake_waiters();
    }

    /// Tokens held now.
    pub fn borrowed_tokens(&self) -> usize {
        self.borrowers.borrow().len()
    }

    /// Tokens free now (0 if more are out than the limit).
    pub fn available_tokens(&self) -> usize {
        self.total.get().saturating_sub(self.borrowed_tokens())
    }

    /// Takes a token for the current task if one is free. Not a checkpoint.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] if none is free (or others wait);
    /// [`Error::Runtime`] if the task already holds one, or outside a run.
    pub fn try_acquire(&self) -> Result<()> {
        self.try_acquire_on_behalf_of(current_task()?.into())
    }

    /// Takes a token for `borrower` if one is free. Not a checkpoint.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] if none is free (or others wait);
    /// [`Error::Runtime`] if `borrower` already holds one.
    pub fn try_acquire_on_behalf_of(&self, borrower: Borrower) -> Result<()> {
        if self.borrowers.borrow().contains(&borrower) {
            return Err(Error::Runtime("this borrower already holds one of this CapacityLimiter's tokens"));
        }
        if self.available_tokens() > 0 && self.lot.is_empty() {
            self.borrowers.borrow_mut().push(borrower);
            Ok(())
        } else {
            Err(Error::WouldBlock)
        }
    }

    /// Waits for a token for the current task.
    ///
    /// # Checkpoint
    /// Always a checkpoint.
    /// # Cancellation
    /// Returns `Err(Error::Cancelled)` without a token.
    /// # Errors
    /// [`Error::Runtime`] if the task already holds one.
    pub async fn acquire(&self) -> Result<()> {
        self.acquire_on_behalf_of(current_task()?.into()).await
    }

    /// Waits for a token for `borrower`. Waiters are served in FIFO order.
    ///
    /// # Checkpoint
    /// Always a checkpoint.
    /// # Cancellation
    /// Returns `Err(Error::Cancelled)` without a token. A token handed over
    /// at the moment of cancellation is kept (`Ok`), or given back if this
    /// future is dropped before it returns.
    /// # Errors
    /// [`Error::Runtime`] if `borrower` already holds one.
    pub async fn acquire_on_behalf_of(&self, borrower: Borrower) -> Result<()> {
        let now = checkpointed(|| match self.try_acquire_on_behalf_of(borrower) {
            Err(Error::WouldBlock) => ControlFlow::Continue(()),
            r => ControlFlow::Break(r),
        })
        .await?;
        if let ControlFlow::Break(r) = now {
            return r;
        }
        let tag = self.next_tag.get();
        self.next_tag.set(tag.wrapping_add(1).max(1));
        self.pending.borrow_mut().insert(tag, borrower);
        let r = self
            .lot
            .park_handoff(tag, || {
                let _ = self.release_on_behalf_of(borrower);
            })
            .await;
        if r.is_err() {
            self.pending.borrow_mut().remove(&tag);
        }
        r
    }

    /// Returns the current task's token. Not a checkpoint.
    ///
    /// # Errors
    /// [`Error::Runtime`] if it holds none.
    pub fn release(&self) -> Result<()> {
        self.release_on_behalf_of(current_task()?.into())
    }

    /// Returns `borrower`'s token; the first waiter gets it. Not a
    /// checkpoint.
    ///
    /// # Errors
    /// [`Error::Runtime`] if `borrower` holds none.
    pub fn release_on_behalf_of(&self, borrower: Borrower) -> Result<()> {
        {
            let mut b = self.borrowers.borrow_mut();
            let Some(i) = b.iter().position(|x| *x == borrower) else {
                return Err(Error::Runtime("this borrower holds no token of this CapacityLimiter"));
            };
            b.swap_remove(i);
        }
        self.wake_waiters();
        Ok(())
    }

    fn wake_waiters(&self) {
        while self.available_tokens() > 0 {
            let Some(u) = self.lot.unpark_one() else { break };
            if let Some(b) = self.pending.borrow_mut().remove(&u.tag) {
                self.borrowers.borrow_mut().push(b);
            }
        }
    }

    /// A snapshot.
    pub fn statistics(&self) -> CapacityLimiterStatistics {
        CapacityLimiterStatistics {
            borrowed_tokens: self.borrowed_tokens(),
            total_tokens: self.total.get(),
            borrowers: self.borrowers.borrow().clone(),
            tasks_waiting: self.lot.len(),
        }
    }
}
