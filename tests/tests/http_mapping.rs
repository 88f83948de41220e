//! JSON over HTTP, through the google.api.http mapping, against the running
//! stack: one test per mapping feature the public API uses. (Custom verbs,
//! `additional_bindings`, `response_body`, `body: "*"`, `**` and nested,
//! repeated and enum query parameters are not in the public API: the
//! gateway's unit tests cover them on a test API.)

mod http_common;

use http_common::Http;
use nordlys_tests::{Stack, OPERATOR_KEY};
use serde_json::json;

fn http(stack: &Stack) -> Http {
    Http::new(&stack.gateway.http_url())
}

/// `body: "project"` with the other fields from the query, then path
/// templates (`/v1/{name=projects/*}`) for GET and DELETE (no body).
#[tokio::test]
async fn body_field_query_params_and_path_templates() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("acme").await;
    let api = http(&stack).with_key(&tenant.key);

    let created = api
        .post(
            "/v1/projects?projectId=web&requestId=7f7c0e3e-1",
            json!({"displayName": "Web shop", "regions": ["sto1", "osl1"]}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(created["name"], "projects/web");
    assert_eq!(created["organization"], tenant.organization);
    // Canonical JSON out: lowerCamelCase, enums by name, timestamps in RFC 3339.
    assert_eq!(created["displayName"], "Web shop");
    let states: Vec<&str> = created["regionStatus"]
        .as_array()
        .expect("regionStatus")
        .iter()
        .filter_map(|s| s["state"].as_str())
        .collect();
    assert_eq!(states, ["READY", "READY"], "{created}");
    let time = created["createTime"].as_str().expect("createTime");
    assert!(time.ends_with('Z') && time.contains('T'), "{time}");

    // The same create again with the same request id: the first answer.
    let again = api
        .post(
            "/v1/projects?project_id=web&request_id=7f7c0e3e-1",
            json!({"display_name": "Web shop", "regions": ["sto1", "osl1"]}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(again["name"], "projects/web");

    let got = api.get("/v1/projects/web").await.expect(200).json();
    assert_eq!(got["name"], "projects/web");
    assert_eq!(got["regions"], json!(["sto1", "osl1"]));

    let deleted = api.delete("/v1/projects/web").await.expect(200).json();
    assert_eq!(deleted["regionStatus"].as_array().map(Vec::len), Some(2));
    api.get("/v1/projects/web").await.expect_error(404, 5);
}

/// Original proto field names are accepted in bodies and query parameters,
/// and query parameters page through lists.
#[tokio::test]
async fn query_parameters_page_and_filter() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("paging").await;
    let api = http(&stack).with_key(&tenant.key);
    for (id, regions) in [
        ("alpha", json!(["sto1"])),
        ("beta", json!(["osl1"])),
        ("gamma", json!(["sto1", "osl1"])),
    ] {
        api.post(
            &format!("/v1/projects?projectId={id}"),
            json!({"display_name": id, "regions": regions}),
        )
        .await
        .expect(200);
    }
    let first = api.get("/v1/projects?pageSize=2").await.expect(200).json();
    let names: Vec<&str> = first["projects"]
        .as_array()
        .expect("projects")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["projects/alpha", "projects/beta"]);
    let token = first["nextPageToken"].as_str().expect("token");
    assert!(!token.is_empty());
    let second = api
        .get(&format!("/v1/projects?page_size=2&pageToken={token}"))
        .await
        .expect(200)
        .json();
    assert_eq!(second["projects"][0]["name"], "projects/gamma");
    assert_eq!(second["nextPageToken"], "");
    // Fields at their default value are sent: empty lists, empty strings.
    assert_eq!(second["unreachable"], json!([]));

    let osl1 = api.get("/v1/projects?region=osl1").await.expect(200).json();
    let names: Vec<&str> = osl1["projects"]
        .as_array()
        .expect("projects")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["projects/beta", "projects/gamma"]);
}

/// `patch: "/v1/{quota.name=organizations/*/quotas/*}"` with `body: "quota"`:
/// a nested field path filled from the path into the body, a FieldMask
/// query parameter in its JSON form, and int64 values as strings.
#[tokio::test]
async fn nested_field_path_with_body_and_field_mask() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("limits").await;
    let operator = http(&stack).with_key(OPERATOR_KEY);
    let path = format!("/v1/{}/quotas/sto1", tenant.organization);

    let updated = operator
        .patch(
            &format!("{path}?updateMask=limits.projects"),
            json!({"limits": {"projects": "7", "networks": "1"}}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(
        updated["name"],
        format!("{}/quotas/sto1", tenant.organization)
    );
    assert_eq!(updated["limits"]["projects"], "7");
    // Not in the mask: unchanged.
    assert_eq!(updated["limits"]["networks"], "100");

    // Numbers are accepted for int64 on input; strings come out.
    let updated = operator
        .patch(
            &path,
            json!({"limits": {"projects": 8, "users": 9, "networks": 10, "accessRules": 11}}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(
        updated["limits"],
        json!({"projects": "8", "users": "9", "networks": "10", "accessRules": "11"})
    );

    let read = http(&stack)
        .with_key(&tenant.key)
        .get(&path)
        .await
        .expect(200)
        .json();
    assert_eq!(read["limits"]["projects"], "8");
}

/// Templates with several variables' literals
/// (`/v1/{name=projects/*/networks/*}`), and enums by name in and out.
#[tokio::test]
async fn nested_resource_names_and_enums() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("nets").await;
    let api = http(&stack).with_key(&tenant.key);
    api.post(
        "/v1/projects?projectId=web",
        json!({"displayName": "P", "regions": ["sto1"]}),
    )
    .await
    .expect(200);

    let network = api
        .post(
            "/v1/projects/web/networks?networkId=backend",
            json!({"region": "sto1", "cidr": "10.20.0.0/24", "dnsServers": ["10.20.0.2"]}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(network["name"], "projects/web/networks/backend");
    assert_eq!(network["gatewayIp"], "10.20.0.1");
    let got = api
        .get("/v1/projects/web/networks/backend")
        .await
        .expect(200)
        .json();
    assert_eq!(got["cidr"], "10.20.0.0/24");

    let rule = api
        .post(
            "/v1/projects/web/accessRules?accessRuleId=ssh",
            json!({"region": "sto1", "direction": "INGRESS", "protocol": 2,
                   "portRangeMin": 22, "portRangeMax": 22, "remoteCidr": "192.0.2.0/24"}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(rule["direction"], "INGRESS");
    // An enum given by number comes back by name.
    assert_eq!(rule["protocol"], "TCP");
    let list = api
        .get("/v1/projects/web/accessRules")
        .await
        .expect(200)
        .json();
    assert_eq!(
        list["accessRules"][0]["name"],
        "projects/web/accessRules/ssh"
    );
    api.delete("/v1/projects/web/accessRules/ssh")
        .await
        .expect(200);
    api.delete("/v1/projects/web/networks/backend")
        .await
        .expect(200);
}

/// The same port speaks cleartext HTTP/2 (prior knowledge).
#[tokio::test]
async fn http2_prior_knowledge() {
    let stack = Stack::start().await;
    let regions = Http::http2(&stack.gateway.http_url())
        .with_key(OPERATOR_KEY)
        .get("/v1/regions")
        .await
        .expect(200)
        .json();
    let names: Vec<&str> = regions["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["regions/osl1", "regions/sto1"]);
}

/// `Authorization` reaches the services as metadata; `grpc-timeout` and
/// `X-Request-Timeout` set the deadline.
#[tokio::test]
async fn authorization_and_deadline_headers() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("hdrs").await;
    let anonymous = http(&stack);
    let reply = anonymous.get("/v1/projects").await;
    assert_eq!(
        reply
            .headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    reply.expect_error(401, 16);
    http(&stack)
        .with_key("nlk_not_a_key")
        .get("/v1/projects")
        .await
        .expect_error(401, 16);

    let api = http(&stack).with_key(&tenant.key);
    api.post(
        "/v1/projects?projectId=slow",
        json!({"displayName": "P", "regions": ["sto1"]}),
    )
    .await
    .expect(200);
    api.send(
        "GET",
        "/v1/projects/slow",
        "",
        &[("x-request-timeout", "30")],
    )
    .await
    .expect(200);
    api.send("GET", "/v1/projects/slow", "", &[("grpc-timeout", "20S")])
        .await
        .expect(200);
    // A deadline spent before any region is asked: DEADLINE_EXCEEDED, not
    // every region "unreachable".
    api.send("GET", "/v1/projects/slow", "", &[("grpc-timeout", "1n")])
        .await
        .expect_error(504, 4);
    // A deadline that passes before the quota service is asked.
    api.send(
        "POST",
        "/v1/projects?projectId=late",
        r#"{"displayName": "P", "regions": ["sto1"]}"#,
        &[("grpc-timeout", "1n")],
    )
    .await
    .expect_error(504, 4);
}

/// Every operation of the OpenAPI document is routed to its RPC: without a
/// key each one reaches the service and is refused there (401), never 404
/// or 405 from the router.
#[tokio::test]
async fn every_rpc_is_served() {
    let stack = Stack::start().await;
    let api = http(&stack);
    let doc = api.get("/openapi.json").await.expect(200).json();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let concrete = nordlys_tests::concrete_path(path);
        for method in item.as_object().expect("item").keys() {
            let body = if method == "get" || method == "delete" {
                ""
            } else {
                "{}"
            };
            let reply = api
                .send(&method.to_uppercase(), &concrete, body.to_owned(), &[])
                .await;
            assert_eq!(reply.status, 401, "{method} {concrete}: {}", reply.text());
            operations += 1;
        }
    }
    assert!(operations >= 30, "only {operations} operations");
}
