//! Projects through the gateway: create in two regions (a status per region),
//! get (scatter-gather), list (paged, filtered by region), delete.

use nordlys_proto::pb::nordlys::v1::{
    project_service_client::ProjectServiceClient, region_status::State, DeleteProjectRequest,
    GetProjectRequest, ListProjectsRequest, Project, RegionStatus,
};
use nordlys_tests::{bearer, Stack};
use tonic::Code;

fn ready_in(statuses: &[RegionStatus]) -> Vec<&str> {
    let mut regions: Vec<&str> = statuses
        .iter()
        .filter(|s| s.state == State::Ready as i32 && s.code == 0)
        .map(|s| s.region.as_str())
        .collect();
    regions.sort();
    regions
}

fn names(projects: &[Project]) -> Vec<&str> {
    projects.iter().map(|p| p.name.as_str()).collect()
}

#[tokio::test]
async fn create_get_list_delete_across_two_regions() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("acme").await;
    let key = &tenant.key;
    let mut projects = ProjectServiceClient::new(stack.channel().await);

    let created = stack
        .create_project(key, "web", &["sto1", "osl1"])
        .await
        .expect("CreateProject");
    assert_eq!(created.name, "projects/web");
    assert_eq!(created.organization, tenant.organization);
    assert_eq!(created.display_name, "Project web");
    assert_eq!(ready_in(&created.region_status), ["osl1", "sto1"]);
    assert!(created.create_time.is_some());

    let got = projects
        .get_project(bearer(
            GetProjectRequest {
                name: "projects/web".into(),
            },
            key,
        ))
        .await
        .expect("GetProject")
        .into_inner();
    assert_eq!(got.name, "projects/web");
    assert_eq!(got.organization, tenant.organization);
    let mut regions = got.regions.clone();
    regions.sort();
    assert_eq!(regions, ["osl1", "sto1"]);
    assert_eq!(ready_in(&got.region_status), ["osl1", "sto1"]);
    assert_eq!(
        got.region_status, created.region_status,
        "the create and the get show the regions' statuses in the same order"
    );
    assert_eq!(got.create_time, created.create_time);
    // Each region keeps its own copy; the gateway dated the create once, so
    // every copy shows the create time the CreateProject answer showed.
    for region in ["sto1", "osl1"] {
        let copy = stack.projects_in(key, region).await.projects;
        assert_eq!(names(&copy), ["projects/web"], "in {region}");
        assert_eq!(
            copy[0].create_time, created.create_time,
            "create time in {region}"
        );
    }

    let listed = projects
        .list_projects(bearer(ListProjectsRequest::default(), key))
        .await
        .expect("ListProjects")
        .into_inner();
    assert_eq!(names(&listed.projects), ["projects/web"]);
    assert!(listed.unreachable.is_empty(), "{:?}", listed.unreachable);
    assert!(listed.next_page_token.is_empty());

    let deleted = projects
        .delete_project(bearer(
            DeleteProjectRequest {
                name: "projects/web".into(),
            },
            key,
        ))
        .await
        .expect("DeleteProject")
        .into_inner();
    let mut outcome: Vec<(&str, i32)> = deleted
        .region_status
        .iter()
        .map(|s| (s.region.as_str(), s.code))
        .collect();
    outcome.sort();
    assert_eq!(outcome, [("osl1", 0), ("sto1", 0)]);

    let gone = projects
        .get_project(bearer(
            GetProjectRequest {
                name: "projects/web".into(),
            },
            key,
        ))
        .await
        .expect_err("the project is deleted");
    assert_eq!(gone.code(), Code::NotFound);

    let listed = projects
        .list_projects(bearer(ListProjectsRequest::default(), key))
        .await
        .expect("ListProjects")
        .into_inner();
    assert!(listed.projects.is_empty(), "{:?}", names(&listed.projects));

    let again = projects
        .delete_project(bearer(
            DeleteProjectRequest {
                name: "projects/web".into(),
            },
            key,
        ))
        .await
        .expect_err("deleting twice");
    assert_eq!(again.code(), Code::NotFound);
}

#[tokio::test]
async fn list_is_paged_ordered_and_filtered_by_region() {
    let stack = Stack::start().await;
    let key = &stack.tenant("acme").await.key;
    let mut projects = ProjectServiceClient::new(stack.channel().await);

    // Created out of order; listed by name.
    for (id, regions) in [
        ("delta", &["osl1"][..]),
        ("alpha", &["sto1", "osl1"][..]),
        ("charlie", &["sto1"][..]),
        ("bravo", &["sto1", "osl1"][..]),
        ("echo", &["sto1"][..]),
    ] {
        stack
            .create_project(key, id, regions)
            .await
            .unwrap_or_else(|s| panic!("CreateProject {id}: {s:?}"));
    }

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = projects
            .list_projects(bearer(
                ListProjectsRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    ..Default::default()
                },
                key,
            ))
            .await
            .expect("ListProjects page")
            .into_inner();
        assert!(page.projects.len() <= 2);
        assert!(page.unreachable.is_empty());
        seen.extend(page.projects.into_iter().map(|p| p.name));
        pages += 1;
        assert!(pages <= 5, "paging does not end");
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        seen,
        [
            "projects/alpha",
            "projects/bravo",
            "projects/charlie",
            "projects/delta",
            "projects/echo"
        ]
    );
    assert_eq!(pages, 3);

    let in_osl1 = stack.projects_in(key, "osl1").await.projects;
    assert_eq!(
        names(&in_osl1),
        ["projects/alpha", "projects/bravo", "projects/delta"]
    );
}
