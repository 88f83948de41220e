//! One public call as the gateway handles it: who makes it, by when it must
//! be answered, and how its internal calls are dressed.

use std::time::{Duration, Instant};

use nordlys_transport::metadata::{self, set_timeout, timeout_of};
use nordlys_transport::Identity;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::Status;

/// The caller and the deadline of one public call.
#[derive(Debug, Clone)]
pub struct Call {
    /// Who calls.
    pub caller: Identity,
    deadline: Instant,
}

impl Call {
    /// A call by `caller` whose deadline is the caller's `grpc-timeout`
    /// (capped at `max`), or `default` when it set none.
    pub fn new(caller: Identity, metadata: &MetadataMap, default: Duration, max: Duration) -> Call {
        let timeout = timeout_of(metadata).unwrap_or(default).min(max);
        Call {
            caller,
            deadline: Instant::now() + timeout,
        }
    }

    /// The same caller with a fresh deadline, for work that goes on after
    /// the call was answered.
    pub fn renewed(&self, timeout: Duration) -> Call {
        Call {
            caller: self.caller.clone(),
            deadline: Instant::now() + timeout,
        }
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// An internal request carrying the caller's identity and what is left of
    /// the deadline (at most `cap`), so the daemon stops when the caller does.
    ///
    /// A tenth of the time left (at least 20 ms) is kept back, so that when
    /// a region runs out of time the gateway can still answer the caller
    /// with what the other regions said, before the caller gives up.
    pub fn request<T>(
        &self,
        message: T,
        cap: Option<Duration>,
    ) -> Result<tonic::Request<T>, Status> {
        let left = self.remaining();
        let mut remaining = left.saturating_sub((left / 10).max(Duration::from_millis(20)));
        if let Some(cap) = cap {
            remaining = remaining.min(cap);
        }
        if remaining.is_zero() {
            return Err(Status::deadline_exceeded("the call's deadline passed"));
        }
        let mut request = tonic::Request::new(message);
        self.caller.write(request.metadata_mut())?;
        set_timeout(request.metadata_mut(), remaining);
        Ok(request)
    }

    /// Like [`Call::request`], with the create's idempotency key attached.
    pub fn request_with_id<T>(
        &self,
        message: T,
        request_id: &str,
    ) -> Result<tonic::Request<T>, Status> {
        let mut request = self.request(message, None)?;
        if !request_id.is_empty() {
            let value = AsciiMetadataValue::try_from(request_id)
                .map_err(|_| Status::invalid_argument("request_id is not ASCII"))?;
            request.metadata_mut().insert(metadata::REQUEST_ID, value);
        }
        Ok(request)
    }
}
