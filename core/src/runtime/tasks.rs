//! Task nodes and nursery records: the scheduling tree.
//!
//! The futures themselves live in the nurseries that own them (see
//! `nursery.rs`); the runtime keeps only what wakeups, cancellation and
//! introspection need.

use std::borrow::Cow;
use std::task::Waker;

use super::{NONE, Runtime, waker};

/// What kind of node a task record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeKind {
    /// The future given to `trio::run`.
    Root,
    /// A spawned child; `slot` indexes the owning nursery's future storage.
    Child { nursery: u32, slot: u32 },
    /// The body of a nursery. It runs as part of the task that opened the
    /// nursery, so its identity is that task's.
    Body { nursery: u32 },
}

/// A scheduling node. Kept small (spawning 100k children touches 100k of
/// these); the task tree for introspection is derived from `kind` and the
/// nursery records rather than stored twice.
pub(crate) struct TaskRec {
    pub(crate) generation: u32,
    pub(crate) scheduled: bool,
    pub(crate) kind: NodeKind,
    /// The task this node acts as (itself, except for bodies).
    pub(crate) identity: u32,
    pub(crate) name: Cow<'static, str>,
    /// Yields and cancellation checks made by this node (wrapping counters,
    /// compared for change by `testing::assert_checkpoints`).
    pub(crate) schedule_points: u32,
    pub(crate) cancel_points: u32,
}

pub(crate) struct NurseryRec {
    pub(crate) generation: u32,
    /// The waker the nursery future was last polled with: woken when a child
    /// becomes ready. Usually the host node's own waker, but a combinator
    /// (`FuturesUnordered`, ...) may poll the nursery with its own.
    pub(crate) host_waker: Waker,
    /// The task that opened the nursery (identity).
    pub(crate) parent_task: usize,
    pub(crate) body: usize,
    /// Nodes ready to be polled in the nursery's next pass.
    pub(crate) ready: Vec<usize>,
    /// The part of a batch that a pass could not poll (the run's poll
    /// budget ran out), from `carry_pos` on: the next pass polls it first,
    /// before `ready`. Kept as it is rather than copied back in front of
    /// `ready`, which made a batch of n ready children cost O(n²) (100k
    /// children: 63 % of the spawn benchmark's instructions).
    pub(crate) carry: Vec<usize>,
    pub(crate) carry_pos: usize,
    /// True while the nursery future is polling its batches: a node that
    /// becomes ready then is picked up by the nursery's next round (or the
    /// nursery wakes its host when it stops), so the wake need not travel up.
    pub(crate) running: bool,
}

impl Runtime {
    fn new_task(&mut self, kind: NodeKind, identity: usize, name: Cow<'static, str>) -> usize {
        let generation = self.next_generation();
        let entry = self.tasks.vacant_entry();
        let key = entry.key();
        entry.insert(TaskRec {
            generation,
            scheduled: false,
            kind,
            identity: (if identity == NONE { key } else { identity }) as u32,
            name,
            schedule_points: 0,
            cancel_points: 0,
        });
        key
    }

    pub(crate) fn insert_root(&mut self, name: &'static str) -> usize {
        let key = self.new_task(NodeKind::Root, NONE, Cow::Borrowed(name));
        self.tasks[key].scheduled = true;
        key
    }

    /// Marks `key` ready and propagates up to the root. The common cases
    /// (the root, a child of a nursery that is running its batches) are
    /// done here; telling a nursery's host is [`wake_host`](Runtime::wake_host).
    #[inline]
    pub(crate) fn wake_node(&mut self, key: usize) {
        let Some(t) = self.tasks.get_mut(key) else { return };
        if t.scheduled {
            return;
        }
        t.scheduled = true;
        match t.kind {
            NodeKind::Root => self.root_ready = true,
            NodeKind::Child { nursery, .. } | NodeKind::Body { nursery } => {
                let n = &mut self.nurseries[nursery as usize];
                n.ready.push(key);
                if !n.running {
                    self.wake_host(nursery as usize);
                }
            }
        }
    }

    /// A node of `nursery` became ready while the nursery was not running:
    /// wake the node that hosts it (through its waker, which a combinator
    /// may have replaced with its own).
    fn wake_host(&mut self, nursery: usize) {
        let n = &self.nurseries[nursery];
        let Some(word) = waker::word_of(&n.host_waker) else {
            let w = n.host_waker.clone();
            self.deferred.push(w);
            return;
        };
        let (run, next, generation) = waker::unpack(word);
        if run != self.run_id {
            self.deferred.push(waker::make_waker(word));
            return;
        }
        if self.tasks.get(next).is_some_and(|t| waker::gen_bits(t.generation) == generation) {
            self.wake_node(next);
        }
    }

    /// Registers a nursery opened by the current node; its body node starts
    /// out ready (it is polled in the same pass, without waking the host).
    /// The nursery's cancel scope is entered by the caller.
    pub(crate) fn open_nursery(&mut self) -> (usize, u32) {
        let host = self.current_node;
        let parent_task = self.tasks[host].identity as usize;
        let generation = self.next_generation();
        let host_waker = self.node_waker(host);
        let key = self.nurseries.insert(NurseryRec {
            generation,
            host_waker,
            parent_task,
            body: NONE,
            ready: self.spare_batches.pop().unwrap_or_default(),
            carry: Vec::new(),
            carry_pos: 0,
            running: false,
        });
        let name = self.tasks[parent_task].name.clone();
        let body = self.new_task(NodeKind::Body { nursery: key as u32 }, parent_task, name);
        self.tasks[body].scheduled = true;
        let n = &mut self.nurseries[key];
        n.body = body;
        n.ready.push(body);
        (key, generation)
    }

    /// Adds a child task to `nursery`, ready to run in the nursery's next pass.
    pub(crate) fn spawn_child(&mut self, nursery: usize, slot: usize, name: Cow<'static, str>) -> usize {
        debug_assert!(nursery <= u32::MAX as usize && slot <= u32::MAX as usize);
        let kind = NodeKind::Child { nursery: nursery as u32, slot: slot as u32 };
        let key = self.new_task(kind, NONE, name);
        self.wake_node(key);
        key
    }

    /// Removes a finished (or dropped) child task.
    pub(crate) fn remove_child(&mut self, key: usize) {
        let t = self.tasks.remove(key);
        self.task_exited(key, t.generation);
    }

    /// Removes a nursery record and its body node.
    pub(crate) fn close_nursery(&mut self, key: usize) {
        let mut n = self.nurseries.remove(key);
        if n.body != NONE {
            self.tasks.remove(n.body);
        }
        n.ready.clear();
        self.spare_batches.push(n.ready);
        if n.carry.capacity() > 0 {
            n.carry.clear();
            self.spare_batches.push(n.carry);
        }
    }

    /// Takes the next batch of `nursery` and where to start in it: the part
    /// of the last batch a pass could not poll, if any, else the nodes
    /// ready now (leaving an empty list).
    pub(crate) fn take_batch(&mut self, nursery: usize) -> (Vec<usize>, usize) {
        let n = &mut self.nurseries[nursery];
        if !n.carry.is_empty() {
            return (std::mem::take(&mut n.carry), n.carry_pos);
        }
        let spare = self.spare_batches.pop().unwrap_or_default();
        let mut batch = std::mem::replace(&mut self.nurseries[nursery].ready, spare);
        self.maybe_shuffle(&mut batch);
        (batch, 0)
    }

    /// Keeps the part of `batch` from `from` on that was not polled (the
    /// budget ran out) for `nursery`'s next pass, which polls it before
    /// anything that became ready since; those nodes are still marked
    /// scheduled.
    pub(crate) fn carry_over(&mut self, nursery: usize, batch: Vec<usize>, from: usize) {
        match self.nurseries.get_mut(nursery) {
            Some(n) => {
                debug_assert!(n.carry.is_empty() && from < batch.len());
                n.carry = batch;
                n.carry_pos = from;
            }
            None => self.give_back_batch(batch),
        }
    }

    pub(crate) fn give_back_batch(&mut self, mut batch: Vec<usize>) {
        batch.clear();
        self.spare_batches.push(batch);
    }

    /// Counts a schedule point (a yield) for the current task.
    pub(crate) fn count_schedule_point(&mut self) {
        if let Some(t) = self.tasks.get_mut(self.current_node) {
            t.schedule_points = t.schedule_points.wrapping_add(1);
        }
    }

    /// Counts a cancel point (a cancellation check) for the current task.
    pub(crate) fn count_cancel_point(&mut self) {
        if let Some(t) = self.tasks.get_mut(self.current_node) {
            t.cancel_points = t.cancel_points.wrapping_add(1);
        }
    }
}
