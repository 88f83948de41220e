//! `nordlys.v1.EventService`: the audit log, live and paged.

use std::pin::Pin;

use async_nats::jetstream::consumer::DeliverPolicy;
use futures::{Stream, StreamExt};
use nordlys_api::{page, Violations};
use nordlys_proto::pb::nordlys::v1::event_service_server::EventService;
use nordlys_proto::pb::nordlys::v1::{
    Event, ListEventsRequest, ListEventsResponse, WatchEventsRequest,
};
use nordlys_transport::metadata::timeout_of;
use nordlys_transport::Role;
use tonic::{Request, Response, Status};

use super::Api;
use crate::call::Call;
use crate::events::{self, Stored};

/// The most types one request may filter on.
const MAX_TYPES: usize = 32;
/// The page size when the caller asks for none.
const DEFAULT_PAGE: usize = 100;

/// What a watch or a list reads: whose events, and which of them.
struct Selection {
    /// The organization's id; empty for every organization.
    organization: String,
    types: Vec<String>,
    resource: String,
}

impl Selection {
    /// The stream filter: one organization, and one type when only one is
    /// asked for (nats-server 2.9 takes one filter per consumer).
    fn filter(&self) -> String {
        let kind = match self.types.as_slice() {
            [one] if !self.organization.is_empty() => Some(one.as_str()),
            _ => None,
        };
        events::filter(&self.organization, kind)
    }

    /// Whether a stored event is one asked for.
    fn keeps(&self, stored: &Stored) -> bool {
        let headers = stored.1.as_ref();
        if !self.types.is_empty() {
            match events::type_of(headers) {
                Some(t) if self.types.iter().any(|k| k == t) => {}
                _ => return false,
            }
        }
        if !self.resource.is_empty() {
            let Some(subject) = events::subject_of(headers) else {
                return false;
            };
            let under = subject
                .strip_prefix(self.resource.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            if !under {
                return false;
            }
        }
        true
    }

    fn fingerprint(&self) -> String {
        let types = self.types.join(",");
        page::fingerprint(&[&self.organization, &types, &self.resource])
    }
}

/// An event type a filter may name: `io.nordlys.v1.` and lowercase
/// letters, digits, `_` and dots, so it is also a NATS subject's tail.
fn is_event_type(t: &str) -> bool {
    t.strip_prefix("io.nordlys.v1.").is_some_and(|rest| {
        !rest.is_empty()
            && t.len() <= 128
            && rest.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            })
    })
}

impl Api {
    /// Checks a watch's or list's filters and whose events it reads.
    fn selection(
        &self,
        call: &Call,
        organization: &str,
        types: &[String],
        resource: &str,
    ) -> Result<Selection, Status> {
        let organization = if organization.is_empty() && call.caller.role == Role::Operator {
            String::new()
        } else {
            self.resolve_org(call, organization, "organization")?
        };
        let mut v = Violations::new();
        if types.len() > MAX_TYPES {
            v.add("types", format!("at most {MAX_TYPES} types"));
        }
        for (i, t) in types.iter().enumerate() {
            if !is_event_type(t) {
                v.add(
                    format!("types[{i}]"),
                    "must be an event type such as io.nordlys.v1.project.created",
                );
            }
        }
        if !resource.is_empty()
            && (resource.len() > 512
                || resource.ends_with('/')
                || !resource.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || b == b'/' || b == b'-' || b == b'_' || b == b'.'
                }))
        {
            v.add("resource", "must be a resource name such as projects/web");
        }
        v.into_result()?;
        Ok(Selection {
            organization: organization
                .strip_prefix("organizations/")
                .unwrap_or(&organization)
                .to_string(),
            types: types.to_vec(),
            resource: resource.to_string(),
        })
    }
}

/// The stored event, or `None` (logged) when it is not one of ours.
fn event_of(stored: Stored) -> Option<Event> {
    let (sequence, headers, payload) = stored;
    match events::decode(sequence, headers.as_ref(), &payload) {
        Ok(event) => Some(event),
        Err(e) => {
            tracing::warn!(sequence, error = %e, "a message in the event stream is not an event; skipped");
            None
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for Api {
    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<WatchEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let call = self.state.begin(&request).await?;
        // A watch lasts as long as the caller asks: no default deadline.
        let deadline = timeout_of(request.metadata());
        let last_event_id = match request.metadata().get("last-event-id") {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or_else(|| {
                        nordlys_api::invalid("Last-Event-ID", "must be an event sequence")
                    })?,
            ),
        };
        let req = request.into_inner();
        let selection = self.selection(&call, &req.organization, &req.types, &req.resource)?;
        let log = self.state.events.log();
        let start = match req.resume_after.or(last_event_id) {
            None => DeliverPolicy::New,
            Some(0) => DeliverPolicy::All,
            Some(after) => {
                log.check_kept(after).await?;
                DeliverPolicy::ByStartSequence {
                    start_sequence: after.saturating_add(1),
                }
            }
        };
        let messages = log.follow(selection.filter(), start).await?;
        let events = messages.filter_map(move |item| {
            let event = match item {
                Ok(stored) if selection.keeps(&stored) => event_of(stored).map(Ok),
                Ok(_) => None,
                Err(status) => Some(Err(status)),
            };
            futures::future::ready(event)
        });
        // The stream ends with a status: the gateway shutting down (resume
        // elsewhere), or the caller's deadline.
        let closing = self.state.events.closing();
        let end = async move {
            match deadline {
                Some(d) => {
                    tokio::select! {
                        _ = closing => Status::unavailable("the gateway is shutting down; resume after the last event's sequence"),
                        _ = tokio::time::sleep(d) => Status::deadline_exceeded("the watch's deadline passed"),
                    }
                }
                None => {
                    closing.await;
                    Status::unavailable(
                        "the gateway is shutting down; resume after the last event's sequence",
                    )
                }
            }
        };
        let stream = until(events, end);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_events(
        &self,
        request: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        let selection = self.selection(&call, &req.organization, &req.types, &req.resource)?;
        if req.page_size < 0 {
            return Err(nordlys_api::invalid("page_size", "must not be negative"));
        }
        let size = match req.page_size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(page::MAX_PAGE_SIZE),
        };
        let fingerprint = selection.fingerprint();
        let after = page::decode(&req.page_token, &fingerprint)?;
        let from = if after.is_empty() {
            1
        } else {
            after
                .parse::<u64>()
                .map_err(|_| nordlys_api::invalid("page_token", "is not a token this API issued"))?
                .saturating_add(1)
        };
        let log = self.state.events.log();
        let (stored, more) = tokio::time::timeout(
            call.remaining(),
            log.page(selection.filter(), from, size, |s| selection.keeps(s)),
        )
        .await
        .map_err(|_| Status::deadline_exceeded("the call's deadline passed"))??;
        let next_page_token = match (more, stored.last()) {
            (true, Some((last, _, _))) => page::encode(&last.to_string(), &fingerprint),
            _ => String::new(),
        };
        let events = stored.into_iter().filter_map(event_of).collect();
        Ok(Response::new(ListEventsResponse {
            events,
            next_page_token,
        }))
    }
}

/// `stream`'s items until `end` resolves, then `end`'s status; the
/// stream also ends after its own first error.
fn until(
    stream: impl Stream<Item = Result<Event, Status>> + Send + 'static,
    end: impl std::future::Future<Output = Status> + Send + 'static,
) -> impl Stream<Item = Result<Event, Status>> + Send + 'static {
    futures::stream::select(stream, futures::stream::once(end).map(Err)).scan(
        false,
        |done, item| {
            if *done {
                return futures::future::ready(None);
            }
            *done = item.is_err();
            futures::future::ready(Some(item))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types() {
        assert!(is_event_type("io.nordlys.v1.project.created"));
        assert!(is_event_type("io.nordlys.v1.access_rule.deleted"));
        for bad in [
            "io.nordlys.v1.",
            "io.nordlys.v1.project.*",
            "io.nordlys.v1.project.>",
            "io.nordlys.v1.project..created",
            "com.example.thing",
            "io.nordlys.v1.Project.created",
            "io.nordlys.v1.project created",
        ] {
            assert!(!is_event_type(bad), "{bad}");
        }
    }

    fn stored(kind: &str, subject: &str) -> Stored {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("ce-type", kind);
        headers.insert("ce-subject", subject);
        (1, Some(headers), bytes::Bytes::new())
    }

    #[test]
    fn selections_keep_types_and_resources_under_them() {
        let s = Selection {
            organization: "acme".to_string(),
            types: vec!["io.nordlys.v1.network.created".to_string()],
            resource: "projects/web".to_string(),
        };
        assert_eq!(
            s.filter(),
            "nordlys.events.acme.io.nordlys.v1.network.created"
        );
        assert!(s.keeps(&stored(
            "io.nordlys.v1.network.created",
            "projects/web/networks/n1"
        )));
        assert!(s.keeps(&stored("io.nordlys.v1.network.created", "projects/web")));
        assert!(!s.keeps(&stored("io.nordlys.v1.network.created", "projects/webshop")));
        assert!(!s.keeps(&stored("io.nordlys.v1.project.created", "projects/web")));
        let all = Selection {
            organization: String::new(),
            types: vec!["io.nordlys.v1.network.created".to_string()],
            resource: String::new(),
        };
        assert_eq!(
            all.filter(),
            "nordlys.events.>",
            "operators filter in process"
        );
    }
}
