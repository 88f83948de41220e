//! Group commit of quota documents.
//!
//! Every reserve, commit, release and give-back of one organization in one
//! region changes the same document (`quota.<org>.<region>`), and within an
//! instance the writers of a key take turns. One compare-and-set per
//! operation made a hot organization's creates wait in that line: a KV read
//! of the ops bucket and a KV write each, one after the other, with the
//! whole document encoded and stored every time.
//!
//! So the operations on a key queue here, and one task per busy key applies
//! all that queued while the previous write was in flight: one lookup of the
//! ids they ask about, each step in turn on the document as the steps before
//! it left it, and one compare-and-set of the result. Nobody is answered
//! before that write succeeded; when another instance won the race, every
//! step runs again on the newer document (steps are pure functions of their
//! input, as [`Store::modify_with`] requires). An operation whose step fails
//! changes nothing and fails alone.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tonic::Status;

use crate::ops::OpsLog;
use crate::reservation::QuotaDoc;
use crate::store::{self, Store, Write};

/// One queued operation on a quota document, its answer type erased.
trait Queued: Send {
    /// The applied ids the step needs looked up in the ops bucket, given the
    /// document as read.
    fn asks(&self, doc: Option<&QuotaDoc>) -> Vec<String>;
    /// Runs the step on `doc`; `None` when it failed (it then changes
    /// nothing). The answer is kept until [`Queued::answer`].
    fn step(&mut self, doc: Option<QuotaDoc>, logged: &BTreeSet<String>)
        -> Option<Write<QuotaDoc>>;
    /// Sends the answer of the last step run, or `error` when the group's
    /// write failed.
    fn answer(self: Box<Self>, error: Option<Status>);
}

struct Op<R, A, F> {
    asks: A,
    step: F,
    answer: Option<Result<R, Status>>,
    reply: oneshot::Sender<Result<R, Status>>,
}

impl<R, A, F> Queued for Op<R, A, F>
where
    R: Send,
    A: Fn(Option<&QuotaDoc>) -> Vec<String> + Send,
    F: FnMut(Option<QuotaDoc>, &BTreeSet<String>) -> Result<(Write<QuotaDoc>, R), Status> + Send,
{
    fn asks(&self, doc: Option<&QuotaDoc>) -> Vec<String> {
        (self.asks)(doc)
    }

    fn step(
        &mut self,
        doc: Option<QuotaDoc>,
        logged: &BTreeSet<String>,
    ) -> Option<Write<QuotaDoc>> {
        match (self.step)(doc, logged) {
            Ok((write, answer)) => {
                self.answer = Some(Ok(answer));
                Some(write)
            }
            Err(e) => {
                self.answer = Some(Err(e));
                None
            }
        }
    }

    fn answer(self: Box<Self>, error: Option<Status>) {
        let answer = match error {
            Some(e) => Err(e),
            None => self
                .answer
                .unwrap_or_else(|| Err(Status::internal("a quota step was never run"))),
        };
        // The caller may have gone (its deadline passed): the change stands.
        let _ = self.reply.send(answer);
    }
}

/// Per quota key, the operations waiting for its writer task.
type Queues = HashMap<String, Vec<Box<dyn Queued>>>;

/// The queues of quota documents being written by this instance.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    store: Store,
    ops: OpsLog,
    /// A key is here exactly while its writer task runs.
    queues: Arc<Mutex<Queues>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl GroupCommit {
    pub(crate) fn new(store: Store, ops: OpsLog) -> GroupCommit {
        GroupCommit {
            store,
            ops,
            queues: Arc::default(),
        }
    }

    /// Applies `step` to `org`'s quota document in `region`, grouped with
    /// the other operations on it, and answers what the step answered once
    /// the document holding its change is written. `asks` names the applied
    /// ids the step needs looked up (the ops bucket's answer comes in the
    /// step's set; ids the document knows need not be asked).
    pub(crate) async fn modify<R, A, F>(
        &self,
        org: &str,
        region: &str,
        asks: A,
        step: F,
    ) -> Result<R, Status>
    where
        R: Send + 'static,
        A: Fn(Option<&QuotaDoc>) -> Vec<String> + Send + 'static,
        F: FnMut(Option<QuotaDoc>, &BTreeSet<String>) -> Result<(Write<QuotaDoc>, R), Status>
            + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let op: Box<dyn Queued> = Box::new(Op {
            asks,
            step,
            answer: None,
            reply,
        });
        let key = store::quota_key(org, region);
        let lead = {
            let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            match queues.get_mut(&key) {
                Some(queue) => {
                    queue.push(op);
                    false
                }
                None => {
                    queues.insert(key.clone(), vec![op]);
                    true
                }
            }
        };
        if lead {
            // A task of its own, so a caller that goes away (a deadline)
            // never strands the operations queued behind its own.
            let this = self.clone();
            let (org, region) = (org.to_string(), region.to_string());
            tokio::spawn(async move { this.write_queue(key, org, region).await });
        }
        answer
            .await
            .map_err(|_| Status::unavailable("the quota write was abandoned; retry"))?
    }

    /// Writes `key`'s queued operations, group after group, until none are
    /// left.
    async fn write_queue(&self, key: String, org: String, region: String) {
        loop {
            let group = {
                let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
                let queued = queues.get_mut(&key).map(std::mem::take).unwrap_or_default();
                if queued.is_empty() {
                    queues.remove(&key);
                    return;
                }
                queued
            };
            crate::metrics::METRICS.group(group.len());
            self.write_group(&key, &org, &region, group).await;
        }
    }

    async fn write_group(&self, key: &str, org: &str, region: &str, group: Vec<Box<dyn Queued>>) {
        // Both closures below reach the group: the lookup to gather asks,
        // the step to run the steps.
        let group = Mutex::new(group);
        let lock = || group.lock().unwrap_or_else(|e| e.into_inner());
        let written = self
            .store
            .modify_with(
                key,
                |doc: Option<&QuotaDoc>| {
                    let asks: BTreeSet<String> =
                        lock().iter().flat_map(|op| op.asks(doc)).collect();
                    let ops = self.ops.clone();
                    let (org, region) = (org.to_string(), region.to_string());
                    async move {
                        ops.applied_among(&org, &region, asks.into_iter().collect())
                            .await
                            .map_err(Status::from)
                    }
                },
                |doc: Option<QuotaDoc>, logged| {
                    let existed = doc.is_some();
                    let mut current = doc;
                    let (mut changed, mut kept) = (false, false);
                    for op in lock().iter_mut() {
                        match op.step(current.clone(), &logged) {
                            Some(Write::Put(next)) => {
                                current = Some(next);
                                changed = true;
                            }
                            Some(Write::Delete) => {
                                current = None;
                                changed = true;
                            }
                            Some(Write::Keep) => kept = true,
                            Some(Write::Settled) | None => {}
                        }
                    }
                    let write = match current {
                        Some(doc) if changed => Write::Put(doc),
                        None if changed && existed => Write::Delete,
                        // A step that keeps the document as it is may
                        // have read a cached copy: let the store read it
                        // afresh and run every step again.
                        _ if kept => Write::Keep,
                        _ => Write::Settled,
                    };
                    Ok::<_, Status>((write, ()))
                },
            )
            .await;
        let error = written.err();
        for op in group.into_inner().unwrap_or_else(|e| e.into_inner()) {
            op.answer(error.clone());
        }
    }
}
