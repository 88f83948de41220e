//! What every public handler shares.

use std::sync::Arc;
use std::time::Duration;

use nordlys_api::Violations;
use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::auth::Authenticator;
use crate::call::{Call, EveryRegion, Origin};
use crate::discovery::Discovery;
use crate::events::Events;
use crate::mesh::Mesh;
use crate::routes::QuotaRoute;
use crate::Config;

/// The gateway's shared, read-mostly state.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) config: Config,
    pub(crate) auth: Authenticator,
    pub(crate) quota: QuotaRoute,
    pub(crate) regions: Mesh,
    pub(crate) discovery: Discovery,
    pub(crate) events: Arc<Events>,
    /// Environments and their templates (JetStream KV).
    pub(crate) environments: crate::api::EnvironmentStore,
}

impl State {
    /// Authenticates the caller of `request` and starts the call's deadline.
    pub(crate) async fn begin<T>(&self, request: &tonic::Request<T>) -> Result<Call, Status> {
        let metadata = request.metadata();
        let text = |name: &str| {
            metadata
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        // A gRPC caller's TCP peer; the HTTP listener passes its own chain.
        let peer = match request.remote_addr() {
            Some(addr) => addr.ip().to_string(),
            None => text("x-forwarded-for"),
        };
        let origin = Origin {
            peer,
            request_id: text("x-request-id"),
        };
        Ok(self
            .begin_parts(metadata, request.extensions())
            .await?
            .with_origin(origin))
    }

    /// [`State::begin_metadata`], honouring the gateway's own request
    /// extensions ([`EveryRegion`]).
    pub(crate) async fn begin_parts(
        &self,
        metadata: &MetadataMap,
        extensions: &tonic::Extensions,
    ) -> Result<Call, Status> {
        let call = self.begin_metadata(metadata).await?;
        Ok(match extensions.get::<EveryRegion>() {
            Some(_) => call.waiting_for_every_region(),
            None => call,
        })
    }

    /// Authenticates the caller and starts the call's deadline, for calls
    /// that record no events.
    pub(crate) async fn begin_metadata(&self, metadata: &MetadataMap) -> Result<Call, Status> {
        let caller = self.auth.authenticate(metadata).await?;
        let call = Call::new(
            caller,
            metadata,
            self.config.default_timeout(),
            self.config.max_timeout(),
        );
        // Without this, a deadline already spent reaches no region and comes
        // back as "every region unreachable" (UNAVAILABLE), which misleads.
        if call.remaining().is_zero() {
            return Err(Status::deadline_exceeded(
                "the call's deadline passed before any work began",
            ));
        }
        Ok(call)
    }

    /// Records a violation unless `region` is a known region.
    pub(crate) fn check_region(&self, v: &mut Violations, field: &str, region: &str) {
        if region.is_empty() {
            v.add(field, "is required");
        } else if !self.discovery.is_known(region) {
            v.add(
                field,
                format!(
                    "unknown region {region:?}; known regions: {}",
                    self.discovery.known().join(", ")
                ),
            );
        }
    }

    /// How long a list waits for one region.
    pub(crate) fn list_region_timeout(&self) -> Duration {
        Duration::from_millis(self.config.list_region_timeout_ms)
    }
}
