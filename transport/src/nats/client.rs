//! The client side: one unary gRPC-shaped call per NATS request.

use std::time::Duration;

use async_nats::client::{Request as NatsRequest, RequestErrorKind};
use async_nats::header::{HeaderName, IntoHeaderName};
use async_nats::HeaderMap;
use bytes::Bytes;
use prost::Message;
use tonic::metadata::{KeyAndValueRef, MetadataMap};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::metadata::{
    timeout_of, timeout_text, CALLER, GRPC_TIMEOUT, REQUEST_ID, TRACEPARENT, TRACESTATE,
};
use crate::status;

/// How the statuses this channel makes itself begin: callers tell them
/// from a daemon's answers with [`NatsChannel::is_no_responders`] and
/// [`NatsChannel::is_timed_out`].
const NO_RESPONDERS: &str = "no responders on ";
const NO_ANSWER: &str = "no answer on ";

/// Sends unary calls as NATS requests. Cheap to clone.
///
/// The request's metadata becomes NATS headers (`grpc-timeout` included); the
/// NATS request times out with the call's deadline, so a caller never waits
/// longer than it asked to.
#[derive(Debug, Clone)]
pub struct NatsChannel {
    client: async_nats::Client,
    default_timeout: Duration,
}

impl NatsChannel {
    /// Wraps a connected client; calls without a deadline get `default_timeout`.
    pub fn new(client: async_nats::Client, default_timeout: Duration) -> NatsChannel {
        NatsChannel {
            client,
            default_timeout,
        }
    }

    /// Whether `status` is this channel's "nobody serves the subject"
    /// (NATS had no responders), not an answer of a daemon.
    pub fn is_no_responders(status: &Status) -> bool {
        status.code() == tonic::Code::Unavailable && status.message().starts_with(NO_RESPONDERS)
    }

    /// Whether `status` is this channel giving up waiting for an answer,
    /// not an answer of a daemon.
    pub fn is_timed_out(status: &Status) -> bool {
        status.code() == tonic::Code::DeadlineExceeded && status.message().starts_with(NO_ANSWER)
    }

    /// The underlying client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Sends `request` to `subject` and decodes the answer.
    ///
    /// No responders gives UNAVAILABLE, the deadline passing gives
    /// DEADLINE_EXCEEDED, an error reply gives the status it carries.
    pub async fn unary<Req, Resp>(
        &self,
        subject: String,
        request: Request<Req>,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Message,
        Resp: Message + Default,
    {
        let (metadata, _, message) = request.into_parts();
        let timeout = timeout_of(&metadata).unwrap_or(self.default_timeout);
        if timeout.is_zero() {
            return Err(Status::deadline_exceeded("deadline already passed"));
        }
        let headers = nats_headers(&metadata, timeout);
        let payload = Bytes::from(message.encode_to_vec());
        self.unary_encoded(subject, headers, payload, timeout).await
    }

    /// The call as it goes on the wire: `headers` (which carry the call's
    /// `grpc-timeout`, see [`append_nats_timeout`]) and an encoded `payload`,
    /// waiting at most `wait`. For a caller that sends one request several
    /// times, so it encodes it once. A `wait` shorter than the deadline gives
    /// up early while the daemon still sees the whole deadline: for a caller
    /// that will try elsewhere (a hedged read), without a second timer.
    pub async fn unary_encoded<Resp>(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
        wait: Duration,
    ) -> Result<Response<Resp>, Status>
    where
        Resp: Message + Default,
    {
        let mut headers = headers;
        // One CLIENT span per request; the responder's span is its child.
        let span = nordlys_telemetry::nats::client_span(&subject, &mut headers);
        let nats_request = NatsRequest::new()
            .payload(payload)
            .headers(headers)
            .timeout(Some(wait));
        let result = self
            .request(&subject, nats_request, wait)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(_) => nordlys_telemetry::nats::record_outcome(&span, 0, ""),
            Err(status) => nordlys_telemetry::nats::record_outcome(
                &span,
                status.code() as i32,
                status.message(),
            ),
        }
        result
    }

    async fn request<Resp>(
        &self,
        subject: &str,
        nats_request: NatsRequest,
        wait: Duration,
    ) -> Result<Response<Resp>, Status>
    where
        Resp: Message + Default,
    {
        let reply = self
            .client
            .send_request(subject.to_owned(), nats_request)
            .await
            .map_err(|e| match e.kind() {
                RequestErrorKind::NoResponders => {
                    Status::unavailable(format!("{NO_RESPONDERS}{subject}"))
                }
                RequestErrorKind::TimedOut => {
                    Status::deadline_exceeded(format!("{NO_ANSWER}{subject} within {wait:?}"))
                }
                _ => Status::unavailable(format!("NATS request on {subject} failed: {e}")),
            })?;
        if let Some(status) = status::from_headers(reply.headers.as_ref()) {
            return Err(status);
        }
        let message = Resp::decode(reply.payload)
            .map_err(|e| Status::internal(format!("undecodable answer on {subject}: {e}")))?;
        Ok(Response::new(message))
    }
}

/// The NATS headers of a call with `metadata` and `timeout` left: every
/// ASCII metadata entry but its own `grpc-timeout` (binary entries travel
/// base64, as their `-bin` names say), then `timeout` as `grpc-timeout`.
pub(crate) fn nats_headers(metadata: &MetadataMap, timeout: Duration) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for entry in metadata.iter() {
        match entry {
            KeyAndValueRef::Ascii(key, value) => {
                if key.as_str() == GRPC_TIMEOUT {
                    continue;
                }
                if let Ok(value) = value.to_str() {
                    append_nats_header(&mut headers, key.as_str(), value);
                }
            }
            KeyAndValueRef::Binary(key, value) => {
                if let Ok(bytes) = value.to_bytes() {
                    use base64::Engine;
                    let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
                    headers.append(key.as_str(), encoded);
                }
            }
        }
    }
    append_nats_timeout(&mut headers, timeout);
    headers
}

/// Appends the ASCII metadata entry `name: value` to NATS `headers`.
/// `value` comes from metadata, so it holds no line break. The names every
/// internal call carries are async-nats constants: no allocation and no
/// check of the name per call.
pub fn append_nats_header(headers: &mut HeaderMap, name: &str, value: &str) {
    const CALLER_NAME: HeaderName = HeaderName::from_static(CALLER);
    const REQUEST_ID_NAME: HeaderName = HeaderName::from_static(REQUEST_ID);
    const TRACEPARENT_NAME: HeaderName = HeaderName::from_static(TRACEPARENT);
    const TRACESTATE_NAME: HeaderName = HeaderName::from_static(TRACESTATE);
    let name = match name {
        CALLER => CALLER_NAME,
        REQUEST_ID => REQUEST_ID_NAME,
        TRACEPARENT => TRACEPARENT_NAME,
        TRACESTATE => TRACESTATE_NAME,
        other => other.into_header_name(),
    };
    headers.append(name, value);
}

/// Appends `timeout` to NATS `headers` as `grpc-timeout`.
pub fn append_nats_timeout(headers: &mut HeaderMap, timeout: Duration) {
    const GRPC_TIMEOUT_NAME: HeaderName = HeaderName::from_static(GRPC_TIMEOUT);
    let mut buf = [0u8; 9];
    headers.append(GRPC_TIMEOUT_NAME, timeout_text(timeout, &mut buf));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::set_timeout;
    use tonic::metadata::{AsciiMetadataValue, BinaryMetadataValue};

    #[test]
    fn nats_headers_carry_the_time_left_not_the_old_deadline() {
        let mut metadata = MetadataMap::new();
        set_timeout(&mut metadata, Duration::from_secs(30));
        metadata.insert(
            "nordlys-caller",
            AsciiMetadataValue::from_static("member;o;u"),
        );
        metadata.insert_bin("trace-bin", BinaryMetadataValue::from_bytes(b"\x01\x02"));

        let headers = nats_headers(&metadata, Duration::from_millis(1500));

        let timeouts: Vec<&str> = headers.get_all(GRPC_TIMEOUT).map(|v| v.as_str()).collect();
        assert_eq!(timeouts, ["1500000u"]);
        assert_eq!(
            headers.get("nordlys-caller").map(|v| v.as_str()),
            Some("member;o;u")
        );
        assert_eq!(headers.get("trace-bin").map(|v| v.as_str()), Some("AQI"));
    }
}
