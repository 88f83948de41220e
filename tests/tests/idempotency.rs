//! A create repeated with the same request_id returns the first result and
//! creates (and counts) once.

use nordlys_proto::pb::nordlys::v1::{
    project_service_client::ProjectServiceClient, CreateProjectRequest, ListProjectsRequest,
    Project,
};
use nordlys_tests::{bearer, Stack};

fn request(project_id: &str, request_id: &str) -> CreateProjectRequest {
    CreateProjectRequest {
        project: Some(Project {
            display_name: "Once".into(),
            regions: vec!["sto1".into(), "osl1".into()],
            ..Default::default()
        }),
        project_id: project_id.into(),
        request_id: request_id.into(),
    }
}

#[tokio::test]
async fn the_same_request_id_creates_once() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("acme").await;
    let key = &tenant.key;
    let mut projects = ProjectServiceClient::new(stack.channel().await);

    // With an explicit id, and with an id derived from the request id.
    for (project_id, request_id) in [
        ("once", "6f1c2a80-3b9e-4d55-9a57-0c1f8e2b7d11"),
        ("", "b7a1d1c4-5d6e-4f70-8a91-2b3c4d5e6f70"),
    ] {
        let first = projects
            .create_project(bearer(request(project_id, request_id), key))
            .await
            .expect("first create")
            .into_inner();
        let second = projects
            .create_project(bearer(request(project_id, request_id), key))
            .await
            .expect("repeated create answers like the first")
            .into_inner();
        assert_eq!(first.name, second.name);
        assert_eq!(first.create_time, second.create_time);
        assert_eq!(first.organization, second.organization);
        if !project_id.is_empty() {
            assert_eq!(first.name, format!("projects/{project_id}"));
        }
    }

    let listed = projects
        .list_projects(bearer(ListProjectsRequest::default(), key))
        .await
        .expect("ListProjects")
        .into_inner();
    assert_eq!(listed.projects.len(), 2, "{:?}", listed.projects);
    for region in ["sto1", "osl1"] {
        let quota = stack.quota(key, &tenant.organization, region).await;
        assert_eq!(quota.usage.unwrap_or_default().projects, 2, "{region}");
        assert_eq!(quota.reserved.unwrap_or_default().projects, 0, "{region}");
    }
}
