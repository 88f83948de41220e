//! Audit events: every change the gateway makes, and every authorization it
//! refuses, becomes a CloudEvents 1.0 event on NATS
//! (`nordlys.events.{org}.{type}`, binary mode), kept in order by the
//! JetStream stream `NORDLYS_EVENTS` and served back by `EventService`.
//!
//! Recording never waits on NATS: events go through a bounded [`Outbox`].

mod cloudevents;
mod log;
mod outbox;

use std::time::Duration;

use nordlys_proto::pb::google::rpc::Status as RpcStatus;
use nordlys_proto::pb::nordlys::v1::{event::Data, Actor, Event, Origin};
use tonic::Status;

pub(crate) use cloudevents::{decode, subject_of, type_of};
pub(crate) use log::{filter, EventLog, Retention, Stored};
use outbox::{Outbox, Pending};

use crate::call::Call;

/// The `source` of every event this gateway records.
pub(crate) const SOURCE: &str = "//nordlys/gateway";
/// Where event types start.
const TYPE_PREFIX: &str = "io.nordlys.v1.";

/// One change to record: what happened to which resource of which
/// organization, and the resource as it was left.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    /// `project.created`, `quota.updated`, ...
    what: String,
    /// `organizations/{org}`.
    organization: String,
    /// The resource's name.
    subject: String,
    /// The create's request id, when it had one.
    request_id: String,
    /// What the outcome says beside OK (empty for most changes).
    message: String,
    data: Option<Data>,
}

impl Change {
    /// `kind` (`project`) was `verb` (`created`) in `organization`.
    pub(crate) fn new(kind: &str, verb: &str, organization: &str, subject: &str) -> Change {
        Change {
            what: format!("{kind}.{verb}"),
            organization: organization.to_string(),
            subject: subject.to_string(),
            request_id: String::new(),
            message: String::new(),
            data: None,
        }
    }

    /// With the resource as the change left it.
    pub(crate) fn data(mut self, data: Data) -> Change {
        self.data = Some(data);
        self
    }

    /// With the create's request id.
    pub(crate) fn request_id(mut self, request_id: &str) -> Change {
        self.request_id = request_id.to_string();
        self
    }

    /// With a note in the outcome, for what the data cannot say (a
    /// reconciliation's usage before it corrected it).
    pub(crate) fn message(mut self, message: String) -> Change {
        self.message = message;
        self
    }
}

/// The gateway's event recorder and reader.
#[derive(Debug)]
pub(crate) struct Events {
    outbox: Outbox,
    log: EventLog,
    publisher: tokio::task::JoinHandle<()>,
    /// Tells watches to end when the gateway shuts down.
    closing: tokio::sync::watch::Sender<bool>,
}

impl Events {
    /// Events kept in `log`, published through an outbox of `capacity`.
    pub(crate) fn start(log: EventLog, capacity: usize) -> Events {
        let (outbox, publisher) = Outbox::start(log.clone(), capacity);
        Events {
            outbox,
            log,
            publisher,
            closing: tokio::sync::watch::channel(false).0,
        }
    }

    /// The audit stream.
    pub(crate) fn log(&self) -> &EventLog {
        &self.log
    }

    /// Resolves when the gateway begins shutting down.
    pub(crate) fn closing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|closing| *closing).await;
        }
    }

    /// Ends the watches.
    pub(crate) fn close(&self) {
        let _ = self.closing.send(true);
    }

    /// Ends the watches, then waits (at most `limit`) for queued events to
    /// be stored.
    pub(crate) async fn shutdown(&self, limit: Duration) {
        self.close();
        if !self.outbox.flush(limit).await {
            tracing::warn!(
                queued = self.outbox.counters().queued.get(),
                "audit events still queued at shutdown are lost"
            );
        }
        self.publisher.abort();
    }

    /// Records a change made by `call`.
    pub(crate) fn changed(&self, call: &Call, change: Change) {
        let outcome = RpcStatus {
            code: 0,
            message: change.message.clone(),
            details: Vec::new(),
        };
        self.record(call, change, outcome);
    }

    /// Records that `call` was refused with `status` when it was
    /// PERMISSION_DENIED; the event belongs to the caller's organization
    /// (operators are never refused), about `subject`.
    pub(crate) fn refused(&self, call: &Call, subject: &str, status: &Status) {
        if status.code() != tonic::Code::PermissionDenied || call.caller.organization.is_empty() {
            return;
        }
        let change = Change::new(
            "authorization",
            "denied",
            &call.caller.organization,
            subject,
        );
        let outcome = RpcStatus {
            code: status.code() as i32,
            message: status.message().to_string(),
            details: Vec::new(),
        };
        self.record(call, change, outcome);
    }

    fn record(&self, call: &Call, change: Change, outcome: RpcStatus) {
        let Some(org_id) = change.organization.strip_prefix("organizations/") else {
            tracing::warn!(organization = %change.organization, "an event without an organization was not recorded");
            return;
        };
        let kind = format!("{TYPE_PREFIX}{}", change.what);
        let subject = log::subject(org_id, &kind);
        let request_id = if change.request_id.is_empty() {
            call.origin.request_id.clone()
        } else {
            change.request_id
        };
        let event = Event {
            name: String::new(),
            sequence: 0,
            id: nordlys_api::ids::random_hex(32),
            source: SOURCE.to_string(),
            r#type: kind,
            subject: change.subject,
            time: Some(nordlys_api::now()),
            organization: change.organization,
            actor: Some(Actor {
                member: call.caller.member.clone(),
                role: call.caller.role.as_str().to_string(),
                api_key: call.caller.api_key().to_string(),
            }),
            origin: Some(Origin {
                peer_address: call.origin.peer.clone(),
                request_id,
                trace_id: nordlys_telemetry::current_trace_id().unwrap_or_default(),
            }),
            outcome: Some(outcome),
            data: change.data,
        };
        let (headers, payload) = cloudevents::encode(&event);
        self.outbox.push(Pending {
            subject,
            headers,
            payload,
        });
    }

    /// Registers the outbox's counters in `registry`.
    pub(crate) fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        self.outbox.counters().register(registry);
    }
}
