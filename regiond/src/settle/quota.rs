//! The calls a region makes to the quota service (`nordlys-quota`, over
//! NATS): committing a create the gateway may not have, releasing a create
//! that never happened, giving back what a delete removed.

use std::time::Duration;

use nordlys_proto::pb::nordlys::quota::v1::{
    CommitRequest, CommitResponse, FreeRequest, FreeResponse, RegionCounts, ReleaseRequest,
    ReleaseResponse, UsageChange,
};
use nordlys_proto::pb::nordlys::v1::ResourceCounts;
use nordlys_transport::{Identity, NatsChannel, Role};
use prost::Message;
use tonic::Status;

/// How long one call to the quota service may take.
const QUOTA_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of the quota service that acts as this region.
#[derive(Debug, Clone)]
pub(crate) struct QuotaClient {
    channel: NatsChannel,
    identity: Identity,
}

impl QuotaClient {
    pub(crate) fn new(client: async_nats::Client, region: &str) -> QuotaClient {
        QuotaClient {
            channel: NatsChannel::new(client, QUOTA_TIMEOUT),
            // The region settles every organization's quota; the quota
            // service takes it for an operator (NATS permissions are what
            // keep others from asserting it).
            identity: Identity {
                organization: String::new(),
                member: format!("regiond-{region}"),
                role: Role::Operator,
            },
        }
    }

    async fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: &str,
        message: Req,
    ) -> Result<Resp, Status> {
        let mut request = tonic::Request::new(message);
        self.identity.write(request.metadata_mut())?;
        request.set_timeout(QUOTA_TIMEOUT);
        self.channel
            .unary(
                format!("nordlys.quota.v1.QuotaController.{method}"),
                request,
            )
            .await
            .map(tonic::Response::into_inner)
    }

    /// Counts what `region` created under `reservation` (idempotent per
    /// reservation and region; counted even when the reservation lapsed).
    pub(crate) async fn commit(
        &self,
        organization: &str,
        reservation: &str,
        region: &str,
        counts: ResourceCounts,
    ) -> Result<(), Status> {
        let _: CommitResponse = self
            .call(
                "Commit",
                CommitRequest {
                    reservation_id: reservation.to_string(),
                    organization: organization.to_string(),
                    regions: vec![region.to_string()],
                    created: vec![RegionCounts {
                        region: region.to_string(),
                        counts: Some(counts),
                    }],
                },
            )
            .await?;
        Ok(())
    }

    /// Drops `region`'s part of a reservation whose create never happened.
    pub(crate) async fn release(
        &self,
        organization: &str,
        reservation: &str,
        region: &str,
    ) -> Result<(), Status> {
        let _: ReleaseResponse = self
            .call(
                "Release",
                ReleaseRequest {
                    reservation_id: reservation.to_string(),
                    organization: organization.to_string(),
                    regions: vec![region.to_string()],
                },
            )
            .await?;
        Ok(())
    }

    /// Gives back what removals took, each operation at most once.
    pub(crate) async fn free(
        &self,
        organization: &str,
        changes: Vec<UsageChange>,
    ) -> Result<(), Status> {
        if changes.is_empty() {
            return Ok(());
        }
        let _: FreeResponse = self
            .call(
                "Free",
                FreeRequest {
                    organization: organization.to_string(),
                    items: Vec::new(),
                    changes,
                },
            )
            .await?;
        Ok(())
    }
}
