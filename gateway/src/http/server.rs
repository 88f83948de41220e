//! The HTTP listener (HTTP/1.1 and HTTP/2, over TLS when `[tls]` is set,
//! axum over hyper): one handler for every path, the document and docs
//! pages, headers to gRPC metadata, deadlines, body limits, and answers.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body as AxumBody;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use tonic::metadata::{
    AsciiMetadataKey, AsciiMetadataValue, BinaryMetadataKey, BinaryMetadataValue, KeyAndValueRef,
    MetadataMap,
};

use super::errors::{status_json, HttpError};
use super::router::Miss;
use super::{docs, transcode, HttpGateway};

/// Headers passed to the services as metadata under their own name.
const FORWARDED: &[&str] = &[
    "authorization",
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-forwarded-host",
    // Server-Sent Events: where an EventSource resumes after a reconnect.
    "last-event-id",
];

/// Prefix of headers passed as metadata without it (grpc-gateway's
/// `Grpc-Metadata-`); the gateway's own `nordlys-*` and `grpc-*` names are
/// never taken from callers.
const METADATA_PREFIX: &str = "grpc-metadata-";

/// A bound, not yet serving, HTTP listener.
#[derive(Debug)]
pub(crate) struct HttpServer {
    listener: tokio::net::TcpListener,
    gateway: Arc<HttpGateway>,
    /// TLS for every connection (ALPN h2 and http/1.1); `None`: plaintext.
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// A serving HTTP listener.
#[derive(Debug)]
pub(crate) struct HttpHandle {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl HttpServer {
    /// Reads the HTTP rules of `services` from the API's descriptors and
    /// binds `config.http_listen`; fails on a bad or conflicting rule.
    pub(crate) async fn start(
        config: &crate::Config,
        services: &[&str],
        routes: tonic::service::Routes,
        direct: Arc<dyn super::Dispatch>,
        metrics: std::sync::Arc<crate::metrics::GatewayMetrics>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<HttpServer, nordlys_transport::BoxError> {
        let options = super::HttpOptions {
            max_body_bytes: config.http_max_body_bytes,
            default_timeout: config.default_timeout(),
            max_timeout: config.max_timeout(),
            allow_unknown_fields: config.http_allow_unknown_fields,
            metrics: Some(metrics),
        };
        let gateway = HttpGateway::new(
            nordlys_proto::FILE_DESCRIPTOR_SET,
            services,
            routes,
            Some(direct),
            options,
        )?;
        let mut server = HttpServer::bind(config.http_listen, gateway).await?;
        server.tls = tls;
        Ok(server)
    }

    /// Binds `addr` for `gateway`.
    pub(crate) async fn bind(
        addr: SocketAddr,
        gateway: HttpGateway,
    ) -> std::io::Result<HttpServer> {
        Ok(HttpServer {
            listener: tokio::net::TcpListener::bind(addr).await?,
            gateway: Arc::new(gateway),
            tls: None,
        })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until [`HttpHandle::shutdown`], in a task.
    pub(crate) fn spawn(self) -> HttpHandle {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.serve(async {
            let _ = stopped.await;
        }));
        HttpHandle {
            stop: Some(stop),
            task,
        }
    }

    async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(self.gateway)
            // The SERVER span of each request, continuing the caller's trace.
            .layer(nordlys_telemetry::layer::TraceLayer::http());
        let app = app.into_make_service_with_connect_info::<Peer>();
        if let Some(config) = self.tls {
            // The TLS listener sets TCP_NODELAY itself.
            let listener = TlsListener(nordlys_transport::tls::TlsIncoming::new(
                self.listener,
                config,
                "HTTP",
            )?);
            return axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await;
        }
        axum::serve(PlainListener(self.listener), app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// The client's address, for [`ConnectInfo`], from a plaintext or a TLS
/// connection alike.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, PlainListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, PlainListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// The plaintext HTTP port, for axum, with TCP_NODELAY: small responses
/// should not wait on Nagle's algorithm.
struct PlainListener(tokio::net::TcpListener);

impl axum::serve::Listener for PlainListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    return (tcp, peer);
                }
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// The TLS connections of the HTTP port, handshakes done, for axum.
struct TlsListener(nordlys_transport::tls::TlsIncoming);

impl axum::serve::Listener for TlsListener {
    type Io = nordlys_transport::tls::TlsConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.next().await {
                Some(Ok(connection)) => {
                    let peer = connection.peer_addr();
                    return (connection, peer);
                }
                // Refused handshakes are logged where they happen.
                Some(Err(_)) => continue,
                // The accept task is gone only once we are: wait for the
                // shutdown that drops us.
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.0.local_addr())
    }
}

impl HttpHandle {
    /// Stops taking connections; in-flight requests go on.
    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops, and waits until in-flight requests are answered.
    pub(crate) async fn shutdown(mut self) {
        self.stop();
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP listener failed"),
            Err(e) => tracing::warn!(error = %e, "HTTP listener task failed"),
        }
    }
}

async fn handle(
    State(gateway): State<Arc<HttpGateway>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    request: Request<AxumBody>,
) -> Response {
    let started = std::time::Instant::now();
    let mut rpc = None;
    let result = serve_call(&gateway, peer, request, &mut rpc).await;
    // Only calls that matched a method are counted: a label per unknown
    // path would let any client grow the series without bound.
    if let (Some(metrics), Some(binding)) = (&gateway.options.metrics, rpc) {
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(e) => e.status.code(),
        };
        metrics.observe(
            crate::metrics::Protocol::Http,
            binding.rpc.parent_service().full_name(),
            binding.rpc.name(),
            code,
            started.elapsed(),
        );
    }
    match result {
        Ok(response) => response,
        Err(e) => {
            if e.status.code() == tonic::Code::Internal || e.status.code() == tonic::Code::Unknown {
                tracing::warn!(status = ?e.status, "HTTP call failed");
            }
            e.into_response(&gateway.pool)
        }
    }
}

fn document(content_type: &'static str, body: &str) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
pub(super) async fn serve_one(
    gateway: &HttpGateway,
    peer: SocketAddr,
    request: Request<AxumBody>,
) -> Result<Response, HttpError> {
    serve_call(gateway, peer, request, &mut None).await
}

/// As [`serve_one`]; sets `rpc` to the method's binding once the path
/// matched one (for the metrics).
async fn serve_call<'g>(
    gateway: &'g HttpGateway,
    peer: SocketAddr,
    request: Request<AxumBody>,
    rpc: &mut Option<&'g super::rules::Binding>,
) -> Result<Response, HttpError> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    if parts.method == Method::GET {
        match path {
            "/openapi.json" => return Ok(document("application/json", &gateway.openapi_json)),
            "/openapi.yaml" => return Ok(document("application/yaml", &gateway.openapi_yaml)),
            "/docs" | "/docs/" => return Ok(document("text/html; charset=utf-8", docs::PAGE)),
            "/metrics" => {
                if let Some(metrics) = &gateway.options.metrics {
                    let accept = parts
                        .headers
                        .get(header::ACCEPT)
                        .and_then(|v| v.to_str().ok());
                    let (content_type, text) = metrics.render(accept);
                    return Ok(document(content_type, &text));
                }
            }
            _ => {}
        }
    }
    let found = gateway
        .router
        .find(&parts.method, path)
        .map_err(|miss| match miss {
            Miss::NotFound => HttpError::not_found(&parts.method, path),
            Miss::MethodNotAllowed(allow) => {
                HttpError::method_not_allowed(&parts.method, path, allow)
            }
            Miss::BadEncoding(why) => HttpError::bad_request("", why),
        })?;
    let binding = found.binding;
    nordlys_telemetry::layer::record_route(&parts.method, &binding.template.raw);
    *rpc = Some(binding);

    let explicit = explicit_deadline(&parts.headers)?;
    let default = match crate::call::orchestrates(binding.rpc.name()) {
        true => gateway.options.max_timeout,
        false => gateway.options.default_timeout,
    };
    let timeout = explicit.unwrap_or(default).min(gateway.options.max_timeout);
    let metadata = metadata(&parts.headers, peer)?;
    let body = read_body(&parts.headers, body, gateway.options.max_body_bytes).await?;
    let message = transcode::request(
        binding,
        &found.values,
        parts.uri.query(),
        &body,
        gateway.leniency(),
    )?;
    let encoded = transcode::encode(&message);
    let grpc_path = binding.grpc_path();

    if binding.rpc.is_server_streaming() {
        // A stream lasts as long as the caller asks (a watch would end at
        // the default deadline otherwise).
        let (metadata, stream) = gateway
            .invoker
            .server_streaming(&grpc_path, metadata, explicit, encoded)
            .await?;
        let binding = binding.clone();
        let pool = gateway.pool.clone();
        if accepts_event_stream(&parts.headers) {
            return Ok(event_stream(binding, pool, metadata, stream));
        }
        let lines = stream.map(move |item| {
            let line = match item
                .map_err(HttpError::from)
                .and_then(|bytes| transcode::response(&binding, &bytes).map_err(HttpError::from))
            {
                Ok(json) => serde_json::json!({ "result": json }),
                Err(e) => serde_json::json!({ "error": status_json(&e.status, &pool) }),
            };
            let mut text = line.to_string();
            text.push('\n');
            Ok::<Bytes, std::convert::Infallible>(Bytes::from(text))
        });
        let mut response = Response::new(AxumBody::from_stream(lines));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        copy_metadata(&metadata, response.headers_mut());
        return Ok(response);
    }

    let (metadata, answer) = gateway
        .invoker
        .unary(&grpc_path, metadata, timeout, encoded)
        .await?;
    let json = transcode::response_text(binding, &answer)?;
    let mut response = (StatusCode::OK, json).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    copy_metadata(&metadata, response.headers_mut());
    Ok(response)
}

/// How much of an oversized body is read and dropped before the 400, so
/// that a client still sending it reads the answer instead of a reset.
const DRAIN_BYTES: u64 = 16 * 1024 * 1024;

/// The request body, refused past `limit` bytes.
async fn read_body(headers: &HeaderMap, body: AxumBody, limit: usize) -> Result<Bytes, HttpError> {
    let too_large = || {
        HttpError::bad_request(
            "",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    let mut length = None;
    if let Some(value) = headers.get(header::CONTENT_LENGTH) {
        let value = value
            .to_str()
            .ok()
            .and_then(|l| l.parse::<u64>().ok())
            .ok_or_else(|| HttpError::bad_request("", "bad Content-Length header"))?;
        length = Some(value);
    }
    match length {
        Some(n) if n > limit as u64 + DRAIN_BYTES => return Err(too_large()),
        Some(n) if n > limit as u64 => {
            drain(body).await;
            return Err(too_large());
        }
        _ => {}
    }
    let mut body = body.into_data_stream();
    let mut collected = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            HttpError::bad_request("", format!("cannot read the request body: {e}"))
        })?;
        if collected.len() + chunk.len() > limit {
            drain_stream(body, collected.len() as u64 + chunk.len() as u64).await;
            return Err(too_large());
        }
        collected.extend_from_slice(&chunk);
    }
    Ok(collected.freeze())
}

async fn drain(body: AxumBody) {
    drain_stream(body.into_data_stream(), 0).await;
}

async fn drain_stream(mut body: axum::body::BodyDataStream, mut read: u64) {
    while read <= DRAIN_BYTES {
        match body.next().await {
            Some(Ok(chunk)) => read += chunk.len() as u64,
            _ => break,
        }
    }
}

/// Whether the caller asks for Server-Sent Events.
fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            media
                .split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// How often an idle event stream sends a comment, so that proxies and
/// load balancers keep the connection.
const SSE_KEEPALIVE: Duration = Duration::from_secs(15);

/// A server stream as Server-Sent Events: each message is an event whose
/// `data:` is its JSON and, when it has a `sequence`, whose `id:` is that,
/// so an EventSource resumes after it by itself (`Last-Event-ID`). An error
/// ends the stream as an `error` event with the google.rpc.Status JSON.
fn event_stream(
    binding: super::rules::Binding,
    pool: prost_reflect::DescriptorPool,
    metadata: MetadataMap,
    stream: tonic::Streaming<Bytes>,
) -> Response {
    let events = stream.map(move |item| {
        let text = match item
            .map_err(HttpError::from)
            .and_then(|bytes| transcode::response(&binding, &bytes).map_err(HttpError::from))
        {
            Ok(json) => {
                let id = match json.get("sequence") {
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                };
                let mut text = String::new();
                if let Some(id) = id {
                    text.push_str(&format!("id: {id}\n"));
                }
                if let Some(kind) = json.get("type").and_then(|t| t.as_str()) {
                    text.push_str(&format!("event: {kind}\n"));
                }
                text.push_str(&format!("data: {json}\n\n"));
                text
            }
            Err(e) => format!("event: error\ndata: {}\n\n", status_json(&e.status, &pool)),
        };
        Bytes::from(text)
    });
    let keepalive = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval_at(
        tokio::time::Instant::now() + SSE_KEEPALIVE,
        SSE_KEEPALIVE,
    ))
    .map(|_| Bytes::from_static(b": keepalive\n\n"));
    // The events' end (`None`) ends the body: the keepalive never ends.
    let events = events
        .map(Some)
        .chain(futures::stream::once(async { None }));
    let body = futures::stream::select(events, keepalive.map(Some))
        .take_while(|item| futures::future::ready(item.is_some()))
        .filter_map(futures::future::ready)
        .map(Ok::<Bytes, std::convert::Infallible>);
    let mut response = Response::new(AxumBody::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx buffers responses unless told not to.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    copy_metadata(&metadata, headers);
    response
}

/// The caller's own deadline, if it set one: `grpc-timeout` (gRPC's
/// format, e.g. `500m`), else `X-Request-Timeout` (seconds, or with a unit:
/// `1.5`, `500ms`, `2s`, `1m`).
fn explicit_deadline(headers: &HeaderMap) -> Result<Option<Duration>, HttpError> {
    let text = |name: &str| -> Result<Option<&str>, HttpError> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|s| Some(s.trim()))
                .map_err(|_| HttpError::bad_request(name, "not ASCII")),
        }
    };
    let timeout = if let Some(v) = text("grpc-timeout")? {
        Some(grpc_timeout(v).ok_or_else(|| {
            HttpError::bad_request(
                "grpc-timeout",
                format!("{v:?} is not a gRPC timeout (1 to 8 digits and a unit: H, M, S, m, u, n)"),
            )
        })?)
    } else if let Some(v) = text("x-request-timeout")? {
        Some(request_timeout(v).ok_or_else(|| {
            HttpError::bad_request(
                "X-Request-Timeout",
                format!("{v:?} is not a timeout (seconds, or a number with ms, s or m)"),
            )
        })?)
    } else {
        None
    };
    Ok(timeout)
}

fn grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn request_timeout(v: &str) -> Option<Duration> {
    let (number, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60.0)
    } else {
        (v, 1.0)
    };
    let seconds = number.trim().parse::<f64>().ok()? * scale;
    (seconds.is_finite() && (0.0..1e9).contains(&seconds)).then(|| Duration::from_secs_f64(seconds))
}

/// The gRPC metadata of an HTTP request: the forwarded headers,
/// `Grpc-Metadata-*` ones without the prefix, and `x-forwarded-for` with
/// the peer added.
pub(super) fn metadata(headers: &HeaderMap, peer: SocketAddr) -> Result<MetadataMap, HttpError> {
    let mut metadata = MetadataMap::new();
    for (name, value) in headers {
        let name = name.as_str();
        let target = if FORWARDED.contains(&name) {
            name
        } else if let Some(rest) = name.strip_prefix(METADATA_PREFIX) {
            if rest.is_empty() || rest.starts_with("grpc-") || rest.starts_with("nordlys-") {
                continue;
            }
            rest
        } else {
            continue;
        };
        if target.ends_with("-bin") {
            let key = BinaryMetadataKey::from_bytes(target.as_bytes())
                .map_err(|_| HttpError::bad_request(name, "not a metadata name"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value.as_bytes())
                .map_err(|_| HttpError::bad_request(name, "a -bin header must be base64"))?;
            metadata.append_bin(key, BinaryMetadataValue::from_bytes(&bytes));
        } else {
            let key = AsciiMetadataKey::from_bytes(target.as_bytes())
                .map_err(|_| HttpError::bad_request(name, "not a metadata name"))?;
            let value = AsciiMetadataValue::try_from(value.as_bytes())
                .map_err(|_| HttpError::bad_request(name, "the value must be printable ASCII"))?;
            metadata.append(key, value);
        }
    }
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(previous) => format!("{previous}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(value) = AsciiMetadataValue::try_from(forwarded_for.as_str()) {
        metadata.insert("x-forwarded-for", value);
    }
    Ok(metadata)
}

/// Answer metadata as `Grpc-Metadata-*` headers, as grpc-gateway sends it.
fn copy_metadata(metadata: &MetadataMap, headers: &mut HeaderMap) {
    for entry in metadata.iter() {
        let KeyAndValueRef::Ascii(key, value) = entry else {
            continue;
        };
        let key = key.as_str();
        if key.starts_with("grpc-") || key == "content-type" || key.starts_with(':') {
            continue;
        }
        let Ok(name) = HeaderName::from_bytes(format!("{METADATA_PREFIX}{key}").as_bytes()) else {
            continue;
        };
        if let Ok(value) = HeaderValue::from_bytes(value.as_encoded_bytes()) {
            headers.append(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(grpc_timeout("500m"), Some(Duration::from_millis(500)));
        assert_eq!(grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout("123456789S"), None);
        assert_eq!(grpc_timeout("S"), None);
        assert_eq!(grpc_timeout("5x"), None);
        assert_eq!(request_timeout("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(request_timeout("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(request_timeout("2s"), Some(Duration::from_secs(2)));
        assert_eq!(request_timeout("1m"), Some(Duration::from_secs(60)));
        assert_eq!(request_timeout("-1"), None);
        assert_eq!(request_timeout("soon"), None);
    }

    #[test]
    fn headers_become_metadata() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer k"));
        headers.insert("grpc-metadata-tenant-hint", HeaderValue::from_static("a"));
        headers.insert(
            "grpc-metadata-nordlys-caller",
            HeaderValue::from_static("operator;;operator"),
        );
        headers.insert("grpc-metadata-trace-bin", HeaderValue::from_static("AAE="));
        headers.insert("cookie", HeaderValue::from_static("secret"));
        let peer: SocketAddr = "127.0.0.1:4000".parse().expect("addr");
        let md = metadata(&headers, peer).expect("metadata");
        assert_eq!(
            md.get("authorization").and_then(|v| v.to_str().ok()),
            Some("Bearer k")
        );
        assert_eq!(
            md.get("tenant-hint").and_then(|v| v.to_str().ok()),
            Some("a")
        );
        assert!(
            md.get("nordlys-caller").is_none(),
            "identity metadata is never taken from callers"
        );
        assert!(md.get("cookie").is_none());
        assert_eq!(
            md.get_bin("trace-bin")
                .and_then(|v| v.to_bytes().ok())
                .as_deref(),
            Some(&[0u8, 1][..])
        );
        assert_eq!(
            md.get("x-forwarded-for").and_then(|v| v.to_str().ok()),
            Some("127.0.0.1")
        );
    }
}
