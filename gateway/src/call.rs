//! One public call as the gateway handles it: who makes it, by when it must
//! be answered, and how its internal calls are dressed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nordlys_transport::metadata::{
    set_timeout, timeout_of, CALLER, REQUEST_ID, TRACEPARENT, TRACESTATE,
};
use nordlys_transport::{append_nats_header, append_nats_timeout};
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::Status;

use crate::auth::Caller;

/// W3C Trace Context allows 32 list members of up to 256 characters; 512
/// is the length it asks every participant to pass on at least.
const MAX_TRACESTATE: usize = 512;

/// The caller and the deadline of one public call.
#[derive(Debug, Clone)]
pub struct Call {
    /// Who calls.
    pub caller: Arc<Caller>,
    deadline: Instant,
    /// The caller's trace context, passed on to every internal call so the
    /// regions' work joins the caller's trace (W3C `traceparent` and
    /// `tracestate`; dropped when malformed, as the spec asks).
    trace: Option<(AsciiMetadataValue, Option<AsciiMetadataValue>)>,
    /// Where the call came from, for the audit events it causes.
    pub(crate) origin: Origin,
}

/// Where a public call came from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origin {
    /// The peer's address: the TCP peer of a gRPC call, the
    /// `X-Forwarded-For` chain (ending with the TCP peer) of an HTTP one.
    pub(crate) peer: String,
    /// The caller's `x-request-id`, when it sent one.
    pub(crate) request_id: String,
}

impl Call {
    /// A call by `caller` whose deadline is the caller's `grpc-timeout`
    /// (capped at `max`), or `default` when it set none.
    pub fn new(
        caller: Arc<Caller>,
        metadata: &MetadataMap,
        default: Duration,
        max: Duration,
    ) -> Call {
        let timeout = timeout_of(metadata).unwrap_or(default).min(max);
        Call {
            caller,
            deadline: Instant::now() + timeout,
            trace: trace_context(metadata),
            origin: Origin::default(),
        }
    }

    /// The same call, from `origin`.
    pub(crate) fn with_origin(mut self, origin: Origin) -> Call {
        self.origin = origin;
        self
    }

    /// The W3C trace id the call belongs to, when the caller sent one.
    pub(crate) fn trace_id(&self) -> Option<&str> {
        let (parent, _) = self.trace.as_ref()?;
        parent.to_str().ok()?.split('-').nth(1)
    }

    /// The same caller with a fresh deadline, for work that goes on after
    /// the call was answered.
    pub fn renewed(&self, timeout: Duration) -> Call {
        Call {
            caller: self.caller.clone(),
            deadline: Instant::now() + timeout,
            trace: self.trace.clone(),
            origin: self.origin.clone(),
        }
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// An internal call of `message` carrying the caller's identity and
    /// what is left of the deadline (at most `cap`), so the daemon stops
    /// when the caller does.
    ///
    /// A tenth of the time left (at least 20 ms) is kept back, so that when
    /// a region runs out of time the gateway can still answer the caller
    /// with what the other regions said, before the caller gives up.
    pub(crate) fn outgoing<T>(
        &self,
        message: T,
        cap: Option<Duration>,
    ) -> Result<Outgoing<'_, T>, Status> {
        let left = self.remaining();
        let mut timeout = left.saturating_sub((left / 10).max(Duration::from_millis(20)));
        if let Some(cap) = cap {
            timeout = timeout.min(cap);
        }
        if timeout.is_zero() {
            return Err(Status::deadline_exceeded("the call's deadline passed"));
        }
        Ok(Outgoing {
            call: self,
            message,
            timeout,
            request_id: None,
        })
    }

    /// Like [`Call::outgoing`], with the create's idempotency key attached.
    pub(crate) fn outgoing_with_id<T>(
        &self,
        message: T,
        request_id: &str,
    ) -> Result<Outgoing<'_, T>, Status> {
        let mut outgoing = self.outgoing(message, None)?;
        if !request_id.is_empty() {
            let value = AsciiMetadataValue::try_from(request_id)
                .map_err(|_| Status::invalid_argument("request_id is not ASCII"))?;
            outgoing.request_id = Some(value);
        }
        Ok(outgoing)
    }

    /// [`Call::outgoing`] as a tonic request.
    pub fn request<T>(
        &self,
        message: T,
        cap: Option<Duration>,
    ) -> Result<tonic::Request<T>, Status> {
        Ok(self.outgoing(message, cap)?.into_request())
    }
}

/// An internal call about to leave: the message, and what travels beside
/// it. Each transport dresses it its own way (gRPC metadata, NATS headers)
/// from the same entries, so both carry the same.
#[derive(Debug)]
pub(crate) struct Outgoing<'c, T> {
    call: &'c Call,
    /// The request.
    pub(crate) message: T,
    /// The time the daemon gets.
    pub(crate) timeout: Duration,
    request_id: Option<AsciiMetadataValue>,
}

impl<T> Outgoing<'_, T> {
    /// Everything that travels beside the message but the deadline.
    fn entries(&self) -> impl Iterator<Item = (&'static str, &AsciiMetadataValue)> {
        let trace = self.call.trace.as_ref();
        [
            Some((CALLER, self.call.caller.header())),
            trace.map(|(parent, _)| (TRACEPARENT, parent)),
            trace
                .and_then(|(_, state)| state.as_ref())
                .map(|state| (TRACESTATE, state)),
            self.request_id.as_ref().map(|id| (REQUEST_ID, id)),
        ]
        .into_iter()
        .flatten()
    }

    /// The gRPC metadata of an attempt with `timeout` left.
    pub(crate) fn metadata(&self, timeout: Duration) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        for (name, value) in self.entries() {
            metadata.insert(name, value.clone());
        }
        set_timeout(&mut metadata, timeout);
        metadata
    }

    /// The NATS headers of an attempt with `timeout` left.
    pub(crate) fn nats_headers(&self, timeout: Duration) -> async_nats::HeaderMap {
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in self.entries() {
            // Every entry came from valid metadata or was made ASCII here.
            if let Ok(value) = value.to_str() {
                append_nats_header(&mut headers, name, value);
            }
        }
        append_nats_timeout(&mut headers, timeout);
        headers
    }

    /// The call as a tonic request with the whole timeout.
    pub(crate) fn into_request(self) -> tonic::Request<T> {
        let metadata = self.metadata(self.timeout);
        tonic::Request::from_parts(metadata, Default::default(), self.message)
    }
}

/// The caller's `traceparent` (and its `tracestate`), if the traceparent is
/// well formed: `00-{32 hex trace id}-{16 hex parent id}-{2 hex flags}`,
/// lowercase, ids not all zero. A later version may append fields after
/// the flags; version `ff` is invalid.
fn trace_context(
    metadata: &MetadataMap,
) -> Option<(AsciiMetadataValue, Option<AsciiMetadataValue>)> {
    let parent = metadata.get(TRACEPARENT)?;
    let text = parent.to_str().ok()?;
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let mut fields = text.split('-');
    let (version, trace_id, parent_id, flags) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let well_formed = hex(version, 2)
        && version != "ff"
        && hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        && hex(flags, 2)
        && (version != "00" || fields.next().is_none());
    if !well_formed {
        return None;
    }
    let state = metadata
        .get(TRACESTATE)
        .filter(|v| v.as_encoded_bytes().len() <= MAX_TRACESTATE)
        .cloned();
    Some((parent.clone(), state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nordlys_transport::{Identity, Role};

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn call_with(headers: &[(&'static str, &str)]) -> Call {
        let mut metadata = MetadataMap::new();
        for (key, value) in headers {
            metadata.insert(*key, value.parse().expect("ascii"));
        }
        Call::new(
            Arc::new(Caller::new(Identity::operator()).expect("operator")),
            &metadata,
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
    }

    fn sent(call: &Call) -> (Option<String>, Option<String>) {
        let request = call.request((), None).expect("request");
        let get = |k| {
            request
                .metadata()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        (get(TRACEPARENT), get(TRACESTATE))
    }

    #[test]
    fn a_valid_trace_context_goes_on_to_internal_calls() {
        let call = call_with(&[(TRACEPARENT, PARENT), (TRACESTATE, "vendor=abc")]);
        assert_eq!(
            sent(&call),
            (Some(PARENT.to_owned()), Some("vendor=abc".to_owned()))
        );
        // Work that outlives the call stays in the same trace.
        assert_eq!(
            sent(&call.renewed(Duration::from_secs(5))).0.as_deref(),
            Some(PARENT)
        );
    }

    #[test]
    fn no_trace_context_sends_none() {
        assert_eq!(sent(&call_with(&[])), (None, None));
        // A tracestate alone means nothing.
        assert_eq!(
            sent(&call_with(&[(TRACESTATE, "vendor=abc")])),
            (None, None)
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
        ] {
            let call = call_with(&[(TRACEPARENT, bad), (TRACESTATE, "vendor=abc")]);
            assert_eq!(sent(&call), (None, None), "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_may_carry_more_fields() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert_eq!(
            sent(&call_with(&[(TRACEPARENT, later)])).0.as_deref(),
            Some(later)
        );
    }

    #[test]
    fn an_oversized_tracestate_is_dropped_alone() {
        let long = format!("v={}", "a".repeat(MAX_TRACESTATE));
        let call = call_with(&[(TRACEPARENT, PARENT), (TRACESTATE, &long)]);
        assert_eq!(sent(&call), (Some(PARENT.to_owned()), None));
    }

    #[test]
    fn grpc_metadata_and_nats_headers_carry_the_same_entries() {
        let caller = Identity {
            organization: "organizations/o".into(),
            member: "organizations/o/members/u".into(),
            role: Role::Member,
        };
        let mut metadata = MetadataMap::new();
        metadata.insert(TRACEPARENT, PARENT.parse().expect("ascii"));
        metadata.insert(TRACESTATE, "vendor=abc".parse().expect("ascii"));
        let call = Call::new(
            Arc::new(Caller::new(caller).expect("caller")),
            &metadata,
            Duration::from_secs(5),
            Duration::from_secs(30),
        );
        let outgoing = call.outgoing_with_id((), "r-1").expect("outgoing");
        assert!(outgoing.timeout <= Duration::from_millis(4500));

        let left = Duration::from_millis(1500);
        let grpc = outgoing.metadata(left);
        let nats = outgoing.nats_headers(left);
        let expected = [
            (CALLER, "member;organizations/o;organizations/o/members/u"),
            (TRACEPARENT, PARENT),
            (TRACESTATE, "vendor=abc"),
            (REQUEST_ID, "r-1"),
            ("grpc-timeout", "1500000u"),
        ];
        for (name, value) in expected {
            assert_eq!(grpc.get(name).and_then(|v| v.to_str().ok()), Some(value));
            assert_eq!(nats.get(name).map(|v| v.as_str()), Some(value));
        }
        assert_eq!(grpc.len(), expected.len());
        assert_eq!(nats.iter().count(), expected.len());
    }
}
