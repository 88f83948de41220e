//! The live OpenAPI document: every public RPC, described from the proto
//! comments, and valid OpenAPI 3.1 by `openapi-spec-validator` (which CI
//! installs; elsewhere the check runs when the validator is on PATH).

mod http_common;

use std::path::PathBuf;
use std::process::Command;

use http_common::Http;
use nordlys_tests::Stack;
use prost::Message;

/// Every method of the public services, `Service_Method`.
fn public_operations() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(nordlys_proto::FILE_DESCRIPTOR_SET)
        .unwrap_or_else(|e| panic!("descriptor set: {e}"));
    let mut out = Vec::new();
    for file in set.file {
        if file.package() != "nordlys.v1" {
            continue;
        }
        for service in &file.service {
            for method in &service.method {
                out.push(format!("{}_{}", service.name(), method.name()));
            }
        }
    }
    out
}

#[tokio::test]
async fn document_describes_the_whole_api() {
    let stack = Stack::start().await;
    let api = Http::new(&stack.gateway.http_url());
    let reply = api.get("/openapi.json").await.expect(200);
    assert_eq!(
        reply
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let doc = reply.json();
    assert_eq!(doc["openapi"], "3.1.0");

    let mut ids = Vec::new();
    for item in doc["paths"].as_object().expect("paths").values() {
        for op in item.as_object().expect("path item").values() {
            ids.push(op["operationId"].as_str().expect("operationId").to_owned());
        }
    }
    let wanted = public_operations();
    assert!(wanted.len() >= 30, "{wanted:?}");
    for op in &wanted {
        assert!(ids.contains(op), "{op} missing from the document");
    }

    // Paths spell out resource names; parameters come from path and query.
    let create = &doc["paths"]["/v1/projects/{project}/networks"]["post"];
    assert_eq!(create["operationId"], "NetworkService_CreateNetwork");
    assert!(
        create["description"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Creates a network in one region of the project."),
        "{create}"
    );
    let params: Vec<(&str, &str)> = create["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or(""),
                p["in"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(params.contains(&("project", "path")), "{params:?}");
    assert!(params.contains(&("networkId", "query")), "{params:?}");
    assert!(params.contains(&("requestId", "query")), "{params:?}");
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/nordlys.v1.Network"
    );
    assert_eq!(
        create["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/google.rpc.Status"
    );
    let quota = &doc["paths"]["/v1/organizations/{organization}/quotas/{quota}"]["patch"];
    assert_eq!(quota["operationId"], "QuotaService_UpdateQuota");

    // Schemas: comments, enum values, read-only fields, the error, bearer auth.
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["nordlys.v1.Direction"]["enum"],
        serde_json::json!(["DIRECTION_UNSPECIFIED", "INGRESS", "EGRESS"])
    );
    let project = &schemas["nordlys.v1.Project"];
    assert_eq!(project["description"], "A project.");
    assert_eq!(project["properties"]["name"]["readOnly"], true);
    assert_eq!(project["properties"]["createTime"]["format"], "date-time");
    assert_eq!(
        schemas["nordlys.v1.ResourceCounts"]["properties"]["projects"]["type"],
        "string"
    );
    assert!(schemas["google.rpc.Status"]["properties"]["details"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["security"][0]["bearerAuth"], serde_json::json!([]));
}

#[tokio::test]
async fn document_validates_as_openapi_3_1() {
    let stack = Stack::start().await;
    let api = Http::new(&stack.gateway.http_url());
    let json = api.get("/openapi.json").await.expect(200).body;
    let yaml = api.get("/openapi.yaml").await.expect(200);
    assert_eq!(
        yaml.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/yaml")
    );

    // Kept in target/ for CI and for people.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/openapi");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let json_path = dir.join("openapi.json");
    let yaml_path = dir.join("openapi.yaml");
    std::fs::write(&json_path, &json).unwrap_or_else(|e| panic!("write: {e}"));
    std::fs::write(&yaml_path, &yaml.body).unwrap_or_else(|e| panic!("write: {e}"));

    let validator = Command::new("openapi-spec-validator")
        .arg("--help")
        .output();
    if validator.is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "openapi-spec-validator is not installed; .ci/run installs it with pip"
        );
        eprintln!("openapi-spec-validator not on PATH: document written, not validated");
        return;
    }
    for path in [&json_path, &yaml_path] {
        let out = Command::new("openapi-spec-validator")
            .arg(path)
            .output()
            .unwrap_or_else(|e| panic!("openapi-spec-validator: {e}"));
        assert!(
            out.status.success(),
            "{} is not valid OpenAPI:\n{}\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn docs_page_needs_no_network() {
    let stack = Stack::start().await;
    let page = Http::new(&stack.gateway.http_url())
        .get("/docs")
        .await
        .expect(200);
    assert_eq!(
        page.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/html; charset=utf-8")
    );
    let html = page.text();
    assert!(html.contains("/openapi.json"));
    assert!(
        !html.contains("://"),
        "the page loads something from elsewhere"
    );
}
