//! The README's quick start: `scripts/demo` (and `scripts/demo --cluster`,
//! the reference deployment, and `--kube`, osl1 on Kubernetes) comes up, bootstraps its organization, serves
//! the calls it prints with the key it prints, and stops everything on
//! Ctrl-C (SIGINT).

use std::process::Command;
use std::time::Duration;

use nordlys_proto::pb::nordlys::v1::{
    project_service_client::ProjectServiceClient, region_service_client::RegionServiceClient,
    CreateProjectRequest, GetProjectRequest, ListRegionsRequest, Project,
};
use nordlys_tests::bearer;
use nordlys_tests::demo::{self, Demo};

/// What the printed commands do: a project over gRPC with the printed key,
/// read back over HTTP; then Ctrl-C stops everything. `osl1` is the kind
/// of region ListRegions must show for osl1.
async fn the_printed_calls_work(mut demo: Demo, osl1: &str) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", demo.listen))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to the demo's gateway");
    let regions = RegionServiceClient::new(channel.clone())
        .list_regions(bearer(ListRegionsRequest {}, demo.key()))
        .await
        .expect("ListRegions")
        .into_inner()
        .regions;
    let kind = regions
        .iter()
        .find(|r| r.name == "regions/osl1")
        .map(|r| r.kind.as_str());
    assert_eq!(kind, Some(osl1), "{regions:?}");
    let made = ProjectServiceClient::new(channel.clone())
        .create_project(bearer(
            CreateProjectRequest {
                project_id: "demo-web".into(),
                request_id: "demo-1".into(),
                project: Some(Project {
                    display_name: "Web shop".into(),
                    regions: vec!["sto1".into(), "osl1".into()],
                    ..Default::default()
                }),
            },
            demo.key(),
        ))
        .await
        .expect("CreateProject with the printed key")
        .into_inner();
    assert_eq!(made.region_status.len(), 2, "{made:?}");
    let got = ProjectServiceClient::new(channel)
        .get_project(bearer(
            GetProjectRequest {
                name: "projects/demo-web".into(),
            },
            demo.key(),
        ))
        .await
        .expect("GetProject")
        .into_inner();
    assert_eq!(got.display_name, "Web shop");
    let out = Command::new("curl")
        .args([
            "-sf",
            "-H",
            &format!("authorization: Bearer {}", demo.key()),
            &format!("http://{}/v1/projects/demo-web", demo.http_listen),
        ])
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && body.contains("Web shop"), "{body}");

    // Ctrl-C: the demo stops its processes and exits.
    Command::new("kill")
        .args(["-INT", &demo.child.id().to_string()])
        .status()
        .expect("kill -INT");
    let exited = (0..300).find_map(|_| match demo.child.try_wait() {
        Ok(Some(status)) => Some(status),
        _ => {
            std::thread::sleep(Duration::from_millis(100));
            None
        }
    });
    assert!(exited.is_some(), "the demo did not exit on Ctrl-C");
    assert!(
        std::net::TcpStream::connect(&demo.listen).is_err(),
        "the gateway still listens after Ctrl-C"
    );
}

// One test: the two runs share the demo's fixed cluster ports.
#[tokio::test]
async fn the_demo_and_the_cluster_demo_serve_what_they_print() {
    the_printed_calls_work(demo::start(&[], &[]), "kv").await;
    the_printed_calls_work(demo::start(&["--cluster"], &[]), "kv").await;
}

#[tokio::test]
async fn the_kube_demo_puts_osl1_on_kubernetes() {
    if !nordlys_tests::kube::available("scripts/demo --kube") {
        return;
    }
    the_printed_calls_work(demo::start(&["--kube"], &[]), "kube").await;
}
