//! One public call as the gateway handles it: who makes it, by when it must
//! be answered, and how its internal calls are dressed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nordlys_transport::metadata::{set_timeout, timeout_of, CALLER, REQUEST_ID, TIER};
use nordlys_transport::{append_nats_header, append_nats_timeout};
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::Status;

use crate::auth::Caller;

/// The caller and the deadline of one public call.
#[derive(Debug, Clone)]
pub struct Call {
    /// Who calls.
    pub caller: Arc<Caller>,
    deadline: Instant,
    /// Where the call came from, for the audit events it causes.
    pub(crate) origin: Origin,
    /// Lists wait for every region until the deadline instead of naming a
    /// slow one unreachable (see [`EveryRegion`]).
    every_region: bool,
}

/// A request extension, set only by the gateway's own internal calls (a
/// caller cannot send one): the lists it makes wait for every region's
/// answer, as an environment's plan needs them to. A missing answer would
/// read as "not there" and plan a create.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EveryRegion;

/// Whether `method` (a method's name, `ApplyEnvironment`) orchestrates
/// many calls of its own, one after another; such a call gets the longest
/// deadline when its caller set none.
pub(crate) fn orchestrates(method: &str) -> bool {
    matches!(method, "ApplyEnvironment" | "DeleteEnvironment")
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
            origin: Origin::default(),
            every_region: false,
        }
    }

    /// The same call, its lists waiting for every region.
    pub(crate) fn waiting_for_every_region(mut self) -> Call {
        self.every_region = true;
        self
    }

    /// Whether lists wait for every region (instead of for at most the
    /// configured time per region).
    pub(crate) fn waits_for_every_region(&self) -> bool {
        self.every_region
    }

    /// The same call, from `origin`.
    pub(crate) fn with_origin(mut self, origin: Origin) -> Call {
        self.origin = origin;
        self
    }

    /// The same caller with a fresh deadline, for work that goes on after
    /// the call was answered.
    pub fn renewed(&self, timeout: Duration) -> Call {
        Call {
            caller: self.caller.clone(),
            deadline: Instant::now() + timeout,
            origin: self.origin.clone(),
            every_region: self.every_region,
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
            tier: None,
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
/// from the same entries, so both carry the same. The trace context is not
/// among them: each attempt carries its own CLIENT span's (see
/// [`crate::mesh`] and [`nordlys_transport::NatsChannel`]).
#[derive(Debug)]
pub(crate) struct Outgoing<'c, T> {
    call: &'c Call,
    /// The request.
    pub(crate) message: T,
    /// The time the daemon gets.
    pub(crate) timeout: Duration,
    request_id: Option<AsciiMetadataValue>,
    tier: Option<AsciiMetadataValue>,
}

impl<T> Outgoing<'_, T> {
    /// With the organization's quota tier, for a create the region sizes
    /// with it (nothing when empty or not ASCII: the region's own default).
    pub(crate) fn with_tier(mut self, tier: &str) -> Self {
        if !tier.is_empty() {
            self.tier = AsciiMetadataValue::try_from(tier).ok();
        }
        self
    }

    /// Everything that travels beside the message but the deadline and
    /// the trace context.
    fn entries(&self) -> impl Iterator<Item = (&'static str, &AsciiMetadataValue)> {
        [
            Some((CALLER, self.call.caller.header())),
            self.request_id.as_ref().map(|id| (REQUEST_ID, id)),
            self.tier.as_ref().map(|tier| (TIER, tier)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use nordlys_transport::{Identity, Role};

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_callers_raw_trace_context_is_not_copied_to_internal_calls() {
        // Each attempt carries its CLIENT span's context instead (or, with
        // no exporter, the caller's through the attached context).
        let mut metadata = MetadataMap::new();
        metadata.insert("traceparent", PARENT.parse().expect("ascii"));
        let call = Call::new(
            Arc::new(Caller::new(Identity::operator()).expect("operator")),
            &metadata,
            Duration::from_secs(5),
            Duration::from_secs(30),
        );
        let request = call.request((), None).expect("request");
        assert!(request.metadata().get("traceparent").is_none());
    }

    #[test]
    fn grpc_metadata_and_nats_headers_carry_the_same_entries() {
        let caller = Identity {
            organization: "organizations/o".into(),
            member: "organizations/o/members/u".into(),
            role: Role::Member,
        };
        let metadata = MetadataMap::new();
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
