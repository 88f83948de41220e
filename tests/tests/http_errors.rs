//! HTTP errors: the google.rpc.Status JSON under grpc-gateway's HTTP status
//! for each gRPC code, and a precise 400 (never a 5xx) for every kind of
//! bad request the transcoder sees.

mod http_common;

use http_common::Http;
use nordlys_proto::pb::nordlys::v1::ResourceCounts;
use nordlys_tests::{Stack, OPERATOR_KEY};
use serde_json::json;

fn http(stack: &Stack) -> Http {
    Http::new(&stack.gateway.http_url())
}

/// The field a google.rpc.BadRequest detail names.
fn violation_field(body: &serde_json::Value) -> String {
    let detail = body["details"]
        .as_array()
        .and_then(|d| {
            d.iter()
                .find(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
        })
        .unwrap_or_else(|| panic!("no BadRequest detail in {body}"));
    detail["fieldViolations"][0]["field"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn malformed_json_wrong_types_and_unknown_fields() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("bodies").await;
    let api = http(&stack).with_key(&tenant.key);
    let post = |body: &'static str| {
        let api = api.clone();
        async move {
            api.send(
                "POST",
                "/v1/projects?projectId=p1",
                body,
                &[("content-type", "application/json")],
            )
            .await
        }
    };

    let body = post(r#"{"displayName": "x", "regions": ["sto1"]"#)
        .await
        .expect_error(400, 3);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("malformed JSON"),
        "{body}"
    );

    let body = post(r#"{"displayName": 5}"#).await.expect_error(400, 3);
    assert_eq!(violation_field(&body), "project.displayName");

    let body = post(r#"{"regions": "sto1"}"#).await.expect_error(400, 3);
    assert_eq!(violation_field(&body), "project.regions");

    let body = post(r#"{"displayName": "x", "colour": "red"}"#)
        .await
        .expect_error(400, 3);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown field"),
        "{body}"
    );

    let body = post("[1, 2]").await.expect_error(400, 3);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("project"),
        "{body}"
    );

    // A body where none is taken.
    api.send("GET", "/v1/projects", "{}", &[])
        .await
        .expect_error(400, 3);
}

#[tokio::test]
async fn oversized_bodies() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("big").await;
    let api = http(&stack).with_key(&tenant.key);
    // Default limit: 4 MiB.
    let big = format!(r#"{{"displayName": "{}"}}"#, "x".repeat(4 * 1024 * 1024));
    let body = api
        .send(
            "POST",
            "/v1/projects?projectId=big",
            big,
            &[("content-type", "application/json")],
        )
        .await
        .expect_error(400, 3);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("larger than the limit"),
        "{body}"
    );
    // Under the limit, the service itself judges the value.
    let long = format!(
        r#"{{"displayName": "{}", "regions": ["sto1"]}}"#,
        "x".repeat(100)
    );
    api.send("POST", "/v1/projects?projectId=big", long, &[])
        .await
        .expect_error(400, 3);
}

#[tokio::test]
async fn bad_path_values_and_query_parameters() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("params").await;
    let api = http(&stack).with_key(&tenant.key);

    // Not UTF-8 once percent-decoded.
    api.get("/v1/projects/%FF%FE").await.expect_error(400, 3);
    // Well-formed but not a valid project id: the service says which field.
    let body = api
        .get("/v1/projects/Not_Valid!")
        .await
        .expect_error(400, 3);
    assert_eq!(violation_field(&body), "name");

    let body = api
        .get("/v1/projects?pageSize=ten")
        .await
        .expect_error(400, 3);
    assert_eq!(violation_field(&body), "pageSize");
    let body = api
        .get("/v1/projects?pageSize=1&pageSize=2")
        .await
        .expect_error(400, 3);
    assert_eq!(violation_field(&body), "pageSize");
    let body = api
        .get("/v1/projects?colour=red")
        .await
        .expect_error(400, 3);
    assert_eq!(violation_field(&body), "colour");
    // A field of the body, or bound by the path, is not a query parameter.
    api.send("POST", "/v1/projects?project.displayName=x", "{}", &[])
        .await
        .expect_error(400, 3);
    api.get("/v1/projects/p?name=projects/q")
        .await
        .expect_error(400, 3);

    api.send("GET", "/v1/projects", "", &[("x-request-timeout", "soon")])
        .await
        .expect_error(400, 3);
    api.send("GET", "/v1/projects", "", &[("grpc-timeout", "1 minute")])
        .await
        .expect_error(400, 3);
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let stack = Stack::start().await;
    let api = http(&stack).with_key(OPERATOR_KEY);
    api.get("/v2/projects").await.expect_error(404, 5);
    api.get("/v1/projects/a/b/c/d").await.expect_error(404, 5);
    api.get("/").await.expect_error(404, 5);
    let reply = api.send("PUT", "/v1/projects/p", "{}", &[]).await;
    let allow = reply
        .headers
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(allow.contains("GET") && allow.contains("DELETE"), "{allow}");
    reply.expect_error(405, 12);
}

/// Each gRPC code the services return, under grpc-gateway's HTTP status,
/// with its typed details.
#[tokio::test]
async fn grpc_codes_map_to_http_statuses() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("codes").await;
    let api = http(&stack).with_key(&tenant.key);
    let operator = http(&stack).with_key(OPERATOR_KEY);

    // UNAUTHENTICATED 401.
    http(&stack).get("/v1/regions").await.expect_error(401, 16);
    // NOT_FOUND 404.
    api.get("/v1/projects/missing").await.expect_error(404, 5);
    // PERMISSION_DENIED 403: only operators create organizations.
    api.post("/v1/organizations?organizationId=other", json!({}))
        .await
        .expect_error(403, 7);
    // ALREADY_EXISTS 409.
    operator
        .post("/v1/organizations?organizationId=codes", json!({}))
        .await
        .expect_error(409, 6);
    // INVALID_ARGUMENT 400 with google.rpc.BadRequest from the service.
    let body = api
        .post(
            "/v1/projects/none/networks?networkId=n",
            json!({"region": "sto1", "cidr": "10.0.0.1/24"}),
        )
        .await;
    assert!(matches!(body.status, 400 | 404), "{}", body.text());

    let body = api
        .post(
            "/v1/projects?projectId=empty",
            json!({"displayName": "Empty", "regions": []}),
        )
        .await
        .expect_error(400, 3);
    assert_eq!(violation_field(&body), "project.regions");

    // RESOURCE_EXHAUSTED 429 with google.rpc.QuotaFailure.
    let zero = ResourceCounts {
        projects: 0,
        users: 0,
        networks: 0,
        access_rules: 0,
    };
    let poor = stack.tenant_with_limits("poor", zero).await;
    let body = http(&stack)
        .with_key(&poor.key)
        .post(
            "/v1/projects?projectId=over",
            json!({"displayName": "P", "regions": ["sto1"]}),
        )
        .await
        .expect_error(429, 8);
    assert!(
        body["details"].as_array().is_some_and(|d| d
            .iter()
            .any(|d| d["@type"] == "type.googleapis.com/google.rpc.QuotaFailure")),
        "{body}"
    );
}
