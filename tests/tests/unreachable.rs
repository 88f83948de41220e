//! A region whose daemons are all down is named in `unreachable`; the call
//! still answers with what the other regions have.

use std::time::{Duration, Instant};

use nordlys_proto::pb::nordlys::v1::{
    project_service_client::ProjectServiceClient, region_status::State, GetProjectRequest,
    ListProjectsRequest,
};
use nordlys_tests::{bearer, instances, Stack};

#[tokio::test]
async fn a_stopped_region_is_listed_as_unreachable() {
    let mut stack = Stack::start().await;
    let key = stack.tenant("acme").await.key;
    stack
        .create_project(&key, "web", &["sto1", "osl1"])
        .await
        .expect("CreateProject");
    stack
        .create_project(&key, "local", &["sto1"])
        .await
        .expect("CreateProject");

    stack.osl1.terminate();

    let mut projects = ProjectServiceClient::new(stack.channel().await);
    let started = Instant::now();
    let listed = projects
        .list_projects(bearer(ListProjectsRequest::default(), &key))
        .await
        .expect("ListProjects answers without osl1")
        .into_inner();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(listed.unreachable, ["osl1"]);
    let names: Vec<&str> = listed.projects.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["projects/local", "projects/web"]);

    let web = projects
        .get_project(bearer(
            GetProjectRequest {
                name: "projects/web".into(),
            },
            &key,
        ))
        .await
        .expect("GetProject answers from sto1")
        .into_inner();
    let state = |region: &str| {
        web.region_status
            .iter()
            .find(|s| s.region == region)
            .map(|s| s.state)
    };
    assert_eq!(state("sto1"), Some(State::Ready as i32));
    assert_eq!(state("osl1"), Some(State::Unreachable as i32));

    // Discovery notices too: osl1 is down, sto1 keeps both instances.
    stack
        .wait_for_regions(|r| instances(r, "osl1") == 0 && instances(r, "sto1") == 2)
        .await;
}
