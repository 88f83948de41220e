//! The public services' unary methods called with encoded messages, for the
//! HTTP/JSON side: no HTTP/2 framing in process (see `nordlys_proto::dispatch`).

use bytes::Bytes;
use nordlys_proto::dispatch::Dispatched;
use nordlys_proto::pb::nordlys::v1::{
    access_rule_service_dispatch, environment_service_dispatch, event_service_dispatch,
    membership_service_dispatch, network_service_dispatch, organization_service_dispatch,
    project_service_dispatch, quota_service_dispatch, region_service_dispatch,
    user_service_dispatch,
};
use tonic::Request;

use super::Api;
use crate::http::Dispatch;

/// A generated service's `unary`, for [`Api`].
type UnaryOf = for<'a> fn(&'a Api, &str, Request<Bytes>) -> Dispatched<'a>;

/// The dispatch of the service named `service` (`nordlys.v1.ProjectService`).
fn unary_of(service: &str) -> Option<UnaryOf> {
    Some(match service {
        "nordlys.v1.ProjectService" => project_service_dispatch::unary::<Api>,
        "nordlys.v1.UserService" => user_service_dispatch::unary::<Api>,
        "nordlys.v1.MembershipService" => membership_service_dispatch::unary::<Api>,
        "nordlys.v1.NetworkService" => network_service_dispatch::unary::<Api>,
        "nordlys.v1.AccessRuleService" => access_rule_service_dispatch::unary::<Api>,
        "nordlys.v1.RegionService" => region_service_dispatch::unary::<Api>,
        "nordlys.v1.OrganizationService" => organization_service_dispatch::unary::<Api>,
        "nordlys.v1.QuotaService" => quota_service_dispatch::unary::<Api>,
        "nordlys.v1.EventService" => event_service_dispatch::unary::<Api>,
        "nordlys.v1.EnvironmentService" => environment_service_dispatch::unary::<Api>,
        _ => return None,
    })
}

impl Dispatch for Api {
    fn unary(&self, path: &str, request: Request<Bytes>) -> Dispatched<'_> {
        let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
            return Dispatched::Elsewhere(request);
        };
        match unary_of(service) {
            Some(unary) => unary(self, method, request),
            None => Dispatched::Elsewhere(request),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service added to the protos without a line here would still be
    /// served over HTTP, through the slower framed path: this catches it.
    #[test]
    fn every_public_service_is_dispatched() {
        let pool = prost_reflect::DescriptorPool::decode(nordlys_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptors");
        let services: Vec<_> = pool
            .services()
            .filter(|s| s.package_name() == "nordlys.v1")
            .collect();
        assert!(services.len() >= 8, "{} services", services.len());
        for service in services {
            assert!(
                unary_of(service.full_name()).is_some(),
                "{} has no dispatch",
                service.full_name()
            );
        }
    }

    #[test]
    fn other_paths_are_not_dispatched() {
        for service in [
            "nordlys.regiond.v1.RegiondService",
            "grpc.health.v1.Health",
            "",
        ] {
            assert!(unary_of(service).is_none(), "{service}");
        }
    }
}
