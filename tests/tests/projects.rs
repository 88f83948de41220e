//! Projects through the gateway: create in two regions (a status per region),
//! get (scatter-gather), list (paged, filtered by region), update (field
//! masks, etags, over gRPC and HTTP), delete.

mod http_common;

use http_common::Http;
use nordlys_proto::pb::nordlys::v1::{
    project_service_client::ProjectServiceClient, region_status::State, DeleteProjectRequest,
    GetProjectRequest, ListProjectsRequest, Project, RegionStatus, UpdateProjectRequest,
};
use nordlys_tests::{bearer, Stack};
use serde_json::json;
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
                ..Default::default()
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
                ..Default::default()
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

fn update(project: Project, paths: &[&str], request_id: &str) -> UpdateProjectRequest {
    UpdateProjectRequest {
        project: Some(project),
        update_mask: (!paths.is_empty()).then(|| prost_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
        request_id: request_id.to_string(),
    }
}

async fn get(stack: &Stack, key: &str, name: &str) -> Project {
    ProjectServiceClient::new(stack.channel().await)
        .get_project(bearer(GetProjectRequest { name: name.into() }, key))
        .await
        .expect("GetProject")
        .into_inner()
}

#[tokio::test]
async fn updates_change_the_masked_fields_everywhere_and_honour_etags() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("acme").await;
    let key = &tenant.key;
    let mut projects = ProjectServiceClient::new(stack.channel().await);
    stack
        .create_project(key, "web", &["sto1", "osl1"])
        .await
        .expect("CreateProject");
    let before = get(&stack, key, "projects/web").await;
    assert!(!before.etag.is_empty(), "every project has an etag");

    // Only what the mask names changes, in both regions, and the etag moves.
    let changed = projects
        .update_project(bearer(
            update(
                Project {
                    name: "projects/web".into(),
                    display_name: "Web shop".into(),
                    description: "not in the mask".into(),
                    etag: before.etag.clone(),
                    ..Default::default()
                },
                &["display_name"],
                "upd-1",
            ),
            key,
        ))
        .await
        .expect("UpdateProject")
        .into_inner();
    assert_eq!(changed.display_name, "Web shop");
    assert_eq!(changed.description, before.description);
    assert_eq!(ready_in(&changed.region_status), ["osl1", "sto1"]);
    assert_ne!(changed.etag, before.etag);
    let after = get(&stack, key, "projects/web").await;
    assert_eq!(after.display_name, "Web shop");
    assert_eq!(after.etag, changed.etag);
    assert_eq!(after.create_time, before.create_time);

    // The same request again (a retry) answers and changes nothing more,
    // though its etag is the old one.
    let retried = projects
        .update_project(bearer(
            update(
                Project {
                    name: "projects/web".into(),
                    display_name: "Web shop".into(),
                    etag: before.etag.clone(),
                    ..Default::default()
                },
                &["display_name"],
                "upd-1",
            ),
            key,
        ))
        .await
        .expect("a retried update answers")
        .into_inner();
    assert_eq!(retried.etag, changed.etag);

    // A stale etag: ABORTED, and nothing changes.
    let stale = projects
        .update_project(bearer(
            update(
                Project {
                    name: "projects/web".into(),
                    description: "too late".into(),
                    etag: before.etag.clone(),
                    ..Default::default()
                },
                &["description"],
                "upd-2",
            ),
            key,
        ))
        .await
        .expect_err("stale etag");
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    assert_eq!(
        get(&stack, key, "projects/web").await.description,
        before.description
    );

    // Bad masks name the field.
    for (paths, why) in [
        (&["name"][..], "cannot be updated"),
        (&["regions"], "cannot be updated"),
        (&["*", "description"], "cannot be combined"),
    ] {
        let bad = projects
            .update_project(bearer(
                update(
                    Project {
                        name: "projects/web".into(),
                        ..Default::default()
                    },
                    paths,
                    "",
                ),
                key,
            ))
            .await
            .expect_err("bad mask");
        assert_eq!(bad.code(), Code::InvalidArgument, "{paths:?}");
        assert!(bad.message().contains(why), "{paths:?}: {}", bad.message());
    }
    // `*` with an empty display name: it is required.
    let empty = projects
        .update_project(bearer(
            update(
                Project {
                    name: "projects/web".into(),
                    ..Default::default()
                },
                &["*"],
                "",
            ),
            key,
        ))
        .await
        .expect_err("display name required");
    assert_eq!(empty.code(), Code::InvalidArgument);

    // Another organization sees nothing to update.
    let other = stack.tenant("globex").await;
    let foreign = projects
        .update_project(bearer(
            update(
                Project {
                    name: "projects/web".into(),
                    display_name: "Mine now".into(),
                    ..Default::default()
                },
                &[],
                "",
            ),
            &other.key,
        ))
        .await
        .expect_err("not theirs");
    assert_eq!(foreign.code(), Code::NotFound, "{foreign:?}");
    assert_eq!(
        get(&stack, key, "projects/web").await.display_name,
        "Web shop"
    );

    // A delete with a stale etag is refused; with the current one it goes.
    let refused = projects
        .delete_project(bearer(
            DeleteProjectRequest {
                name: "projects/web".into(),
                etag: before.etag.clone(),
            },
            key,
        ))
        .await
        .expect_err("stale etag");
    assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
    projects
        .delete_project(bearer(
            DeleteProjectRequest {
                name: "projects/web".into(),
                etag: after.etag.clone(),
            },
            key,
        ))
        .await
        .expect("deleted with the current etag");
}

#[tokio::test]
async fn a_patch_over_http_changes_only_what_its_body_holds() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("acme").await;
    let http = Http::new(&stack.gateway.http_url()).with_key(&tenant.key);
    let created = http
        .post(
            "/v1/projects",
            json!({"displayName": "Web", "description": "Shop front", "regions": ["sto1", "osl1"]}),
        )
        .await
        .expect(200)
        .json();
    let name = created["name"].as_str().expect("name").to_string();
    let etag = created["etag"].as_str().expect("etag").to_string();

    // No updateMask: the body's fields are the mask, so the description
    // the body leaves out stays.
    let patched = http
        .patch(
            &format!("/v1/{name}"),
            json!({"displayName": "Web 2", "etag": etag}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(patched["displayName"], "Web 2");
    assert_eq!(patched["description"], "Shop front");
    assert_ne!(patched["etag"], json!(etag));

    // An explicit mask clears a field the body leaves empty.
    let cleared = http
        .patch(
            &format!("/v1/{name}?updateMask=description"),
            json!({"displayName": "ignored"}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(cleared["displayName"], "Web 2");
    assert_eq!(cleared["description"], "");

    // A stale etag is a 409 ABORTED with the google.rpc.Status body.
    http.patch(
        &format!("/v1/{name}"),
        json!({"displayName": "Web 3", "etag": etag}),
    )
    .await
    .expect_error(409, 10);
    // A field that cannot change is a 400 naming update_mask.
    let bad = http
        .patch(
            &format!("/v1/{name}?updateMask=regions"),
            json!({"regions": ["sto1"]}),
        )
        .await
        .expect_error(400, 3);
    assert!(bad.to_string().contains("update_mask"), "{bad}");
}
