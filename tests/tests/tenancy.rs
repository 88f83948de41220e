//! Organizations are walled off: organization B cannot read, list or delete
//! organization A's project, and A keeps it.

use nordlys_proto::pb::nordlys::v1::{
    network_service_client::NetworkServiceClient, project_service_client::ProjectServiceClient,
    CreateNetworkRequest, DeleteProjectRequest, GetProjectRequest, ListNetworksRequest,
    ListProjectsRequest, Network,
};
use nordlys_tests::{bearer, Stack};
use tonic::Code;

#[tokio::test]
async fn another_organization_cannot_see_or_touch_a_project() {
    let stack = Stack::start().await;
    let a = stack.tenant("org-a").await;
    let b = stack.tenant("org-b").await;
    let mut projects = ProjectServiceClient::new(stack.channel().await);

    stack
        .create_project(&a.key, "secret", &["sto1", "osl1"])
        .await
        .expect("A creates its project");
    stack
        .create_project(&b.key, "own", &["sto1"])
        .await
        .expect("B creates its project");

    let name = "projects/secret".to_owned();
    let get = projects
        .get_project(bearer(GetProjectRequest { name: name.clone() }, &b.key))
        .await
        .expect_err("B must not get A's project");
    assert_eq!(get.code(), Code::NotFound);

    let listed = nordlys_tests::whole_list!(projects
        .list_projects(bearer(ListProjectsRequest::default(), &b.key))
        .await
        .expect("B lists its projects")
        .into_inner());
    let listed: Vec<&str> = listed.projects.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(listed, ["projects/own"]);

    let other_org = projects
        .list_projects(bearer(
            ListProjectsRequest {
                organization: a.organization.clone(),
                ..Default::default()
            },
            &b.key,
        ))
        .await
        .expect_err("B must not list A's organization");
    assert_eq!(other_org.code(), Code::PermissionDenied);

    let delete = projects
        .delete_project(bearer(
            DeleteProjectRequest {
                name: name.clone(),
                ..Default::default()
            },
            &b.key,
        ))
        .await
        .expect_err("B must not delete A's project");
    assert_eq!(delete.code(), Code::NotFound);

    let network = NetworkServiceClient::new(stack.channel().await)
        .create_network(bearer(
            CreateNetworkRequest {
                parent: name.clone(),
                network: Some(Network {
                    region: "sto1".into(),
                    cidr: "10.9.0.0/24".into(),
                    ..Default::default()
                }),
                network_id: "intruder".into(),
                request_id: String::new(),
            },
            &b.key,
        ))
        .await
        .expect_err("B must not add a network to A's project");
    assert_eq!(network.code(), Code::NotFound);

    // A still has its project, untouched.
    let got = projects
        .get_project(bearer(GetProjectRequest { name: name.clone() }, &a.key))
        .await
        .expect("A gets its project")
        .into_inner();
    assert_eq!(got.organization, a.organization);
    let listed = nordlys_tests::whole_list!(projects
        .list_projects(bearer(ListProjectsRequest::default(), &a.key))
        .await
        .expect("A lists")
        .into_inner());
    let listed: Vec<&str> = listed.projects.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(listed, ["projects/secret"]);
    let networks = nordlys_tests::whole_list!(NetworkServiceClient::new(stack.channel().await)
        .list_networks(bearer(
            ListNetworksRequest {
                parent: name.clone(),
                ..Default::default()
            },
            &a.key,
        ))
        .await
        .expect("A lists its networks")
        .into_inner());
    assert!(networks.networks.is_empty(), "{:?}", networks.networks);
}
