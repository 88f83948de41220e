//! `nordlys.v1.RegionService`.

use nordlys_proto::pb::nordlys::v1::region_service_server::RegionService;
use nordlys_proto::pb::nordlys::v1::{
    ListRegionsRequest, ListRegionsResponse, Region, RegionInstance,
};
use tonic::{Request, Response, Status};

use super::Api;

#[tonic::async_trait]
impl RegionService for Api {
    async fn list_regions(
        &self,
        request: Request<ListRegionsRequest>,
    ) -> Result<Response<ListRegionsResponse>, Status> {
        self.state.begin(&request).await?;
        let regions = self
            .state
            .discovery
            .snapshot()
            .into_iter()
            .map(|(region, instances)| {
                // Instances of one region drive one cloud; the first to
                // answer speaks for it.
                let (kind, resources) = instances
                    .first()
                    .map(|i| (i.backend.clone(), i.resources.clone()))
                    .unwrap_or_default();
                Region {
                    name: nordlys_api::names::region(&region),
                    up: !instances.is_empty(),
                    instances: instances
                        .into_iter()
                        .map(|i| RegionInstance {
                            id: i.id,
                            version: i.version,
                            backend: i.backend,
                            resources: i.resources,
                        })
                        .collect(),
                    kind,
                    resources,
                }
            })
            .collect();
        Ok(Response::new(ListRegionsResponse { regions }))
    }
}
