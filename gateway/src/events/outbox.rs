//! The bounded outbox between calls and the audit stream: a call queues its
//! event and goes on; one task publishes the queue to JetStream in order,
//! waits for the stream's acknowledgements, and retries from the first one
//! missing while NATS is away. A retried event keeps its `Nats-Msg-Id`, so
//! the stream stores it once. When the queue is full the call still
//! succeeds, and the dropped counter says what was lost.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::HeaderMap;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use super::log::EventLog;

/// How many events go out before their acknowledgements are awaited.
const WINDOW: usize = 256;

/// One event on its way.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) subject: String,
    pub(crate) headers: HeaderMap,
    pub(crate) payload: Bytes,
}

/// Counters of the outbox, served on `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct OutboxCounters {
    /// Events queued and not yet stored.
    pub(crate) queued: Gauge,
    /// Events the stream acknowledged.
    pub(crate) published: Counter,
    /// Events dropped because the outbox was full.
    pub(crate) dropped: Counter,
    /// Publish attempts that failed and were retried.
    pub(crate) retries: Counter,
}

impl OutboxCounters {
    /// Registers the counters in `registry`.
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "nordlys_gateway_events_queued",
            "Audit events waiting in the outbox for the event stream",
            self.queued.clone(),
        );
        registry.register(
            "nordlys_gateway_events_published",
            "Audit events the event stream stored",
            self.published.clone(),
        );
        registry.register(
            "nordlys_gateway_events_dropped",
            "Audit events dropped because the outbox was full",
            self.dropped.clone(),
        );
        registry.register(
            "nordlys_gateway_events_publish_retries",
            "Times publishing audit events was retried",
            self.retries.clone(),
        );
    }
}

/// The calls' side of the outbox.
#[derive(Debug)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Pending>,
    counters: Arc<OutboxCounters>,
}

impl Outbox {
    /// An outbox of `capacity` events publishing to `log`, and its task.
    pub(crate) fn start(log: EventLog, capacity: usize) -> (Outbox, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let counters = Arc::new(OutboxCounters::default());
        let task = tokio::spawn(publish_loop(log, rx, counters.clone()));
        (Outbox { tx, counters }, task)
    }

    /// Queues `event` without waiting; false when the outbox is full.
    pub(crate) fn push(&self, event: Pending) -> bool {
        match self.tx.try_send(event) {
            Ok(()) => {
                self.counters.queued.inc();
                true
            }
            Err(_) => {
                let dropped = self.counters.dropped.inc() + 1;
                // Every event would flood the log while NATS is away.
                if dropped.is_power_of_two() {
                    tracing::warn!(
                        dropped,
                        "the event outbox is full: an audit event was dropped"
                    );
                }
                false
            }
        }
    }

    /// The outbox's counters.
    pub(crate) fn counters(&self) -> &OutboxCounters {
        &self.counters
    }

    /// Waits until every queued event is stored, at most `limit`.
    pub(crate) async fn flush(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.counters.queued.get() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

async fn publish_loop(
    log: EventLog,
    mut rx: mpsc::Receiver<Pending>,
    counters: Arc<OutboxCounters>,
) {
    let mut batch: VecDeque<Pending> = VecDeque::new();
    let mut received = Vec::with_capacity(WINDOW);
    let mut backoff = Duration::from_millis(50);
    let mut ready = false;
    loop {
        if batch.is_empty() {
            if rx.recv_many(&mut received, WINDOW).await == 0 {
                return;
            }
            batch.extend(received.drain(..));
        } else {
            // Take what came meanwhile, behind what is being retried.
            while batch.len() < WINDOW {
                match rx.try_recv() {
                    Ok(p) => batch.push_back(p),
                    Err(_) => break,
                }
            }
        }
        if !ready {
            match log.ensure().await {
                Ok(()) => ready = true,
                Err(e) => {
                    tracing::warn!(error = %e, "the event stream is not available; retrying");
                    counters.retries.inc();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        let stored = publish_in_order(log.context(), &batch).await;
        for _ in 0..stored {
            batch.pop_front();
        }
        counters.published.inc_by(stored as u64);
        counters.queued.dec_by(stored as i64);
        if batch.is_empty() {
            backoff = Duration::from_millis(50);
        } else {
            counters.retries.inc();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

/// Publishes `batch` and waits for the acknowledgements: how many, from the
/// front, the stream stored. Later ones that made it are sent again with
/// the rest and de-duplicated by the stream.
async fn publish_in_order(js: &jetstream::Context, batch: &VecDeque<Pending>) -> usize {
    let mut acks = Vec::with_capacity(batch.len());
    for pending in batch {
        let message = PublishMessage::build()
            .headers(pending.headers.clone())
            .payload(pending.payload.clone());
        match js.send_publish(pending.subject.clone(), message).await {
            Ok(ack) => acks.push(ack),
            Err(e) => {
                tracing::debug!(error = %e, "publishing an event failed");
                break;
            }
        }
    }
    let mut stored = 0;
    for ack in acks {
        match ack.await {
            Ok(_) => stored += 1,
            Err(e) => {
                tracing::debug!(error = %e, "an event was not acknowledged");
                break;
            }
        }
    }
    stored
}
