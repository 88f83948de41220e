//! Logs and traces for the Nordlys daemons.
//!
//! [`init`] installs what every daemon logs with (fmt to stderr, filtered by
//! `RUST_LOG`, default `info`) and, only when an OTLP endpoint is configured
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), a
//! `tracing-opentelemetry` layer that exports spans over OTLP/gRPC. The W3C
//! trace context travels in HTTP headers, gRPC metadata and NATS headers
//! through the carriers here; [`layer::TraceLayer`] opens the server span of
//! each HTTP or gRPC request, [`nats`] the spans of NATS requests.
//!
//! Without an endpoint no span is built (the span callsites are disabled),
//! and a caller's trace context still passes through unchanged: the server
//! side attaches the extracted context to the request's future, and
//! [`inject`] writes it back out on every internal call.

pub mod layer;
pub mod nats;

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{filter_fn, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use opentelemetry;
pub use tracing_opentelemetry;

/// The target of every span made for OpenTelemetry. Only these spans reach
/// the exporter, and the log output never shows them, so logs read as they
/// did before traces existed.
pub const TARGET: &str = "nordlys::otel";

/// The W3C header names.
pub const TRACEPARENT: &str = "traceparent";
/// See [`TRACEPARENT`].
pub const TRACESTATE: &str = "tracestate";

/// W3C Trace Context allows 32 list members of up to 256 characters; 512
/// is the length it asks every participant to pass on at least.
const MAX_TRACESTATE: usize = 512;

/// Whether spans are exported (set once by [`init`]).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether [`init`] installed an exporter: spans exist and carry ids.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Keeps the tracer provider; flushes the spans still queued and shuts the
/// exporter down when dropped (or on [`Guard::shutdown`]).
#[derive(Debug)]
#[must_use = "dropping the guard shuts the exporter down"]
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Guard {
    /// Flushes queued spans and stops the exporter (what dropping does).
    pub fn shutdown(self) {}
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // From a helper thread: the batch exporter's connection runs
            // on the Tokio runtime, and this thread may be one of its
            // workers; the wait is bounded by the SDK's shutdown timeout.
            let _ = std::thread::spawn(move || provider.shutdown()).join();
        }
    }
}

/// Whether an OTLP endpoint for traces is configured.
fn endpoint_configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim() == "true");
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Installs the global subscriber (fmt to stderr filtered by `RUST_LOG`,
/// default `info`) and, when an OTLP endpoint is configured, the span
/// exporter for `service_name` (unless `OTEL_SERVICE_NAME` or
/// `OTEL_RESOURCE_ATTRIBUTES` name the service). Call it inside the Tokio
/// runtime: the gRPC exporter's connection runs on it.
pub fn init(service_name: &'static str) -> Guard {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info"))
                .and(filter_fn(|meta| meta.target() != TARGET)),
        );
    let mut failure = None;
    let provider = if endpoint_configured() {
        match provider(service_name) {
            Ok(provider) => Some(provider),
            Err(e) => {
                failure = Some(e);
                None
            }
        }
    } else {
        None
    };
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service_name))
            // Kind, name and the semantic attributes say it all; file,
            // line, thread and level attributes would be noise on every span.
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_level(false)
            .with_tracked_inactivity(false)
            // Our spans, and warnings and errors logged inside them as span events.
            .with_filter(filter_fn(|meta| {
                meta.target() == TARGET
                    || (meta.is_event() && *meta.level() <= tracing::Level::WARN)
            }))
    });
    EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .init();
    if let Some(e) = failure {
        tracing::warn!(error = %e, "traces are not exported: the OTLP exporter could not be built");
    } else if provider.is_some() {
        tracing::info!("exporting traces over OTLP/gRPC");
    }
    Guard { provider }
}

fn provider(service_name: &'static str) -> Result<SdkTracerProvider, String> {
    if let Ok(protocol) = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
    {
        if protocol.trim() != "grpc" {
            return Err(format!(
                "OTLP protocol {protocol:?} is not supported: only grpc is built in"
            ));
        }
    }
    // The exporter reads the endpoint, headers and timeout from the
    // OTEL_EXPORTER_OTLP_* variables itself (no compression is built in).
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| e.to_string())?;
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win, as the SDK wants;
    // the daemon's own name otherwise, not "unknown_service".
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| {
            v.split(',')
                .any(|kv| kv.trim().starts_with("service.name="))
        });
    let mut resource = Resource::builder();
    if !named {
        resource = resource.with_service_name(service_name);
    }
    // The batch processor reads OTEL_BSP_*, the sampler OTEL_TRACES_SAMPLER*.
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The propagator: W3C Trace Context only (no global lookup per call).
static PROPAGATOR: std::sync::LazyLock<TraceContextPropagator> =
    std::sync::LazyLock::new(TraceContextPropagator::new);

/// The trace context a request carries (empty when it carries none, or a
/// malformed one).
pub fn extract(carrier: &dyn Extractor) -> Context {
    PROPAGATOR.extract_with_context(&Context::new(), &Checked(carrier))
}

/// Writes the trace context of `span` into `carrier`: the span's own when
/// spans are exported, else the context the server side attached to this
/// request (the caller's, passed through unchanged).
pub fn inject(span: &tracing::Span, carrier: &mut dyn Injector) {
    if exporting() && !span.is_disabled() {
        PROPAGATOR.inject_context(&span.context(), carrier);
    } else {
        PROPAGATOR.inject_context(&Context::current(), carrier);
    }
}

/// Makes `span` a child of the remote context `parent` (when spans are
/// exported and the context is valid; a new root otherwise).
pub fn set_parent(span: &tracing::Span, parent: &Context) {
    use opentelemetry::trace::TraceContextExt;
    if exporting() && parent.span().span_context().is_valid() {
        // Fails only for a disabled span or one already started: then
        // there is nothing to connect.
        let _ = span.set_parent(parent.clone());
    }
}

/// Applies the checks W3C Trace Context asks of a receiver, which the SDK's
/// propagator is more lenient about: a traceparent is
/// `{2 hex version}-{32 hex trace id}-{16 hex parent id}-{2 hex flags}`,
/// lowercase, ids not all zero, version `ff` invalid, version `00` with
/// nothing after the flags; an oversized tracestate is dropped alone.
struct Checked<'a>(&'a dyn Extractor);

impl Extractor for Checked<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let value = self.0.get(key)?;
        match key {
            TRACEPARENT => well_formed(value).then_some(value),
            TRACESTATE => (value.len() <= MAX_TRACESTATE).then_some(value),
            _ => Some(value),
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys()
    }
}

/// Whether `text` is a traceparent a receiver may use.
pub fn well_formed(text: &str) -> bool {
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let mut fields = text.split('-');
    let (Some(version), Some(trace_id), Some(parent_id), Some(flags)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    hex(version, 2)
        && version != "ff"
        && hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        && hex(flags, 2)
        && (version != "00" || fields.next().is_none())
}

/// Whether the propagator's `key: value` is not worth sending: it writes
/// an empty tracestate when there is none.
fn skip(key: &str, value: &str) -> bool {
    value.is_empty() && key == TRACESTATE
}

/// An HTTP header map (and tonic metadata, through `as_ref`/`into_headers`)
/// as a carrier.
#[derive(Debug)]
pub struct HeaderCarrier<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// A mutable HTTP header map as a carrier.
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if skip(key, &value) {
            return;
        }
        // The propagator writes only its own lowercase names and visible
        // ASCII; anything else is skipped rather than sent broken.
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Writes `span`'s trace context into tonic-style metadata headers
/// (`MetadataMap::into_headers`, then `MetadataMap::from_headers`).
pub fn inject_headers(span: &tracing::Span, headers: &mut http::HeaderMap) {
    inject(span, &mut HeaderInjector(headers));
}

/// NATS headers as a carrier.
#[derive(Debug)]
pub struct NatsCarrier<'a>(pub &'a async_nats::HeaderMap);

impl Extractor for NatsCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// Mutable NATS headers as a carrier.
#[derive(Debug)]
pub struct NatsInjector<'a>(pub &'a mut async_nats::HeaderMap);

impl Injector for NatsInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if !skip(key, &value) {
            self.0.insert(key, value);
        }
    }
}

/// The work of one request: runs `inner` inside `span`, with `context` (the
/// caller's, when spans are not exported) as the current OpenTelemetry
/// context, so that [`inject`] passes it on.
pub fn instrument<F>(inner: F, span: tracing::Span, context: Option<Context>) -> Traced<F> {
    Traced {
        inner,
        span,
        context,
    }
}

/// `inner`, spawned as part of the current work: it runs in the current
/// span with the current OpenTelemetry context, as if it had not left the
/// task that spawned it.
pub fn in_current<F>(inner: F) -> Traced<F> {
    instrument(inner, tracing::Span::current(), Some(Context::current()))
}

pin_project_lite::pin_project! {
    /// A future run inside a span and, optionally, an OpenTelemetry context.
    #[derive(Debug)]
    pub struct Traced<F> {
        #[pin]
        inner: F,
        span: tracing::Span,
        context: Option<Context>,
    }
}

impl<F> Traced<F> {
    /// The span the future runs in.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }
}

impl<F: std::future::Future> std::future::Future for Traced<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let _attached = this.context.as_ref().map(|c| c.clone().attach());
        this.inner.poll(cx)
    }
}

/// The context to attach to a request's work when spans are not exported:
/// the caller's, if it sent a valid one; `None` when spans are exported
/// (the server span carries it then) or there is nothing to pass on.
pub fn passthrough(remote: Context) -> Option<Context> {
    use opentelemetry::trace::TraceContextExt;
    (!exporting() && remote.span().span_context().is_valid()).then_some(remote)
}

/// A span and context for work spawned by a request that goes on after
/// it was answered: a new span in the same trace, a child of the current
/// one that does not hold the request's span open.
pub fn follow_on(name: &'static str) -> (tracing::Span, Option<Context>) {
    use opentelemetry::trace::TraceContextExt;
    if exporting() {
        let parent = tracing::Span::current().context();
        let span =
            tracing::info_span!(target: TARGET, parent: None, "background", otel.name = name);
        let _ = span.set_parent(parent);
        (span, None)
    } else {
        let current = Context::current();
        let valid = current.span().span_context().is_valid();
        (tracing::Span::none(), valid.then_some(current))
    }
}

/// The W3C trace id of the current work, when it belongs to a trace: the
/// current span's (exporting), or the caller's context passed through.
pub fn current_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = if exporting() {
        tracing::Span::current().context()
    } else {
        Context::current()
    };
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The CLIENT span of a unary gRPC call of `/{service}/{method}`, to put
/// into the call's metadata with [`inject_headers`].
pub fn grpc_client_span(service: &str, method: &str) -> tracing::Span {
    if !exporting() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "grpc.client",
        otel.name = format!("{service}/{method}"),
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
    )
}

/// The CLIENT span of an HTTP request of `method` to `uri`, to put into its
/// headers with [`inject_headers`]. `url.full` never shows user
/// information (a password in the URL).
pub fn http_client_span(method: &http::Method, uri: &http::Uri) -> tracing::Span {
    if !exporting() {
        return tracing::Span::none();
    }
    let host = uri.host().unwrap_or_default();
    let port = uri.port_u16().or(match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    });
    let full = format!(
        "{}://{}{}{}",
        uri.scheme_str().unwrap_or("http"),
        host,
        uri.port().map(|p| format!(":{p}")).unwrap_or_default(),
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
    );
    tracing::info_span!(
        target: TARGET,
        "http.client",
        otel.name = method.as_str(),
        otel.kind = "client",
        http.request.method = method.as_str(),
        server.address = host,
        server.port = port.map(i64::from),
        url.full = full,
    )
}

/// Records the status of an HTTP answer on its CLIENT span (4xx and 5xx
/// are failures of the call).
pub fn record_http_status(span: &tracing::Span, status: u16) {
    if !exporting() || span.is_disabled() {
        return;
    }
    span.set_attribute("http.response.status_code", i64::from(status));
    if status >= 400 {
        span.set_attribute("error.type", status.to_string());
        set_error(span, status.to_string());
    }
}

/// Records how a call ended on its CLIENT (or NATS SERVER) span: the gRPC
/// code (0 for an answer), failed when not OK.
pub fn record_outcome(span: &tracing::Span, code: i32, message: &str) {
    if !exporting() || span.is_disabled() {
        return;
    }
    span.set_attribute("rpc.grpc.status_code", i64::from(code));
    if code != 0 {
        span.set_attribute("error.type", code.to_string());
        set_error(span, message.to_owned());
    }
}

/// Marks `span` failed with `message` (`otel.status_code = ERROR`).
pub fn set_error(span: &tracing::Span, message: impl Into<std::borrow::Cow<'static, str>>) {
    if exporting() && !span.is_disabled() {
        span.set_status(opentelemetry::trace::Status::error(message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn extracted(parent: &str, state: Option<&str>) -> (Option<String>, Option<String>) {
        let mut headers = http::HeaderMap::new();
        headers.insert(TRACEPARENT, parent.parse().expect("ascii"));
        if let Some(state) = state {
            headers.insert(TRACESTATE, state.parse().expect("ascii"));
        }
        let cx = extract(&HeaderCarrier(&headers));
        let mut out = http::HeaderMap::new();
        PROPAGATOR.inject_context(&cx, &mut HeaderInjector(&mut out));
        let get = |k| out.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
        (get(TRACEPARENT), get(TRACESTATE))
    }

    #[test]
    fn a_valid_context_round_trips() {
        assert_eq!(
            extracted(PARENT, Some("vendor=abc")),
            (Some(PARENT.to_owned()), Some("vendor=abc".to_owned()))
        );
    }

    #[test]
    fn malformed_traceparents_are_dropped_with_their_tracestate() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        ] {
            assert_eq!(extracted(bad, Some("vendor=abc")), (None, None), "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_keeps_its_ids() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        // Passed on as the version this participant knows.
        assert_eq!(extracted(later, None).0.as_deref(), Some(PARENT));
    }

    #[test]
    fn an_oversized_tracestate_is_dropped_alone() {
        let long = format!("v={}", "a".repeat(MAX_TRACESTATE));
        assert_eq!(
            extracted(PARENT, Some(&long)),
            (Some(PARENT.to_owned()), None)
        );
    }

    #[test]
    fn nats_headers_carry_the_context() {
        let mut headers = http::HeaderMap::new();
        headers.insert(TRACEPARENT, PARENT.parse().expect("ascii"));
        let cx = extract(&HeaderCarrier(&headers));
        let mut nats = async_nats::HeaderMap::new();
        PROPAGATOR.inject_context(&cx, &mut NatsInjector(&mut nats));
        assert_eq!(nats.get(TRACEPARENT).map(|v| v.as_str()), Some(PARENT));
        let back = extract(&NatsCarrier(&nats));
        assert_eq!(
            back.span().span_context().trace_id(),
            cx.span().span_context().trace_id()
        );
    }

    #[tokio::test]
    async fn without_export_the_attached_context_passes_through() {
        let mut headers = http::HeaderMap::new();
        headers.insert(TRACEPARENT, PARENT.parse().expect("ascii"));
        let remote = passthrough(extract(&HeaderCarrier(&headers)));
        assert!(remote.is_some());
        let sent = instrument(
            async {
                let mut out = http::HeaderMap::new();
                inject_headers(&tracing::Span::none(), &mut out);
                out.get(TRACEPARENT)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            },
            tracing::Span::none(),
            remote,
        )
        .await;
        assert_eq!(sent.as_deref(), Some(PARENT));
    }
}
