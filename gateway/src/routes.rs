//! The route to the quota service: NATS request-reply to its queue group
//! (the regional daemons' route is [`crate::mesh`]).

use std::time::Duration;

use nordlys_proto::pb::nordlys::quota::v1::{AuthenticateRequest, Principal};
use nordlys_transport::NatsChannel;
use prost::Message;
use tonic::Status;

use crate::call::Call;

/// How long authentication may take when the call has no deadline yet.
const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// The quota service, `nordlys.quota.v1.QuotaController.{Method}`.
#[derive(Debug, Clone)]
pub(crate) struct QuotaRoute {
    nats: NatsChannel,
}

impl QuotaRoute {
    pub(crate) fn new(nats: NatsChannel) -> QuotaRoute {
        QuotaRoute { nats }
    }

    /// Resolves an API key (before the caller is known).
    pub(crate) async fn authenticate(&self, req: AuthenticateRequest) -> Result<Principal, Status> {
        let mut request = tonic::Request::new(req);
        nordlys_transport::metadata::set_timeout(request.metadata_mut(), AUTH_TIMEOUT);
        self.nats
            .unary(subject_quota("Authenticate"), request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| unavailable_as(s, "quota service"))
    }

    /// Calls `method` for `call`'s caller.
    pub(crate) async fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: &str,
        call: &Call,
        req: Req,
    ) -> Result<Resp, Status> {
        self.nats
            .unary(subject_quota(method), call.request(req, None)?)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| unavailable_as(s, "quota service"))
    }
}

fn subject_quota(method: &str) -> String {
    format!("nordlys.quota.v1.QuotaController.{method}")
}

/// Names the unreachable party in transport-level failures, keeping every
/// other status (and its details) as the far side sent it.
fn unavailable_as(status: Status, who: &str) -> Status {
    if NatsChannel::is_no_responders(&status) {
        Status::unavailable(format!("{who} is unavailable: no instance answers"))
    } else {
        status
    }
}
