//! The mapping features the public API does not exercise, on a small test
//! API (testdata/library.proto) compiled with protox: custom verbs,
//! `additional_bindings`, `response_body`, `body: "*"`, `**`, custom
//! methods, nested, repeated, enum and well-known-type query parameters,
//! and the start-up refusal of bad or conflicting rules.

use std::path::PathBuf;

use http::Method;
use prost_reflect::{DescriptorPool, DynamicMessage, Value};
use serde_json::json;

use super::errors::status_json;
use super::router::{Miss, Router};
use super::rules::{self, Binding};
use super::transcode::{self, Leniency};
use super::{openapi, yaml};

fn compile(file: &str) -> DescriptorPool {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut compiler =
        protox::Compiler::new([here.join("src/http/testdata"), here.join("../proto/proto")])
            .expect("protox");
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files([file]).expect("test proto compiles");
    DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice()).expect("pool")
}

fn library() -> (DescriptorPool, Router) {
    let pool = compile("library.proto");
    let bindings = rules::bindings(&pool, &["test.library.v1.Library"]).expect("rules");
    (pool, Router::new(bindings))
}

/// Matches and transcodes one request; the request message as JSON.
fn call(
    router: &Router,
    method: Method,
    path: &str,
    query: Option<&str>,
    body: &str,
) -> Result<(String, serde_json::Value), String> {
    let found = router.find(&method, path).map_err(|m| format!("{m:?}"))?;
    let message = transcode::request(
        found.binding,
        &found.values,
        query,
        body.as_bytes(),
        Leniency::default(),
    )
    .map_err(|e| e.status.message().to_string())?;
    let json = message
        .serialize_with_options(serde_json::value::Serializer, &transcode::json_options())
        .expect("json");
    Ok((found.binding.rpc.name().to_string(), json))
}

fn ok(
    router: &Router,
    method: Method,
    path: &str,
    query: Option<&str>,
    body: &str,
) -> (String, serde_json::Value) {
    call(router, method.clone(), path, query, body)
        .unwrap_or_else(|e| panic!("{method} {path}?{query:?}: {e}"))
}

fn err(router: &Router, method: Method, path: &str, query: Option<&str>, body: &str) -> String {
    match call(router, method.clone(), path, query, body) {
        Ok(v) => panic!("{method} {path} should fail, got {v:?}"),
        Err(e) => e,
    }
}

#[test]
fn path_templates_and_nested_field_paths() {
    let (_, router) = library();
    let (rpc, req) = ok(&router, Method::GET, "/v1/shelves/s1/books/b%201", None, "");
    assert_eq!(rpc, "GetBook");
    assert_eq!(req["name"], "shelves/s1/books/b 1");

    let (rpc, req) = ok(
        &router,
        Method::PATCH,
        "/v1/shelves/s1/books/b1",
        Some("updateMask=title,genre"),
        r#"{"title": "Dune", "genre": "FICTION", "name": "ignored/by/path"}"#,
    );
    assert_eq!(rpc, "UpdateBook");
    assert_eq!(req["book"]["name"], "shelves/s1/books/b1");
    assert_eq!(req["book"]["title"], "Dune");
    assert_eq!(req["updateMask"], "title,genre");

    // A mask by proto names, as the services name fields in their errors
    // and as grpc-gateway passes masks on: the same mask.
    let (_, req) = ok(
        &router,
        Method::PATCH,
        "/v1/shelves/s1/books/b1",
        Some("update_mask=publish_time,title"),
        r#"{"title": "Dune", "publishTime": "2020-01-01T00:00:00Z"}"#,
    );
    assert_eq!(req["updateMask"], "publishTime,title");
    let (_, req) = ok(
        &router,
        Method::GET,
        "/v1/shelves/s1/books",
        Some("readMask=publishTime,author_ids"),
        "",
    );
    assert_eq!(req["readMask"], "publishTime,authorIds");
    let e = err(
        &router,
        Method::GET,
        "/v1/shelves/s1/books",
        Some("readMask=publish__time"),
        "",
    );
    assert!(e.contains("readMask"), "{e}");
}

#[test]
fn a_patch_without_a_mask_changes_what_its_body_holds() {
    let (_, router) = library();
    // As grpc-gateway does: the body's fields become the mask, by their
    // proto names; a well-known type or a list is one path.
    let (_, req) = ok(
        &router,
        Method::PATCH,
        "/v1/shelves/s1/books/b1",
        None,
        r#"{"title": "Dune", "publishTime": "2020-01-01T00:00:00Z", "authors": ["F. H."]}"#,
    );
    let mut paths: Vec<&str> = req["updateMask"]
        .as_str()
        .expect("a mask")
        .split(',')
        .collect();
    paths.sort_unstable();
    assert_eq!(paths, ["authors", "publishTime", "title"]);
    // A mask the caller gave is kept as it is.
    let (_, req) = ok(
        &router,
        Method::PATCH,
        "/v1/shelves/s1/books/b1",
        Some("updateMask=genre"),
        r#"{"title": "Dune"}"#,
    );
    assert_eq!(req["updateMask"], "genre");
}

#[test]
fn double_wildcard_keeps_slashes() {
    let (_, router) = library();
    let (rpc, req) = ok(&router, Method::GET, "/v1/files/a/b%2Fc/d.txt", None, "");
    assert_eq!(rpc, "GetFile");
    assert_eq!(req["path"], "files/a/b%2Fc/d.txt");
    let (_, req) = ok(&router, Method::GET, "/v1/files", None, "");
    assert_eq!(req["path"], "files");
}

#[test]
fn custom_verbs_win_over_plain_templates() {
    let (_, router) = library();
    let (rpc, req) = ok(
        &router,
        Method::POST,
        "/v1/shelves/s1/books/b1:move",
        None,
        r#"{"destination": "shelves/s2"}"#,
    );
    assert_eq!(rpc, "MoveBook");
    assert_eq!(req["name"], "shelves/s1/books/b1");
    assert_eq!(req["destination"], "shelves/s2");
    let (rpc, _) = ok(
        &router,
        Method::POST,
        "/v1/shelves/s1/books/b1:undelete",
        None,
        "",
    );
    assert_eq!(rpc, "UndeleteBook");
    assert!(matches!(
        router.find(&Method::POST, "/v1/shelves/s1/books/b1:burn"),
        Err(Miss::NotFound) | Err(Miss::MethodNotAllowed(_))
    ));
    let (rpc, _) = ok(&router, Method::GET, "/v1/shelves/s1/books:watch", None, "");
    assert_eq!(rpc, "WatchBooks");
}

#[test]
fn custom_method_kind() {
    let (_, router) = library();
    let tag = Method::from_bytes(b"TAG").expect("method");
    let (rpc, req) = ok(
        &router,
        tag,
        "/v1/shelves/s1/books/b1",
        None,
        r#"["a", "b"]"#,
    );
    assert_eq!(rpc, "TagBook");
    assert_eq!(req["tags"], json!(["a", "b"]));
}

#[test]
fn additional_bindings_with_typed_path_values() {
    let (_, router) = library();
    let (rpc, req) = ok(&router, Method::GET, "/v1/books/42", None, "");
    assert_eq!(rpc, "GetBook");
    assert_eq!(req["bookId"], "42");
    let e = err(&router, Method::GET, "/v1/books/forty-two", None, "");
    assert!(e.contains("book_id") && e.contains("bad path value"), "{e}");
}

#[test]
fn query_parameters_nested_repeated_enums_and_wkts() {
    let (_, router) = library();
    let (rpc, req) = ok(
        &router,
        Method::GET,
        "/v1/shelves/s1/books",
        Some(
            "pageSize=10&filter.author=Herbert&filter.pages.min=100&filter.pages.max=900\
             &genres=FICTION&genres=2&since=2024-01-02T03:04:05Z&maxAge=1.5s&minPages=3\
             &readMask=title,pages&include_drafts=true",
        ),
        "",
    );
    assert_eq!(rpc, "ListBooks");
    assert_eq!(
        req,
        json!({
            "parent": "shelves/s1",
            "pageSize": 10,
            "filter": {"author": "Herbert", "pages": {"min": "100", "max": "900"}},
            "genres": ["FICTION", "SCIENCE"],
            "since": "2024-01-02T03:04:05Z",
            "maxAge": "1.500s",
            "minPages": 3,
            "readMask": "title,pages",
            "includeDrafts": true,
        })
    );
}

#[test]
fn bad_query_parameters_are_precise() {
    let (_, router) = library();
    let list = |q: &str| err(&router, Method::GET, "/v1/shelves/s1/books", Some(q), "");
    assert!(list("pageSize=ten").contains("pageSize"));
    assert!(list("genres=POETRY").contains("not a value of Genre"));
    assert!(list("nope=1").contains("unknown query parameter"));
    assert!(list("pageSize=1&pageSize=2").contains("given 2 times"));
    assert!(list("parent=shelves/x").contains("bound by the path"));
    assert!(list("filter=x").contains("is a message"));
    assert!(list("since=yesterday").contains("since"));
    assert!(list("includeDrafts=maybe").contains("not a boolean"));
    let create = err(
        &router,
        Method::POST,
        "/v1/shelves/s1/books",
        Some("book.title=x"),
        "{}",
    );
    assert!(create.contains("request body"), "{create}");
    let star = err(
        &router,
        Method::POST,
        "/v1/shelves/s1/books/b1:move",
        Some("destination=x"),
        "{}",
    );
    assert!(star.contains("no query parameters"), "{star}");
}

#[test]
fn bodies_are_checked_with_the_field_named() {
    let (_, router) = library();
    let create = |body: &str| err(&router, Method::POST, "/v1/shelves/s1/books", None, body);
    let e = create(r#"{"title": "x""#);
    // Cut off inside the object: the object is named, not `book.?`.
    assert!(e.starts_with("book: malformed JSON"), "{e}");
    let e = create(r#"{"title": "x", "#);
    assert!(e.starts_with("book: malformed JSON"), "{e}");
    let e = create(r#"{"pages": [1, "#);
    assert!(e.starts_with("book.pages"), "{e}");
    let e = create(r#"{"pages": "many"}"#);
    assert!(e.starts_with("book.pages"), "{e}");
    let e = create(r#"{"colour": "red"}"#);
    assert!(e.starts_with("book: unknown field"), "{e}");
    let e = create(r#"{"title": "x"} trailing"#);
    assert!(e.contains("malformed JSON"), "{e}");
    let e = err(&router, Method::GET, "/v1/shelves/s1/books", None, "{}");
    assert!(e.contains("takes no request body"), "{e}");

    // Original proto names are accepted too.
    let (_, req) = ok(
        &router,
        Method::POST,
        "/v1/shelves/s1/books",
        Some("book_id=dune"),
        r#"{"publish_time": "2020-01-01T00:00:00Z", "pages": 412}"#,
    );
    assert_eq!(req["book"]["publishTime"], "2020-01-01T00:00:00Z");
    assert_eq!(req["book"]["pages"], "412");
    assert_eq!(req["bookId"], "dune");
}

#[test]
fn unknown_fields_can_be_allowed() {
    let (_, router) = library();
    let found = router
        .find(&Method::GET, "/v1/shelves/s1/books")
        .expect("route");
    let lenient = Leniency {
        allow_unknown_fields: true,
    };
    transcode::request(
        found.binding,
        &found.values,
        Some("cacheBuster=1"),
        b"",
        lenient,
    )
    .expect("unknown query parameter ignored");
}

fn binding<'a>(router: &'a Router, rpc: &str) -> &'a Binding {
    router
        .bindings()
        .iter()
        .find(|b| b.rpc.name() == rpc && b.index == 0)
        .expect("binding")
}

#[test]
fn responses_are_canonical_json_and_response_body_picks_a_field() {
    let (pool, router) = library();
    let desc = pool
        .get_message_by_name("test.library.v1.ListBooksResponse")
        .expect("message");
    let book = pool
        .get_message_by_name("test.library.v1.Book")
        .expect("book");
    let mut b = DynamicMessage::new(book);
    b.set_field_by_name("name", Value::String("shelves/s/books/b".into()));
    b.set_field_by_name("genre", Value::EnumNumber(2));
    b.set_field_by_name("pages", Value::I64(7));
    let mut response = DynamicMessage::new(desc);
    response.set_field_by_name("books", Value::List(vec![Value::Message(b)]));
    response.set_field_by_name("names", Value::List(vec![Value::String("n1".into())]));
    let bytes = transcode::encode(&response);

    let whole = transcode::response(binding(&router, "ListBooks"), &bytes).expect("json");
    assert_eq!(whole["books"][0]["genre"], "SCIENCE");
    assert_eq!(whole["books"][0]["pages"], "7");
    assert_eq!(whole["books"][0]["authors"], json!([]));
    assert!(whole["books"][0].get("publishTime").is_none());
    let names = transcode::response(binding(&router, "ListBookNames"), &bytes).expect("json");
    assert_eq!(names, json!(["n1"]));
    // The text the unary path writes says the same.
    for (method, tree) in [("ListBooks", &whole), ("ListBookNames", &names)] {
        let text = transcode::response_text(binding(&router, method), &bytes).expect("text");
        let parsed: serde_json::Value = serde_json::from_slice(&text).expect("valid JSON");
        assert_eq!(&parsed, tree, "{method}");
    }
}

fn refused(file: &str) -> String {
    let pool = compile(file);
    match rules::bindings(&pool, &[]) {
        Ok(b) => panic!("{file}: expected a refusal, got {} bindings", b.len()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn conflicting_and_bad_rules_are_refused() {
    let e = refused("conflict.proto");
    assert!(e.contains("conflicting HTTP routes"), "{e}");
    assert!(e.contains("GetThing") && e.contains("FetchThing"), "{e}");
    let e = refused("ambiguous.proto");
    assert!(e.contains("ambiguous HTTP routes"), "{e}");
    let e = refused("bad_field.proto");
    assert!(e.contains("no field \"nope\""), "{e}");
}

#[test]
fn template_grammar() {
    let pool = compile("library.proto");
    let input = pool
        .get_message_by_name("test.library.v1.GetBookRequest")
        .expect("message");
    for bad in [
        "v1/{name}",
        "/v1/{name",
        "/v1/{name=**}/x",
        "/v1//x",
        "/v1/{name=a/{book_id}}",
        "/v1/{name}/{name}",
        "/v1/x:",
    ] {
        assert!(
            rules::parse_template(bad, &input).is_err(),
            "{bad} should be refused"
        );
    }
    let t = rules::parse_template("/v1/{name=shelves/*/books/*}:read", &input).expect("ok");
    assert_eq!(t.verb.as_deref(), Some("read"));
    assert_eq!(t.segments.len(), 5);
}

#[test]
fn every_public_method_is_served() {
    let pool = DescriptorPool::decode(nordlys_proto::FILE_DESCRIPTOR_SET).expect("pool");
    let bindings = rules::bindings(&pool, &[]).expect("the public API's rules are valid");
    for service in pool.services() {
        if !service.full_name().starts_with("nordlys.v1.") {
            continue;
        }
        for method in service.methods() {
            assert!(
                bindings
                    .iter()
                    .any(|b| b.rpc.full_name() == method.full_name()),
                "{} has no HTTP binding",
                method.full_name()
            );
        }
    }
}

#[test]
fn openapi_describes_every_binding() {
    let (pool, router) = library();
    let doc = openapi::document(&pool, router.bindings());
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    let undelete = &paths["/v1/shelves/{shelf}/books/{book}:undelete"]["post"];
    assert_eq!(undelete["operationId"], "Library_UndeleteBook");
    assert_eq!(undelete["summary"], "Brings a deleted book back.");
    assert!(paths.contains_key("/v1/books/{book_id}"));
    assert_eq!(
        paths["/v1/books/{book_id}"]["get"]["operationId"],
        "Library_GetBook_1"
    );
    assert!(paths["/v1/shelves/{shelf}/books/{book}"]
        .as_object()
        .expect("item")
        .contains_key("tag"));
    let list = &paths["/v1/shelves/{shelf}/books"]["get"];
    let params: Vec<&str> = list["parameters"]
        .as_array()
        .expect("params")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for want in [
        "shelf",
        "pageSize",
        "filter.author",
        "filter.pages.min",
        "genres",
        "since",
    ] {
        assert!(params.contains(&want), "{want} missing from {params:?}");
    }
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["test.library.v1.Genre"]["enum"],
        json!(["GENRE_UNSPECIFIED", "FICTION", "SCIENCE"])
    );
    assert_eq!(
        schemas["test.library.v1.Book"]["properties"]["publishTime"]["readOnly"],
        true
    );
    assert_eq!(schemas["test.library.v1.Book"]["description"], "A book.");
    let watch = &paths["/v1/shelves/{shelf}/books:watch"]["get"]["responses"]["200"]["content"];
    assert!(watch.get("application/x-ndjson").is_some());
    assert!(yaml::to_yaml(&doc).contains("\"openapi\": \"3.1.0\""));
}

#[test]
fn status_json_of_plain_status() {
    let pool = DescriptorPool::decode(nordlys_proto::FILE_DESCRIPTOR_SET).expect("pool");
    let body = status_json(&tonic::Status::not_found("no such project"), &pool);
    assert_eq!(
        body,
        json!({"code": 5, "message": "no such project", "details": []})
    );
}

/// The whole HTTP pipeline in process, against a fake Library service:
/// the transcoded request reaches the tonic service with the caller's
/// headers as metadata, unary answers come back as JSON, gRPC errors as
/// google.rpc.Status, and server streams as newline-delimited JSON.
mod pipeline {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::time::Duration;

    use axum::body::Body as AxumBody;
    use bytes::Bytes;
    use futures::future::BoxFuture;
    use http::Request;
    use prost::Message;
    use prost_reflect::{DynamicMessage, Value};
    use serde_json::json;
    use tonic::server::NamedService;
    use tonic::Status;

    use super::super::invoke::RawCodec;
    use super::super::server::serve_one;
    use super::super::{HttpGateway, HttpOptions};
    use super::compile;

    #[derive(Debug, Clone)]
    struct FakeLibrary(prost_reflect::DescriptorPool);

    impl NamedService for FakeLibrary {
        const NAME: &'static str = "test.library.v1.Library";
    }

    fn book(pool: &prost_reflect::DescriptorPool, name: &str, title: &str) -> Bytes {
        let desc = pool
            .get_message_by_name("test.library.v1.Book")
            .expect("Book");
        let mut b = DynamicMessage::new(desc);
        b.set_field_by_name("name", Value::String(name.to_string()));
        b.set_field_by_name("title", Value::String(title.to_string()));
        b.encode_to_vec().into()
    }

    impl tower::Service<http::Request<tonic::body::Body>> for FakeLibrary {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
            let pool = self.0.clone();
            Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(RawCodec);
                let path = req.uri().path().to_string();
                let response = match path.as_str() {
                    "/test.library.v1.Library/GetBook" => {
                        let svc = tower::service_fn(move |r: tonic::Request<Bytes>| {
                            let pool = pool.clone();
                            async move {
                                let desc = pool
                                    .get_message_by_name("test.library.v1.GetBookRequest")
                                    .expect("request");
                                let request = DynamicMessage::decode(desc, r.get_ref().clone())
                                    .map_err(|e| Status::internal(e.to_string()))?;
                                let name = request
                                    .get_field_by_name("name")
                                    .and_then(|v| v.as_str().map(str::to_string))
                                    .unwrap_or_default();
                                if name.ends_with("/missing") {
                                    return Err(Status::not_found("no such book"));
                                }
                                // The caller's headers, as the service sees them.
                                let auth = r
                                    .metadata()
                                    .get("authorization")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_string();
                                let timeout = r
                                    .metadata()
                                    .get("grpc-timeout")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_string();
                                let mut response = tonic::Response::new(book(&pool, &name, &auth));
                                response
                                    .metadata_mut()
                                    .insert("x-seen-timeout", timeout.parse().expect("ascii"));
                                Ok(response)
                            }
                        });
                        grpc.unary(svc, req).await
                    }
                    "/test.library.v1.Library/WatchBooks" => {
                        let svc = tower::service_fn(move |_: tonic::Request<Bytes>| {
                            let pool = pool.clone();
                            async move {
                                let items = vec![
                                    Ok(book(&pool, "shelves/s/books/1", "one")),
                                    Ok(book(&pool, "shelves/s/books/2", "two")),
                                    Err(Status::aborted("shelf closed")),
                                ];
                                Ok::<_, Status>(tonic::Response::new(futures::stream::iter(items)))
                            }
                        });
                        grpc.server_streaming(svc, req).await
                    }
                    _ => Status::unimplemented(path).into_http(),
                };
                Ok(response)
            })
        }
    }

    fn gateway() -> HttpGateway {
        let here = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut compiler =
            protox::Compiler::new([here.join("src/http/testdata"), here.join("../proto/proto")])
                .expect("protox");
        compiler.include_imports(true).include_source_info(true);
        compiler.open_files(["library.proto"]).expect("compiles");
        let encoded = compiler.encode_file_descriptor_set();
        let pool = compile("library.proto");
        HttpGateway::new(
            &encoded,
            &["test.library.v1.Library"],
            tonic::service::Routes::new(FakeLibrary(pool)),
            None,
            HttpOptions {
                max_body_bytes: 1024,
                default_timeout: Duration::from_secs(5),
                max_timeout: Duration::from_secs(10),
                allow_unknown_fields: false,
                metrics: None,
            },
        )
        .expect("gateway")
    }

    async fn send(
        gateway: &HttpGateway,
        request: Request<AxumBody>,
    ) -> (u16, http::HeaderMap, String) {
        let peer: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let response = match serve_one(gateway, peer, request).await {
            Ok(r) => r,
            Err(e) => e.into_response(&gateway.pool),
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn unary_calls_reach_the_service_with_metadata() {
        let gateway = gateway();
        let request = Request::get("/v1/shelves/s/books/b")
            .header("authorization", "Bearer k")
            .header("x-request-timeout", "2")
            .body(AxumBody::empty())
            .expect("request");
        let (status, headers, body) = send(&gateway, request).await;
        assert_eq!(status, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(json["name"], "shelves/s/books/b");
        assert_eq!(json["title"], "Bearer k");
        // The deadline travelled as grpc-timeout; answer metadata comes back.
        let seen = headers
            .get("grpc-metadata-x-seen-timeout")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            seen.ends_with('u') || seen.ends_with('m') || seen.ends_with('n'),
            "{seen}"
        );

        let request = Request::get("/v1/shelves/s/books/missing")
            .body(AxumBody::empty())
            .expect("request");
        let (status, _, body) = send(&gateway, request).await;
        assert_eq!(status, 404);
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            json,
            json!({"code": 5, "message": "no such book", "details": []})
        );

        let request = Request::post("/v1/shelves/s/books")
            .body(AxumBody::from(vec![b' '; 2048]))
            .expect("request");
        let (status, _, body) = send(&gateway, request).await;
        assert_eq!(status, 400);
        assert!(
            body.contains("larger than the limit of 1024 bytes"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn server_streams_are_newline_delimited_json() {
        let gateway = gateway();
        let request = Request::get("/v1/shelves/s/books:watch")
            .body(AxumBody::empty())
            .expect("request");
        let (status, headers, body) = send(&gateway, request).await;
        assert_eq!(status, 200);
        assert_eq!(
            headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/x-ndjson")
        );
        let lines: Vec<serde_json::Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).expect("line"))
            .collect();
        assert_eq!(lines.len(), 3, "{body}");
        assert_eq!(lines[0]["result"]["title"], "one");
        assert_eq!(lines[1]["result"]["name"], "shelves/s/books/2");
        assert_eq!(lines[2]["error"]["code"], 10);
        assert_eq!(lines[2]["error"]["message"], "shelf closed");
    }
}
