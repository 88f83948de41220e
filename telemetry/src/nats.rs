//! Spans of NATS request-reply, with the attributes nats.net gives them
//! (NATS is not yet a registered `messaging.system`): the caller's CLIENT
//! span around the request, the responder's SERVER span around its work.

use async_nats::HeaderMap;
use opentelemetry::Context;

use crate::{exporting, extract, passthrough, set_parent, NatsCarrier, TARGET};

/// The CLIENT span of a request to `subject`, its context written into
/// `headers` (the caller's own context when spans are not exported).
pub fn client_span(subject: &str, headers: &mut HeaderMap) -> tracing::Span {
    let span = if exporting() {
        tracing::info_span!(
            target: TARGET,
            "nats.request",
            otel.name = format!("send {subject}"),
            otel.kind = "client",
            messaging.system = "nats",
            messaging.destination.name = subject,
            messaging.operation.type = "send",
            messaging.operation.name = "request",
        )
    } else {
        tracing::Span::none()
    };
    crate::inject(&span, &mut crate::NatsInjector(headers));
    span
}

/// The SERVER span of a request received on `subject` by queue group
/// `queue_group`, a child of the context its headers carry; and the
/// caller's context to attach to the work when spans are not exported.
pub fn server_span(
    subject: &str,
    queue_group: &str,
    headers: Option<&HeaderMap>,
) -> (tracing::Span, Option<Context>) {
    let remote = match headers {
        Some(headers) if headers.get(crate::TRACEPARENT).is_some() => {
            extract(&NatsCarrier(headers))
        }
        _ => Context::new(),
    };
    let span = if exporting() {
        tracing::info_span!(
            target: TARGET,
            "nats.process",
            otel.name = format!("process {subject}"),
            otel.kind = "server",
            messaging.system = "nats",
            messaging.destination.name = subject,
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.consumer.group.name = queue_group,
        )
    } else {
        tracing::Span::none()
    };
    set_parent(&span, &remote);
    (span, passthrough(remote))
}

pub use crate::record_outcome;
