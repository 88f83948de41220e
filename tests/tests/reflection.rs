//! Server reflection (v1 and v1alpha, as grpcurl versions differ) and
//! grpc.health.v1 on the gateway, without an API key.

use nordlys_tests::Stack;
use prost::Message;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use tonic_reflection::pb::{v1, v1alpha};

const EXPECTED: &[&str] = &[
    "grpc.health.v1.Health",
    "nordlys.v1.ProjectService",
    "nordlys.v1.UserService",
    "nordlys.v1.MembershipService",
    "nordlys.v1.NetworkService",
    "nordlys.v1.AccessRuleService",
    "nordlys.v1.RegionService",
    "nordlys.v1.OrganizationService",
    "nordlys.v1.QuotaService",
];

async fn list_v1(stack: &Stack) -> Vec<String> {
    use v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(stack.channel().await)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1 reflection call")
        .into_inner();
    let response = stream
        .message()
        .await
        .expect("v1 answer")
        .expect("one message");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected v1 answer {other:?}"),
    }
}

async fn list_v1alpha(stack: &Stack) -> Vec<String> {
    use v1alpha::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(stack.channel().await)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1alpha reflection call")
        .into_inner();
    let response = stream
        .message()
        .await
        .expect("v1alpha answer")
        .expect("one message");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected v1alpha answer {other:?}"),
    }
}

/// `describe nordlys.v1.ProjectService`: the file holding the symbol, with
/// its methods, as grpcurl fetches it.
async fn describe_v1(stack: &Stack, symbol: &str) -> Vec<prost_types::FileDescriptorProto> {
    use v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(symbol.to_owned())),
    };
    let mut stream = ServerReflectionClient::new(stack.channel().await)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1 reflection call")
        .into_inner();
    let response = stream
        .message()
        .await
        .expect("v1 answer")
        .expect("one message");
    match response.message_response {
        Some(MessageResponse::FileDescriptorResponse(files)) => files
            .file_descriptor_proto
            .iter()
            .map(|bytes| {
                prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("a descriptor")
            })
            .collect(),
        other => panic!("unexpected answer to FileContainingSymbol {other:?}"),
    }
}

#[tokio::test]
async fn reflection_lists_the_services_in_both_versions() {
    let stack = Stack::start().await;

    let v1 = list_v1(&stack).await;
    let v1alpha = list_v1alpha(&stack).await;
    for service in EXPECTED {
        assert!(
            v1.iter().any(|s| s == service),
            "v1 lacks {service}: {v1:?}"
        );
        assert!(
            v1alpha.iter().any(|s| s == service),
            "v1alpha lacks {service}: {v1alpha:?}"
        );
    }

    let files = describe_v1(&stack, "nordlys.v1.ProjectService").await;
    let projects = files
        .iter()
        .find(|f| f.name() == "nordlys/v1/projects.proto")
        .expect("projects.proto in the answer");
    let service = projects
        .service
        .iter()
        .find(|s| s.name() == "ProjectService")
        .expect("ProjectService in projects.proto");
    let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    assert_eq!(
        methods,
        [
            "CreateProject",
            "GetProject",
            "ListProjects",
            "UpdateProject",
            "DeleteProject"
        ]
    );
}

#[tokio::test]
async fn health_reports_serving() {
    let stack = Stack::start().await;
    let mut health = HealthClient::new(stack.channel().await);
    for service in ["", "nordlys.v1.ProjectService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap_or_else(|s| panic!("health check {service:?}: {s:?}"))
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
}
