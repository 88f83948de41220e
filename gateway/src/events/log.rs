//! The audit log: the JetStream stream `NORDLYS_EVENTS` over
//! `nordlys.events.>`, one subject per organization and type
//! (`nordlys.events.{org}.{type}`), so a reader filters on the server.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::{Stream, StreamExt};
use tonic::Status;

use nordlys_transport::BoxError;

/// The stream's name.
pub(crate) const STREAM: &str = "NORDLYS_EVENTS";
/// The subjects it keeps.
pub(crate) const SUBJECTS: &str = "nordlys.events.>";
/// How long the stream remembers an event id, so a retried publish is
/// stored once.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How the stream is kept.
#[derive(Debug, Clone)]
pub(crate) struct Retention {
    /// Events older than this are removed; zero keeps them forever.
    pub(crate) max_age: Duration,
    /// The stream's size limit in bytes; the oldest go first. -1: none.
    pub(crate) max_bytes: i64,
    /// Copies in a JetStream cluster.
    pub(crate) replicas: usize,
}

/// A stored message: its sequence, headers and payload.
pub(crate) type Stored = (u64, Option<async_nats::HeaderMap>, bytes::Bytes);

/// The audit stream, through a JetStream context.
#[derive(Debug, Clone)]
pub(crate) struct EventLog {
    js: jetstream::Context,
    retention: Retention,
    /// Whether the stream was made (or checked) by this gateway.
    ready: Arc<AtomicBool>,
}

/// The subject of an event of `organization` (an id) and `kind`.
pub(crate) fn subject(organization: &str, kind: &str) -> String {
    format!("nordlys.events.{organization}.{kind}")
}

/// The filter of `organization`'s events (every organization's when empty),
/// of one type when given.
pub(crate) fn filter(organization: &str, kind: Option<&str>) -> String {
    match (organization.is_empty(), kind) {
        (true, _) => SUBJECTS.to_string(),
        (false, Some(kind)) => subject(organization, kind),
        (false, None) => format!("nordlys.events.{organization}.>"),
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("the event log is not available ({what}: {e})"))
}

impl EventLog {
    pub(crate) fn new(js: jetstream::Context, retention: Retention) -> EventLog {
        EventLog {
            js,
            retention,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(crate) fn context(&self) -> &jetstream::Context {
        &self.js
    }

    /// Creates the stream when missing, or brings its retention up to the
    /// configuration. Deletes and purges are denied: an audit log loses
    /// events only by age or size.
    pub(crate) async fn ensure(&self) -> Result<(), BoxError> {
        if self.ready.load(Relaxed) {
            return Ok(());
        }
        self.create_or_update().await?;
        self.ready.store(true, Relaxed);
        Ok(())
    }

    async fn create_or_update(&self) -> Result<(), BoxError> {
        let config = stream::Config {
            name: STREAM.to_string(),
            description: Some("Nordlys audit events (CloudEvents, binary mode)".to_string()),
            subjects: vec![SUBJECTS.to_string()],
            max_age: self.retention.max_age,
            max_bytes: self.retention.max_bytes,
            max_messages: -1,
            max_messages_per_subject: -1,
            max_message_size: -1,
            storage: stream::StorageType::File,
            num_replicas: self.retention.replicas,
            discard: stream::DiscardPolicy::Old,
            duplicate_window: DUPLICATE_WINDOW,
            deny_delete: true,
            deny_purge: true,
            allow_direct: true,
            ..Default::default()
        };
        match self.js.get_stream(STREAM).await {
            Ok(mut existing) => {
                let info = existing.info().await?;
                let have = &info.config;
                if have.max_age != config.max_age || have.max_bytes != config.max_bytes {
                    self.js.update_stream(config).await?;
                }
            }
            Err(_) => {
                self.js.get_or_create_stream(config).await?;
            }
        }
        Ok(())
    }

    /// The first sequence the stream still holds (1 when it never lost one).
    async fn first_sequence(&self) -> Result<(u64, u64), Status> {
        self.ensure().await.map_err(|e| unavailable("stream", e))?;
        let mut stream = self
            .js
            .get_stream(STREAM)
            .await
            .map_err(|e| unavailable("stream", e))?;
        let info = stream.info().await.map_err(|e| unavailable("info", e))?;
        Ok((info.state.first_sequence, info.state.last_sequence))
    }

    /// Checks that the events after `after` are all still kept:
    /// FAILED_PRECONDITION when the oldest of them were removed.
    pub(crate) async fn check_kept(&self, after: u64) -> Result<(), Status> {
        if after == 0 {
            return Ok(());
        }
        let (first, last) = self.first_sequence().await?;
        // An empty stream reports first = last + 1.
        if after + 1 < first && first <= last + 1 && last > 0 {
            return Err(Status::failed_precondition(format!(
                "events after {after} are no longer kept (the oldest kept is {first}); \
                 start again without resume_after, or from 0 for the oldest kept"
            )));
        }
        Ok(())
    }

    /// An ordered consumer of `filter` from `start` on (recreated by the
    /// client on a gap).
    async fn ordered(
        &self,
        filter: String,
        start: consumer::DeliverPolicy,
    ) -> Result<consumer::Consumer<consumer::push::OrderedConfig>, Status> {
        self.ensure().await.map_err(|e| unavailable("stream", e))?;
        let stream = self
            .js
            .get_stream(STREAM)
            .await
            .map_err(|e| unavailable("stream", e))?;
        stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.js.client().new_inbox(),
                filter_subject: filter,
                deliver_policy: start,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable("consumer", e))
    }

    /// The messages of `filter` from `start` on, in order, as they come.
    pub(crate) async fn follow(
        &self,
        filter: String,
        start: consumer::DeliverPolicy,
    ) -> Result<impl Stream<Item = Result<Stored, Status>> + Send + 'static, Status> {
        let messages = self
            .ordered(filter, start)
            .await?
            .messages()
            .await
            .map_err(|e| unavailable("consumer", e))?;
        Ok(messages.map(|item| Ok(stored(&item.map_err(|e| unavailable("consumer", e))?)?.0)))
    }

    /// Up to `limit` messages of `filter` from sequence `from` on that
    /// `keep` accepts, and whether more may follow. Reads until the page is
    /// full or the stream's end; a page never costs more than the messages
    /// it skips past.
    pub(crate) async fn page(
        &self,
        filter: String,
        from: u64,
        limit: usize,
        keep: impl Fn(&Stored) -> bool,
    ) -> Result<(Vec<Stored>, bool), Status> {
        let start = consumer::DeliverPolicy::ByStartSequence {
            start_sequence: from.max(1),
        };
        let consumer = self.ordered(filter, start).await?;
        let pending = consumer.cached_info().num_pending;
        if pending == 0 {
            return Ok((Vec::new(), false));
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| unavailable("consumer", e))?;
        let mut page = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(5), messages.next())
                .await
                .map_err(|_| Status::unavailable("the event log did not answer in time"))?;
            let Some(item) = next else {
                return Ok((page, true));
            };
            let message = item.map_err(|e| unavailable("consumer", e))?;
            let (stored, left) = stored(&message)?;
            if keep(&stored) {
                page.push(stored);
            }
            if left == 0 {
                return Ok((page, false));
            }
            if page.len() >= limit {
                return Ok((page, true));
            }
        }
    }
}

/// A delivered message as stored, and how many of the consumer's are left
/// after it.
fn stored(message: &jetstream::Message) -> Result<(Stored, u64), Status> {
    let info = message.info().map_err(|e| unavailable("message", e))?;
    let stored = (
        info.stream_sequence,
        message.headers.clone(),
        message.payload.clone(),
    );
    Ok((stored, info.pending))
}
