//! Random methods, paths, query strings, headers and bodies at the HTTP
//! port (bounded: a fixed number of cases, loopback only). None may get a
//! 5xx, hang, or bring the gateway down.

mod http_common;

use http_common::Http;
use nordlys_tests::{Stack, OPERATOR_KEY};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};

const WORDS: &[&str] = &[
    "v1",
    "projects",
    "organizations",
    "networks",
    "accessRules",
    "members",
    "users",
    "apiKeys",
    "quotas",
    "regions",
    "fuzz",
    "web",
    "sto1",
    "osl1",
    "openapi.json",
    "docs",
];

const FIELDS: &[&str] = &[
    "pageSize",
    "page_size",
    "pageToken",
    "region",
    "regions",
    "organization",
    "projectId",
    "requestId",
    "networkId",
    "accessRuleId",
    "memberId",
    "userId",
    "updateMask",
    "displayName",
    "name",
    "cidr",
    "direction",
    "protocol",
    "portRangeMin",
    "limits",
    "limits.projects",
    "project.regions",
    "role",
];

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(WORDS).prop_map(str::to_owned),
        2 => "[a-z0-9._~-]{1,10}",
        1 => prop::collection::vec(any::<u8>(), 1..6)
            .prop_map(|b| b.iter().map(|b| format!("%{b:02X}")).collect::<String>()),
        1 => "[a-z]{1,6}:[a-zA-Z]{0,8}",
        1 => "\\PC{0,6}".prop_map(|s| encode(&s)),
        1 => Just(String::new()),
    ]
}

/// Shapes of the API's own paths, so most requests reach a binding.
const SHAPES: &[&str] = &[
    "/v1/projects",
    "/v1/projects/_",
    "/v1/projects/_/networks",
    "/v1/projects/_/networks/_",
    "/v1/projects/_/accessRules",
    "/v1/projects/_/accessRules/_",
    "/v1/projects/_/members",
    "/v1/projects/_/members/_",
    "/v1/organizations",
    "/v1/organizations/_",
    "/v1/organizations/_/users",
    "/v1/organizations/_/users/_",
    "/v1/organizations/_/members",
    "/v1/organizations/_/members/_",
    "/v1/organizations/_/apiKeys",
    "/v1/organizations/_/apiKeys/_",
    "/v1/organizations/_/quotas",
    "/v1/organizations/_/quotas/_",
    "/v1/regions",
];

fn shaped_path() -> impl Strategy<Value = String> {
    let fill = prop_oneof![
        2 => prop::sample::select(&["web", "fuzz", "sto1", "osl1", "owner@fuzz.example", "x"][..])
            .prop_map(str::to_owned),
        2 => segment(),
    ];
    (prop::sample::select(SHAPES), prop::collection::vec(fill, 2)).prop_map(|(shape, fills)| {
        let mut fills = fills.into_iter();
        shape
            .split('/')
            .map(|s| {
                if s == "_" {
                    fills.next().unwrap_or_default()
                } else {
                    s.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    })
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![3 => shaped_path(), 1 => free_path()]
}

fn free_path() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(segment(), 0..6)).prop_map(|(v1, segments)| {
        let mut path = String::new();
        if v1 {
            path.push_str("/v1");
        }
        for s in segments {
            path.push('/');
            path.push_str(&s);
        }
        if path.is_empty() {
            path.push('/');
        }
        path
    })
}

fn query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        3 => prop::sample::select(FIELDS).prop_map(str::to_owned),
        1 => "[a-zA-Z_.]{1,12}",
    ];
    let value = prop_oneof![
        "[0-9]{1,4}",
        "-?[0-9]{1,20}",
        "[a-zA-Z0-9_/.,-]{0,16}",
        "\\PC{0,10}",
        prop::sample::select(&["true", "INGRESS", "TCP", "sto1", "limits.projects", "NaN"][..])
            .prop_map(str::to_owned),
    ];
    prop::collection::vec((key, value), 0..5).prop_map(|pairs| {
        pairs
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        prop::sample::select(
            &[
                "sto1",
                "INGRESS",
                "10.0.0.0/24",
                "2020-01-01T00:00:00Z",
                "1.5s",
                "7"
            ][..]
        )
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        3 => prop::sample::select(FIELDS).prop_map(str::to_owned),
                        1 => "\\PC{0,8}",
                    ],
                    inner
                ),
                0..5
            )
            .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(Vec::new()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        4 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => "\\PC{0,32}".prop_map(String::into_bytes),
        1 => Just(b"{\"regions\": [\"sto1\"], \"displayName\": \"fuzz\"}".to_vec()),
    ]
}

#[test]
fn random_requests_never_get_a_server_error() {
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
    let stack = rt.block_on(Stack::start());
    let tenant = rt.block_on(stack.tenant("fuzz"));
    let base = Http::new(&stack.gateway.http_url());
    rt.block_on(async {
        base.with_key(&tenant.key)
            .post(
                "/v1/projects?projectId=web",
                json!({"displayName": "P", "regions": ["sto1"]}),
            )
            .await
            .expect(200);
    });
    let keys = [
        Some(tenant.key.clone()),
        Some(OPERATOR_KEY.to_owned()),
        None,
        Some("nlk_fuzz_garbage".to_owned()),
    ];
    const METHODS: &[&str] = &[
        "GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS", "TAG",
    ];

    let mut runner = TestRunner::new(Config {
        cases: 1000,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        prop_oneof![
            4 => Just("GET"),
            3 => Just("POST"),
            2 => Just("DELETE"),
            2 => Just("PATCH"),
            1 => prop::sample::select(METHODS),
        ],
        path(),
        query(),
        body(),
        0..keys.len(),
        any::<bool>(),
    );
    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::<u16, usize>::new());
    let result = runner.run(&strategy, |(method, path, query, body, key, json_type)| {
        let client = match &keys[key] {
            Some(k) => base.with_key(k),
            None => base.clone(),
        };
        let target = if query.is_empty() {
            path.clone()
        } else {
            format!("{path}?{query}")
        };
        let headers: &[(&str, &str)] = if json_type {
            &[("content-type", "application/json")]
        } else {
            &[]
        };
        let reply = rt
            .block_on(client.try_send(method, &target, body.clone(), headers))
            .map_err(|e| TestCaseError::fail(format!("{method} {target}: {e}")))?;
        *statuses.borrow_mut().entry(reply.status).or_default() += 1;
        prop_assert!(
            reply.status < 500,
            "{} {} with body {:?} got {}: {}",
            method,
            target,
            String::from_utf8_lossy(&body),
            reply.status,
            reply.text()
        );
        if reply.status >= 400 && method != "HEAD" {
            let error = serde_json::from_slice::<Value>(&reply.body).map_err(|e| {
                TestCaseError::fail(format!("{method} {target}: error body not JSON: {e}"))
            })?;
            prop_assert!(error["code"].is_i64(), "{}", error);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!("answers by HTTP status: {:?}", statuses.borrow());

    // Still up and serving, through the regions (a random DELETE may have
    // taken `web` itself).
    let mut stack = stack;
    assert!(stack.gateway.is_running(), "the gateway died");
    rt.block_on(async {
        base.with_key(&tenant.key)
            .get("/v1/projects")
            .await
            .expect(200);
    });
}
