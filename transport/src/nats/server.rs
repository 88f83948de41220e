//! The server side: a NATS micro service whose endpoints run tonic-shaped
//! handlers, requests concurrently, drained on shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::service::{Request as MicroRequest, ServiceExt};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use prost::Message;
use tokio_util::task::TaskTracker;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::{Request, Response, Status};

use crate::metadata::{timeout_of, CALLER, GRPC_TIMEOUT, REQUEST_ID, TRACEPARENT, TRACESTATE};
use crate::{status, BoxError};

/// The queue group every endpoint's instances join.
pub const QUEUE_GROUP: &str = "q";

/// A type-erased endpoint handler: request bytes and metadata in, reply
/// bytes or a status out.
pub type Handler =
    Arc<dyn Fn(Bytes, MetadataMap) -> BoxFuture<'static, Result<Bytes, Status>> + Send + Sync>;

/// Adapts a tonic-shaped unary handler (`Request<Req>` to `Response<Resp>`)
/// into a [`Handler`]. An undecodable payload is INVALID_ARGUMENT; a handler
/// still running when the call's deadline passes is cut off with
/// DEADLINE_EXCEEDED.
pub fn unary<Req, Resp, F, Fut>(f: F) -> Handler
where
    Req: Message + Default + 'static,
    Resp: Message + 'static,
    F: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
{
    let f = Arc::new(f);
    Arc::new(move |payload: Bytes, metadata: MetadataMap| {
        let f = f.clone();
        Box::pin(async move {
            let message = Req::decode(payload)
                .map_err(|e| Status::invalid_argument(format!("undecodable request: {e}")))?;
            let timeout = timeout_of(&metadata);
            let mut request = Request::new(message);
            *request.metadata_mut() = metadata;
            let call = f(request);
            let response = match timeout {
                Some(t) => tokio::time::timeout(t, call)
                    .await
                    .map_err(|_| Status::deadline_exceeded("deadline passed in the handler"))??,
                None => call.await?,
            };
            Ok(Bytes::from(response.into_inner().encode_to_vec()))
        })
    })
}

/// Told of every answered request: endpoint name, status code, time taken
/// (for metrics; it runs on the request's task, so it must be quick).
pub type Observer = Arc<dyn Fn(&str, tonic::Code, Duration) + Send + Sync>;

/// Builds a [`MicroService`].
#[derive(Debug)]
pub struct MicroServiceBuilder {
    client: async_nats::Client,
    name: String,
    version: String,
    description: String,
    metadata: HashMap<String, String>,
    prefix: String,
    endpoints: Vec<(String, HandlerDebug)>,
    observer: Option<ObserverDebug>,
}

struct ObserverDebug(Observer);

impl std::fmt::Debug for ObserverDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

struct HandlerDebug(Handler);

impl std::fmt::Debug for HandlerDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handler")
    }
}

impl MicroServiceBuilder {
    /// A service `name` (micro service names: letters, digits, `-`, `_`) of
    /// semver `version`, whose endpoints sit on `{prefix}.{endpoint}`.
    pub fn new(
        client: async_nats::Client,
        name: impl Into<String>,
        version: impl Into<String>,
        prefix: impl Into<String>,
    ) -> MicroServiceBuilder {
        MicroServiceBuilder {
            client,
            name: name.into(),
            version: version.into(),
            description: String::new(),
            metadata: HashMap::new(),
            prefix: prefix.into(),
            endpoints: Vec::new(),
            observer: None,
        }
    }

    /// Tells `observer` of every answered request.
    pub fn observer(mut self, observer: Observer) -> Self {
        self.observer = Some(ObserverDebug(observer));
        self
    }

    /// The description `$SRV.INFO` shows.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Adds a metadata entry `$SRV.INFO` and `$SRV.PING` show.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Adds an endpoint `name` on `{prefix}.{name}`.
    pub fn endpoint(mut self, name: impl Into<String>, handler: Handler) -> Self {
        self.endpoints.push((name.into(), HandlerDebug(handler)));
        self
    }

    /// Registers the service and starts serving. Every instance started with
    /// the same prefix joins the same queue group, so NATS spreads requests.
    pub async fn start(self) -> Result<MicroService, BoxError> {
        let service = self
            .client
            .service_builder()
            .description(self.description)
            // Always an object, never null: the `nats micro` CLI checks it.
            .metadata(self.metadata)
            .start(self.name, self.version)
            .await?;
        // Named here (it is async-nats' default) so the spans can say it.
        let group = service.group_with_queue_group(self.prefix, QUEUE_GROUP);
        let tracker = TaskTracker::new();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        for (name, HandlerDebug(handler)) in self.endpoints {
            let endpoint = group.endpoint_builder().name(&name).add(&name).await?;
            let mut stop = stop_rx.clone();
            let observed = self
                .observer
                .as_ref()
                .map(|ObserverDebug(o)| (o.clone(), Arc::<str>::from(name.as_str())));
            tracker.spawn(async move {
                let mut endpoint = endpoint;
                // The requests being answered run inside this task rather
                // than a task each: spawning woke an idle worker thread for
                // nearly every request, which cost more than the handlers.
                // They still run concurrently; an endpoint's handlers share
                // one thread at a time, and they await I/O, not compute.
                let mut running = FuturesUnordered::new();
                loop {
                    tokio::select! {
                        biased;
                        _ = stop.changed() => break,
                        Some(()) = running.next(), if !running.is_empty() => {}
                        next = endpoint.next() => match next {
                            Some(request) => {
                                // Most answers need nothing but the CPU (a
                                // lookup, then a publish into the client's
                                // buffer): poll once here, and only what is
                                // left waiting joins the set.
                                let mut pending =
                                    Box::pin(answer(request, handler.clone(), observed.clone()));
                                if futures::poll!(pending.as_mut()).is_pending() {
                                    running.push(pending);
                                }
                            }
                            None => break,
                        },
                    }
                }
                // Unsubscribe so the queue group sends new work elsewhere,
                // then finish what was taken.
                let _ = endpoint.stop().await;
                while running.next().await.is_some() {}
            });
        }
        confirm_subscriptions(&self.client).await?;
        Ok(MicroService {
            service,
            tracker,
            stop: stop_tx,
        })
    }
}

/// Returns once the server has applied every subscription `client` sent.
///
/// `Client::flush` only empties our socket buffer: a ready line right after
/// it raced requests from other connections into "no responders" on a busy
/// machine. The server handles one connection's commands in order, so when
/// a message published to a fresh inbox of ours comes back, every earlier
/// subscription is in place (the PING/PONG flush of other NATS clients).
pub async fn confirm_subscriptions(client: &async_nats::Client) -> Result<(), BoxError> {
    const WITHIN: Duration = Duration::from_secs(10);
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await?;
    client.publish(inbox, Bytes::new()).await?;
    client.flush().await?;
    let echoed = tokio::time::timeout(WITHIN, echo.next()).await;
    let _ = echo.unsubscribe().await;
    match echoed {
        Ok(Some(_)) => Ok(()),
        Ok(None) => {
            Err("the NATS connection closed before the subscriptions were confirmed".into())
        }
        Err(_) => Err(format!("NATS did not confirm the subscriptions within {WITHIN:?}").into()),
    }
}

async fn answer(request: MicroRequest, handler: Handler, observed: Option<(Observer, Arc<str>)>) {
    let started = observed.as_ref().map(|_| std::time::Instant::now());
    // The caller's trace continues here: the handler's work (and the calls
    // it makes) runs inside this request's span.
    let (span, context) = nordlys_telemetry::nats::server_span(
        &request.message.subject,
        QUEUE_GROUP,
        request.message.headers.as_ref(),
    );
    let metadata = metadata_from_headers(request.message.headers.as_ref());
    let payload = request.message.payload.clone();
    let outcome =
        nordlys_telemetry::instrument(handler(payload, metadata), span.clone(), context).await;
    let code = match &outcome {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    let sent = match outcome {
        Ok(bytes) => {
            nordlys_telemetry::nats::record_outcome(&span, 0, "");
            request.respond(Ok(bytes)).await
        }
        Err(status) => {
            nordlys_telemetry::nats::record_outcome(&span, status.code() as i32, status.message());
            let (error, headers) = status::to_micro(&status);
            request.respond_with_headers(Err(error), headers).await
        }
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not send a reply");
    }
    if let (Some((observer, endpoint)), Some(started)) = (observed, started) {
        observer(&endpoint, code, started.elapsed());
    }
}

/// NATS headers to tonic metadata; entries that are not valid metadata are
/// dropped rather than failing the call.
fn metadata_from_headers(headers: Option<&HeaderMap>) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    let Some(headers) = headers else {
        return metadata;
    };
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        if name.len() >= 4
            && name
                .get(name.len() - 4..)
                .is_some_and(|end| end.eq_ignore_ascii_case("-bin"))
        {
            continue;
        }
        let Some(key) = metadata_key(name) else {
            continue;
        };
        for value in values {
            if let Ok(value) = AsciiMetadataValue::try_from(value.as_str()) {
                metadata.append(key.clone(), value);
            }
        }
    }
    metadata
}

/// The metadata key of header `name`. The names every internal call
/// carries are static keys: no allocation and no check per call.
fn metadata_key(name: &str) -> Option<AsciiMetadataKey> {
    Some(match name {
        GRPC_TIMEOUT => AsciiMetadataKey::from_static(GRPC_TIMEOUT),
        CALLER => AsciiMetadataKey::from_static(CALLER),
        REQUEST_ID => AsciiMetadataKey::from_static(REQUEST_ID),
        TRACEPARENT => AsciiMetadataKey::from_static(TRACEPARENT),
        TRACESTATE => AsciiMetadataKey::from_static(TRACESTATE),
        // from_bytes lowercases the name, as HTTP/2 wants.
        other => AsciiMetadataKey::from_bytes(other.as_bytes()).ok()?,
    })
}

/// A running NATS micro service.
#[derive(Debug)]
pub struct MicroService {
    service: async_nats::service::Service,
    tracker: TaskTracker,
    stop: tokio::sync::watch::Sender<bool>,
}

impl MicroService {
    /// The service instance id NATS micro discovery shows.
    pub async fn id(&self) -> String {
        self.service.info().await.id
    }

    /// Stops taking requests, waits up to `grace` for those in flight to be
    /// answered, then deregisters.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("in-flight requests still running after {grace:?}");
        }
        if let Err(e) = self.service.stop().await {
            tracing::warn!(error = %e, "could not stop the micro service cleanly");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_become_lowercase_metadata_and_binary_entries_stay_behind() {
        let mut headers = HeaderMap::new();
        headers.append(CALLER, "member;organizations/o;organizations/o/members/u");
        headers.append(GRPC_TIMEOUT, "1500000u");
        headers.append("X-Custom", "one");
        headers.append("X-Custom", "two");
        headers.append("trace-bin", "AQI");

        let metadata = metadata_from_headers(Some(&headers));

        assert_eq!(
            metadata.get(CALLER).and_then(|v| v.to_str().ok()),
            Some("member;organizations/o;organizations/o/members/u")
        );
        assert_eq!(timeout_of(&metadata), Some(Duration::from_millis(1500)));
        let custom: Vec<&str> = metadata
            .get_all("x-custom")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(custom, ["one", "two"]);
        assert!(metadata.get("trace-bin").is_none());
        assert_eq!(metadata.len(), 4);
    }
}
