//! grpc-gateway v2 as a peer: the same HTTP requests to Nordlys's own JSON
//! port and to grpc-gateway's reverse proxy (peers/grpc-gateway, built by
//! `peers/grpc-gateway/setup`) in front of the same gateway's gRPC port,
//! compared by status, a few headers and the body as JSON.
//!
//! Both fronts reach one backend, so a request that makes something makes
//! it under an id of its side's own (`$S` in a case is `nrdx` for Nordlys,
//! `ggwx` for grpc-gateway, and both read as `SIDE` when compared); create
//! times, etags, API key names and secrets of such resources differ by
//! nature and compare equal when both are well-formed. Everything else must
//! be the same, or be listed on the case as a known difference with its
//! reason, or be one of the three that show on many cases in one precise
//! form ([`everywhere`]); each difference is a row of
//! docs/grpc-gateway-differences.md. An unlisted difference fails the test,
//! and so does a listed one that no longer shows.
//!
//! Without the peer binary (or the one NORDLYS_GRPC_GATEWAY_PEER names) the
//! test is skipped with a message; with NORDLYS_REQUIRE_PEERS=1 it fails
//! instead. NORDLYS_PEER_VERBOSE=1 prints every case's answers.

mod http_common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use http_common::{Http, Reply};
use nordlys_proto::pb::nordlys::v1::ResourceCounts;
use nordlys_tests::{log_tail, Stack, StackOpts, OPERATOR_KEY};
use serde_json::{json, Value as Json};

// ---------------------------------------------------------------------------
// The peer process

/// grpc-gateway-peer, killed on drop.
struct Peer {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Peer {
    /// The peer binary, or `None` (with a message) when it is not built
    /// and not required.
    fn binary() -> Option<PathBuf> {
        let path = std::env::var_os("NORDLYS_GRPC_GATEWAY_PEER")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../peers/grpc-gateway/bin/grpc-gateway-peer")
            });
        if path.is_file() {
            return Some(path);
        }
        let why = format!(
            "{} not found: run peers/grpc-gateway/setup (Go and buf on PATH)",
            path.display()
        );
        if std::env::var("NORDLYS_REQUIRE_PEERS").is_ok_and(|v| v == "1") {
            panic!("{why} (NORDLYS_REQUIRE_PEERS=1)");
        }
        eprintln!("SKIPPED: grpc-gateway peer comparison: {why}");
        None
    }

    /// Starts the peer in front of `upstream` on a loopback port of its own.
    fn start(binary: &Path, upstream: SocketAddr) -> Peer {
        let dir = tempfile::Builder::new()
            .prefix("nordlys-grpc-gateway-peer-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let log = dir.path().join("grpc-gateway-peer.log");
        let log_file = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let mut child = Command::new(binary)
            .args(["-upstream", &upstream.to_string(), "-listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        const READY: &str = "grpc-gateway-peer listening on ";
        let addr = loop {
            match rx.recv_timeout(nordlys_tests::READY_TIMEOUT) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix(READY) {
                        break addr
                            .trim()
                            .parse()
                            .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "grpc-gateway-peer did not print {READY:?} ({e})\n{}",
                        log_tail(&log)
                    );
                }
            }
        };
        Peer {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- grpc-gateway-peer log tail\n{}", log_tail(&self.log));
        }
    }
}

// ---------------------------------------------------------------------------
// Known differences

/// A way Nordlys's JSON port answers differently from grpc-gateway's; the
/// id is a row of docs/grpc-gateway-differences.md.
#[derive(Debug)]
struct Difference {
    id: &'static str,
    reason: &'static str,
}

static UNSET_MESSAGE_NULL: Difference = Difference {
    id: "unset-message-null",
    reason: "grpc-gateway (protojson EmitUnpopulated) writes an unset message field as null; \
             Nordlys leaves it out; proto3 JSON parsers read both as unset",
};
static HOP_METADATA: Difference = Difference {
    id: "hop-metadata",
    reason: "grpc-gateway passes the HTTP/2 headers of its own gRPC hop (content-type, date) on \
             as Grpc-Metadata-*; Nordlys calls the service in process and sends only what the \
             service set",
};
static WWW_AUTHENTICATE: Difference = Difference {
    id: "www-authenticate",
    reason: "a 401's WWW-Authenticate: Nordlys sends the challenge `Bearer` (RFC 9110, RFC 6750); \
             grpc-gateway sends the status message, which is not a challenge, or on a stream \
             nothing",
};
static FRONT_ERROR_TEXT: Difference = Difference {
    id: "front-error-text",
    reason: "an error raised by the HTTP front itself, before any service: Nordlys names the \
             parameter or field and the fault, with a google.rpc.BadRequest detail; \
             grpc-gateway has protojson's or Go's text and no details",
};
static UNKNOWN_BODY_FIELDS: Difference = Difference {
    id: "unknown-body-fields",
    reason: "unknown JSON fields and enum value names: Nordlys refuses them (400) unless \
             http_allow_unknown_fields is set; grpc-gateway drops them silently (DiscardUnknown)",
};
static IGNORED_QUERY: Difference = Difference {
    id: "ignored-query-parameters",
    reason: "a query parameter that sets nothing (unknown, the body's field, a field the path \
             binds, any with body \"*\"): Nordlys refuses it; grpc-gateway ignores it",
};
static BODY_NOT_TAKEN: Difference = Difference {
    id: "body-not-taken",
    reason: "a body on a method that takes none: Nordlys refuses it; grpc-gateway ignores it",
};
static TRAILING_DATA: Difference = Difference {
    id: "trailing-data",
    reason: "data after the JSON value: Nordlys refuses it; grpc-gateway decodes the first value \
             and ignores the rest",
};
static DUPLICATE_KEY: Difference = Difference {
    id: "duplicate-key",
    reason: "an object with the same key twice: Nordlys takes the last value; protojson \
             (grpc-gateway) refuses it",
};
static MASK_JSON_NAMES: Difference = Difference {
    id: "field-mask-json-names",
    reason: "a FieldMask query parameter in its JSON form (lowerCamelCase paths): Nordlys \
             converts the paths to field names; grpc-gateway passes the text through and the \
             service refuses paths that are not field names",
};
static IMPLIED_MASK: Difference = Difference {
    id: "implied-mask-name-etag",
    reason: "a PATCH without update_mask: both derive the mask from the body; Nordlys leaves \
             out name and etag (which resource, which version: AIP-134, AIP-154), grpc-gateway \
             puts them in and the service refuses to update them",
};
static EMPTY_BODY: Difference = Difference {
    id: "empty-body",
    reason: "an empty body for a body field: Nordlys leaves the field unset, grpc-gateway sets \
             it to an empty message; the service's 400 then names other fields",
};
static METHOD_NOT_ALLOWED: Difference = Difference {
    id: "method-not-allowed",
    reason: "a path served with other methods: Nordlys answers 405 with Allow (RFC 9110); \
             grpc-gateway 501 without Allow (both code 12 UNIMPLEMENTED)",
};
static INVALID_UTF8_PATH: Difference = Difference {
    id: "invalid-utf8-path",
    reason: "a path value that is not UTF-8 once percent-decoded: Nordlys answers 400; \
             grpc-gateway passes it on and fails to marshal it (500 INTERNAL)",
};
static ESCAPED_SLASH: Difference = Difference {
    id: "escaped-slash",
    reason: "%2F in a single-segment variable: Nordlys decodes it into the value, as the \
             HttpRule mapping says, and the service judges the name; grpc-gateway's default \
             unescaping decodes it before routing and finds no route (404)",
};
static SERVER_STREAMS: Difference = Difference {
    id: "server-streams",
    reason: "server streams: Nordlys says application/x-ndjson and answers an error before the \
             first message as a plain google.rpc.Status; grpc-gateway says application/json and \
             wraps that error in {\"error\": ...}",
};
static OVERSIZED_BODY: Difference = Difference {
    id: "oversized-body",
    reason: "a body over 4 MiB: Nordlys refuses it at its port (400 INVALID_ARGUMENT); \
             grpc-gateway forwards it and the gRPC server refuses it (400 OUT_OF_RANGE); \
             neither answers 413",
};
static BARE_431: Difference = Difference {
    id: "bare-414-431",
    reason: "414 and 431 come from the HTTP server before any routing, with no google.rpc.Status: \
             hyper's (Nordlys) have no body, Go's a line of text; hyper takes request targets up \
             to 64 KiB, Go up to its 1 MiB header limit",
};
static X_REQUEST_TIMEOUT: Difference = Difference {
    id: "x-request-timeout",
    reason: "Nordlys reads X-Request-Timeout as the call's deadline; grpc-gateway does not know \
             the header",
};
/// Not between the two JSON fronts: checked on the gRPC port.
static UNDECODABLE_PROTOBUF: Difference = Difference {
    id: "undecodable-protobuf",
    reason: "the gRPC port answers a request that is not valid protobuf with INTERNAL (tonic, as \
             grpc-go does), where Google's APIs answer INVALID_ARGUMENT",
};

/// Every difference; each must show in a run and have a row in the doc.
static ALL: [&Difference; 20] = [
    &UNSET_MESSAGE_NULL,
    &HOP_METADATA,
    &WWW_AUTHENTICATE,
    &FRONT_ERROR_TEXT,
    &UNKNOWN_BODY_FIELDS,
    &IGNORED_QUERY,
    &BODY_NOT_TAKEN,
    &TRAILING_DATA,
    &DUPLICATE_KEY,
    &MASK_JSON_NAMES,
    &IMPLIED_MASK,
    &EMPTY_BODY,
    &METHOD_NOT_ALLOWED,
    &INVALID_UTF8_PATH,
    &ESCAPED_SLASH,
    &SERVER_STREAMS,
    &OVERSIZED_BODY,
    &BARE_431,
    &X_REQUEST_TIMEOUT,
    &UNDECODABLE_PROTOBUF,
];

/// The differences that may show on any case, each in one precise form:
/// a key only grpc-gateway has, with `null`; the two hop headers only
/// grpc-gateway sends; on a 401 from both, `Bearer` against another
/// WWW-Authenticate.
fn everywhere(d: &Diff, n: &Seen, p: &Seen) -> Option<&'static Difference> {
    if d.peer_null {
        return Some(&UNSET_MESSAGE_NULL);
    }
    let only_peer = |name: &str| !n.metadata.contains(name) && p.metadata.contains(name);
    match d.path.as_str() {
        "header/grpc-metadata-content-type" if only_peer("grpc-metadata-content-type") => {
            Some(&HOP_METADATA)
        }
        "header/grpc-metadata-date" if only_peer("grpc-metadata-date") => Some(&HOP_METADATA),
        "header/www-authenticate"
            if n.status == 401
                && p.status == 401
                && n.header("www-authenticate") == Some("bearer")
                && p.header("www-authenticate") != Some("bearer") =>
        {
            Some(&WWW_AUTHENTICATE)
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Cases

/// Which side a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Nordlys,
    Peer,
}

impl Side {
    /// What `$S` stands for in this side's requests.
    fn tag(self) -> &'static str {
        match self {
            Side::Nordlys => "nrdx",
            Side::Peer => "ggwx",
        }
    }
}

/// Who calls.
#[derive(Debug, Clone, Copy)]
enum Auth {
    Tenant,
    Operator,
    /// The tenant with no quota at all.
    Poor,
    None,
    Header(&'static str),
}

/// One request, sent to both fronts.
struct Case {
    name: String,
    method: &'static str,
    /// With `$S` for the side's tag.
    path: String,
    body: String,
    headers: Vec<(String, String)>,
    auth: Auth,
    /// Written by hand on a TCP connection of its own, for what the HTTP
    /// client refuses to send (request lines over 64 KiB).
    wire: bool,
    /// Where the answers differ (`status`, `header/NAME`, `body`,
    /// `body/field/...`; a prefix covers what is below it) and why.
    known: Vec<(&'static str, &'static Difference)>,
}

fn case(name: &str, method: &'static str, path: &str, body: &str) -> Case {
    Case {
        name: name.to_owned(),
        method,
        path: path.to_owned(),
        body: body.to_owned(),
        headers: Vec::new(),
        auth: Auth::Tenant,
        wire: false,
        known: Vec::new(),
    }
}

fn get(name: &str, path: &str) -> Case {
    case(name, "GET", path, "")
}

fn delete(name: &str, path: &str) -> Case {
    case(name, "DELETE", path, "")
}

fn post(name: &str, path: &str, body: Json) -> Case {
    case(name, "POST", path, &body.to_string()).header("content-type", "application/json")
}

fn patch(name: &str, path: &str, body: Json) -> Case {
    case(name, "PATCH", path, &body.to_string()).header("content-type", "application/json")
}

impl Case {
    fn auth(mut self, auth: Auth) -> Case {
        self.auth = auth;
        self
    }

    fn header(mut self, name: &str, value: &str) -> Case {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sent by hand on a connection of its own.
    fn wire(mut self) -> Case {
        self.wire = true;
        self
    }

    /// The answers differ at `at` (and below), for `why`.
    fn differs(mut self, at: &'static str, why: &'static Difference) -> Case {
        self.known.push((at, why));
        self
    }

    /// Status and body differ (one side refuses what the other does).
    fn answers_differ(self, why: &'static Difference) -> Case {
        self.differs("status", why).differs("body", why)
    }

    /// The same status and code; the message and the details differ.
    fn error_differs(self, why: &'static Difference) -> Case {
        self.differs("body/message", why)
            .differs("body/details", why)
    }

    /// A 400 both fronts raise themselves, in their own words.
    fn front_error(self) -> Case {
        self.error_differs(&FRONT_ERROR_TEXT)
    }
}

/// What a front answered, as compared.
#[derive(Debug)]
struct Seen {
    status: u16,
    headers: Vec<(&'static str, Option<String>)>,
    /// The names of the `Grpc-Metadata-*` headers.
    metadata: BTreeSet<String>,
    /// JSON; NDJSON as `{"ndjson": [...]}`; anything else as a string.
    body: Json,
    raw: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.as_deref())
    }
}

/// Headers compared by value.
const HEADERS: [&str; 3] = ["content-type", "www-authenticate", "allow"];

fn seen(reply: Result<Reply, String>) -> Seen {
    let reply = match reply {
        Ok(r) => r,
        Err(e) => {
            return Seen {
                status: 0,
                headers: Vec::new(),
                metadata: BTreeSet::new(),
                body: Json::String(format!("<no answer: {e}>")),
                raw: e,
            }
        }
    };
    let raw = reply.text();
    let body = if reply.body.is_empty() {
        Json::String("<empty>".to_owned())
    } else if let Ok(json) = serde_json::from_slice(&reply.body) {
        json
    } else {
        let lines: Option<Vec<Json>> = raw
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).ok())
            .collect();
        match lines {
            Some(lines) if !lines.is_empty() => json!({ "ndjson": lines }),
            _ => Json::String(format!("<not JSON> {raw}")),
        }
    };
    Seen {
        status: reply.status,
        headers: HEADERS
            .iter()
            .map(|h| {
                (
                    *h,
                    reply
                        .headers
                        .get(*h)
                        .and_then(|v| v.to_str().ok())
                        .map(|v| v.to_ascii_lowercase()),
                )
            })
            .collect(),
        metadata: reply
            .headers
            .keys()
            .map(|k| k.as_str())
            .filter(|k| k.starts_with("grpc-metadata-"))
            .map(str::to_owned)
            .collect(),
        body,
        raw,
    }
}

/// `SIDE` for either side's tag.
fn untag(s: &str) -> String {
    s.replace(Side::Nordlys.tag(), "SIDE")
        .replace(Side::Peer.tag(), "SIDE")
}

/// An RFC 3339 time as proto3 JSON writes it: UTC (`Z`) and 0, 3, 6 or 9
/// fractional digits.
fn canonical_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let shape = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b.last() == Some(&b'Z');
    if !shape {
        return false;
    }
    let fraction = &s[19..s.len() - 1];
    fraction.is_empty()
        || (fraction.starts_with('.')
            && [4, 7, 10].contains(&fraction.len())
            && fraction[1..].bytes().all(|d| d.is_ascii_digit()))
}

/// Two strings the comparison takes as the same: equal but for the sides'
/// tags; two well-formed times (of two resources made apart); two etags or
/// API key secrets; two API key names (their ids are made by the service).
fn same_string(key: Option<&str>, a: &str, b: &str) -> bool {
    if untag(a) == untag(b) {
        return true;
    }
    if canonical_time(a) && canonical_time(b) {
        return true;
    }
    if matches!(key, Some("etag" | "secret")) && !a.is_empty() && !b.is_empty() {
        return true;
    }
    match (a.split_once("/apiKeys/"), b.split_once("/apiKeys/")) {
        (Some((x, i)), Some((y, j))) => x == y && !i.contains('/') && !j.contains('/'),
        _ => false,
    }
}

/// A place where the two answers differ.
#[derive(Debug)]
struct Diff {
    /// `status`, `header/NAME` or `body/...`.
    path: String,
    /// Only grpc-gateway has the key there, and its value is `null`.
    peer_null: bool,
}

fn diff(at: &str, key: Option<&str>, a: &Json, b: &Json, out: &mut Vec<Diff>) {
    match (a, b) {
        (Json::Object(x), Json::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let path = format!("{at}/{k}");
                match (x.get(k), y.get(k)) {
                    (Some(v), Some(w)) => diff(&path, Some(k), v, w, out),
                    (None, Some(Json::Null)) => out.push(Diff {
                        path,
                        peer_null: true,
                    }),
                    _ => out.push(Diff {
                        path,
                        peer_null: false,
                    }),
                }
            }
        }
        (Json::Array(x), Json::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                diff(&format!("{at}/{i}"), key, v, w, out);
            }
        }
        (Json::String(x), Json::String(y)) if same_string(key, x, y) => {}
        _ if a == b => {}
        _ => out.push(Diff {
            path: at.to_owned(),
            peer_null: false,
        }),
    }
}

/// Where two answers differ.
fn differences(n: &Seen, p: &Seen) -> Vec<Diff> {
    let mut out = Vec::new();
    let mut push = |path: String| {
        out.push(Diff {
            path,
            peer_null: false,
        })
    };
    if n.status == 0 || p.status == 0 {
        push("no answer".to_owned());
    }
    if n.status != p.status {
        push("status".to_owned());
    }
    for ((name, a), (_, b)) in n.headers.iter().zip(&p.headers) {
        if a != b {
            push(format!("header/{name}"));
        }
    }
    for name in n.metadata.symmetric_difference(&p.metadata) {
        push(format!("header/{name}"));
    }
    diff("body", None, &n.body, &p.body, &mut out);
    out
}

/// Whether a listed place covers a path where the answers differ: the
/// same place or one below it; `*` stands for any one step.
fn covers(listed: &str, path: &str) -> bool {
    let mut steps = path.split('/');
    listed
        .split('/')
        .all(|want| steps.next().is_some_and(|step| want == "*" || want == step))
}

/// A bodiless HTTP/1.1 request written by hand on a new connection, and
/// the answer read until the server closes it.
async fn wire_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    // A server may answer and close before it has read it all.
    let _ = tcp.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut answer))
        .await
        .map_err(|_| "no answer within 30 s".to_owned())?
        .map_err(|e| format!("read: {e}"))?;
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no header end in {:?}", String::from_utf8_lossy(&answer)))?;
    let head = String::from_utf8_lossy(&answer[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))?;
    let mut map = http::HeaderMap::new();
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        let name = http::HeaderName::from_bytes(k.trim().as_bytes()).map_err(|e| e.to_string())?;
        let value = http::HeaderValue::from_str(v.trim()).map_err(|e| e.to_string())?;
        map.append(name, value);
    }
    let mut body = answer[end + 4..].to_vec();
    if map
        .get("transfer-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        let mut plain = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16)
                .map_err(|e| format!("bad chunk size: {e}"))?;
            if size == 0 {
                break;
            }
            let chunk = rest
                .get(eol + 2..eol + 2 + size)
                .ok_or("a chunk runs past the end")?;
            plain.extend_from_slice(chunk);
            rest = rest.get(eol + 4 + size..).unwrap_or_default();
        }
        body = plain;
    }
    Ok(Reply {
        status,
        headers: map,
        body: Bytes::from(body),
    })
}

/// Sends the cases to both fronts and checks each against its known
/// differences.
struct Runner {
    nordlys: Http,
    peer: Http,
    nordlys_addr: SocketAddr,
    peer_addr: SocketAddr,
    tenant_key: String,
    poor_key: String,
    /// The cases whose differences are not the listed ones, described.
    problems: Vec<String>,
    /// Difference id -> the cases that showed it.
    shown: std::collections::BTreeMap<&'static str, Vec<String>>,
    cases: usize,
    verbose: bool,
}

impl Runner {
    async fn send(&self, side: Side, c: &Case) -> Seen {
        let http = match side {
            Side::Nordlys => &self.nordlys,
            Side::Peer => &self.peer,
        };
        let authorization = match c.auth {
            Auth::Tenant => Some(format!("Bearer {}", self.tenant_key)),
            Auth::Operator => Some(format!("Bearer {OPERATOR_KEY}")),
            Auth::Poor => Some(format!("Bearer {}", self.poor_key)),
            Auth::None => None,
            Auth::Header(v) => Some(v.to_owned()),
        };
        let path = c.path.replace("$S", side.tag());
        let body = c.body.replace("$S", side.tag());
        let mut headers: Vec<(&str, &str)> = c
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Some(a) = &authorization {
            headers.push(("authorization", a));
        }
        if c.wire {
            let addr = match side {
                Side::Nordlys => self.nordlys_addr,
                Side::Peer => self.peer_addr,
            };
            return seen(wire_send(addr, c.method, &path, &headers).await);
        }
        seen(
            http.try_send(c.method, &path, Bytes::from(body), &headers)
                .await,
        )
    }

    /// Records that case `name` showed `why`.
    fn show(&mut self, why: &Difference, name: &str) {
        let cases = self.shown.entry(why.id).or_default();
        if cases.last().map(String::as_str) != Some(name) {
            cases.push(name.to_owned());
        }
    }

    async fn run(&mut self, c: Case) {
        self.cases += 1;
        let n = self.send(Side::Nordlys, &c).await;
        let p = self.send(Side::Peer, &c).await;
        let mut unlisted = Vec::new();
        let mut listed = Vec::new();
        for d in differences(&n, &p) {
            if let Some(why) = everywhere(&d, &n, &p) {
                self.show(why, &c.name);
            } else if c.known.iter().any(|(at, _)| covers(at, &d.path)) {
                listed.push(d.path);
            } else {
                unlisted.push(d.path);
            }
        }
        let mut gone = Vec::new();
        for (at, why) in &c.known {
            if listed.iter().any(|path| covers(at, path)) {
                self.show(why, &c.name);
            } else {
                gone.push(format!("{at} ({})", why.id));
            }
        }
        if self.verbose {
            eprintln!(
                "{}: Nordlys {} {:?} / grpc-gateway {} {:?}; listed {listed:?}",
                c.name, n.status, n.headers, p.status, p.headers
            );
        }
        if unlisted.is_empty() && gone.is_empty() {
            return;
        }
        let short = |s: &str| {
            let s = s.replace('\n', " ");
            if s.len() <= 1000 {
                return s;
            }
            let mut head = 600;
            while !s.is_char_boundary(head) {
                head -= 1;
            }
            let mut tail = s.len() - 300;
            while !s.is_char_boundary(tail) {
                tail += 1;
            }
            format!("{} ... {}", &s[..head], &s[tail..])
        };
        self.problems.push(format!(
            "* {}: {} {}\n  unlisted differences: {unlisted:?}\n  listed but not seen: {gone:?}\n  \
             Nordlys:      {} {:?} {:?} {}\n  grpc-gateway: {} {:?} {:?} {}",
            c.name,
            c.method,
            c.path,
            n.status,
            n.headers,
            n.metadata,
            short(&n.raw),
            p.status,
            p.headers,
            p.metadata,
            short(&p.raw),
        ));
    }
}

// ---------------------------------------------------------------------------
// The comparison

#[tokio::test]
async fn grpc_gateway_answers_like_nordlys() {
    let Some(binary) = Peer::binary() else {
        return;
    };
    let stack = Stack::start_with(StackOpts::default()).await;
    let tenant = stack.tenant("peer").await;
    let zero = ResourceCounts {
        projects: 0,
        users: 0,
        networks: 0,
        access_rules: 0,
    };
    let poor = stack.tenant_with_limits("poorpeer", zero).await;
    let peer = Peer::start(&binary, stack.gateway.addr());
    let mut r = Runner {
        nordlys: Http::new(&stack.gateway.http_url()),
        peer: Http::new(&peer.url()),
        nordlys_addr: stack.gateway.http_addr(),
        peer_addr: peer.addr,
        tenant_key: tenant.key.clone(),
        poor_key: poor.key.clone(),
        problems: Vec::new(),
        shown: Default::default(),
        cases: 0,
        verbose: std::env::var_os("NORDLYS_PEER_VERBOSE").is_some(),
    };

    // Every operation of the OpenAPI document without a key: routed to its
    // RPC by both, and refused there.
    let doc = r.nordlys.get("/openapi.json").await.expect(200).json();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let concrete = nordlys_tests::concrete_path(path);
        for method in item.as_object().expect("item").keys() {
            let (method, body) = match method.as_str() {
                "get" => ("GET", ""),
                "delete" => ("DELETE", ""),
                "post" => ("POST", "{}"),
                "patch" => ("PATCH", "{}"),
                other => panic!("unexpected method {other} in the OpenAPI document"),
            };
            let mut c =
                case(&format!("no key: {method} {path}"), method, &concrete, body).auth(Auth::None);
            if path == "/v1/events:watch" {
                c = c.differs("body", &SERVER_STREAMS);
            }
            r.run(c).await;
            operations += 1;
        }
    }
    assert!(operations >= 50, "only {operations} operations");

    for c in cases(&tenant.organization) {
        r.run(c).await;
    }

    // The gRPC port, where neither JSON front is involved.
    undecodable_protobuf(&stack, &tenant.key).await;
    r.show(
        &UNDECODABLE_PROTOBUF,
        "gRPC GetProject with bytes that are not protobuf",
    );

    eprintln!("{} cases compared; differences shown:", r.cases);
    for (id, cases) in &r.shown {
        eprintln!("  {id}: {} case(s), e.g. {}", cases.len(), cases[0]);
    }
    assert!(
        r.problems.is_empty(),
        "{} of {} cases differ otherwise than listed:\n{}",
        r.problems.len(),
        r.cases,
        r.problems.join("\n")
    );
    let never: Vec<&str> = ALL
        .iter()
        .map(|d| d.id)
        .filter(|id| !r.shown.contains_key(id))
        .collect();
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grpc-gateway-differences.md"),
    )
    .unwrap_or_else(|e| panic!("docs/grpc-gateway-differences.md: {e}"));
    let undocumented: Vec<&str> = ALL
        .iter()
        .map(|d| d.id)
        .filter(|id| !doc.contains(&format!("`{id}`")))
        .collect();
    assert!(
        never.is_empty(),
        "differences listed that no case showed (fixed? then drop them here and in the doc): {never:?}"
    );
    assert!(
        undocumented.is_empty(),
        "differences without a row in docs/grpc-gateway-differences.md: {undocumented:?}"
    );
    for d in ALL {
        assert!(!d.reason.is_empty(), "{} has no reason", d.id);
    }
}

/// GetProject on the gRPC port with a message that is not protobuf (a
/// length-delimited field 1 whose length runs past the end): tonic answers
/// INTERNAL.
async fn undecodable_protobuf(stack: &Stack, key: &str) {
    let grpc = Http::http2(&format!("http://{}", stack.gateway.addr()));
    let garbage: &[u8] = &[0x0a, 0xff, 0x01, b'x'];
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(garbage.len() as u32).to_be_bytes());
    frame.extend_from_slice(garbage);
    let authorization = format!("Bearer {key}");
    let reply = grpc
        .send(
            "POST",
            "/nordlys.v1.ProjectService/GetProject",
            frame,
            &[
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("authorization", &authorization),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let code = reply
        .headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no grpc-status in the headers: {reply:?}"));
    // 13 INTERNAL: the listed difference. 3 INVALID_ARGUMENT would be
    // Google's answer: then drop `undecodable-protobuf` from the list.
    assert_eq!(code, "13", "{reply:?} ({})", UNDECODABLE_PROTOBUF.reason);
}

/// The requests, in order: each sees what the ones before it made.
fn cases(org: &str) -> Vec<Case> {
    let mut all = vec![
        // ---- regions
        get("ListRegions", "/v1/regions"),
        get("ListRegions, operator", "/v1/regions").auth(Auth::Operator),
        // ---- projects
        post(
            "CreateProject, JSON names",
            "/v1/projects?projectId=web-$S&requestId=req-web-$S",
            json!({"displayName": "Web $S", "description": "shop", "regions": ["sto1", "osl1"]}),
        ),
        post(
            "CreateProject, proto names",
            "/v1/projects?project_id=snake-$S&request_id=req-snake-$S",
            json!({"display_name": "Snake $S", "regions": ["sto1"]}),
        ),
        post(
            "CreateProject, the same request id again",
            "/v1/projects?projectId=web-$S&requestId=req-web-$S",
            json!({"displayName": "Web $S", "description": "shop", "regions": ["sto1", "osl1"]}),
        ),
        post(
            "CreateProject, already exists",
            "/v1/projects?projectId=web-$S",
            json!({"displayName": "Web $S", "regions": ["sto1"]}),
        ),
        get("GetProject", "/v1/projects/web-$S"),
        get("GetProject, missing", "/v1/projects/missing"),
        get("GetProject, bad id", "/v1/projects/Not_Valid!"),
        get("GetProject, not UTF-8", "/v1/projects/%FF%FE").answers_differ(&INVALID_UTF8_PATH),
        get("GetProject, escaped slash", "/v1/projects/web%2F$S").answers_differ(&ESCAPED_SLASH),
        get("GetProject, escaped letters", "/v1/projects/w%65b-$S"),
        get("GetProject, trailing slash", "/v1/projects/web-$S/")
            .differs("body/message", &FRONT_ERROR_TEXT),
        get("ListProjects", "/v1/projects"),
        get("ListProjects, pageSize", "/v1/projects?pageSize=1"),
        get("ListProjects, page_size", "/v1/projects?page_size=2"),
        get("ListProjects, region", "/v1/projects?region=osl1"),
        get(
            "ListProjects, organization (operator)",
            &format!("/v1/projects?organization={org}"),
        )
        .auth(Auth::Operator),
        get(
            "ListProjects, bad page token",
            "/v1/projects?pageToken=bm90LWEtdG9rZW4",
        ),
        get(
            "ListProjects, pageSize not a number",
            "/v1/projects?pageSize=ten",
        )
        .front_error(),
        get(
            "ListProjects, pageSize twice",
            "/v1/projects?pageSize=1&pageSize=2",
        )
        .front_error(),
        get(
            "ListProjects, pageSize negative",
            "/v1/projects?pageSize=-1",
        ),
        get(
            "ListProjects, pageSize as a float",
            "/v1/projects?pageSize=1.5",
        )
        .front_error(),
        get(
            "ListProjects, pageSize out of int32",
            "/v1/projects?pageSize=4294967296",
        )
        .front_error(),
        get(
            "ListProjects, pageSize as an exponent",
            "/v1/projects?pageSize=1e1",
        )
        .front_error(),
        get(
            "ListProjects, unknown query parameter",
            "/v1/projects?colour=red",
        )
        .answers_differ(&IGNORED_QUERY),
        get(
            "ListProjects, empty query parameter",
            "/v1/projects?region=",
        ),
        get(
            "ListProjects, encoded query",
            "/v1/projects?re%67ion=os%6C1",
        ),
        case("ListProjects, a body", "GET", "/v1/projects", "{}").answers_differ(&BODY_NOT_TAKEN),
        // ---- updates; the ones that change only one side come before the
        // one that sets every field again on both.
        patch(
            "UpdateProject, update_mask",
            "/v1/projects/web-$S?update_mask=description",
            json!({"displayName": "not in the mask", "description": "described"}),
        ),
        patch(
            "UpdateProject, implied mask",
            "/v1/projects/web-$S",
            json!({"description": "implied"}),
        ),
        patch(
            "UpdateProject, two paths",
            "/v1/projects/web-$S?updateMask=display_name,description",
            json!({"displayName": "Both $S", "description": "both"}),
        ),
        patch(
            "UpdateProject, unknown mask path",
            "/v1/projects/web-$S?updateMask=colour",
            json!({"displayName": "x"}),
        ),
        patch(
            "UpdateProject, stale etag in the body",
            "/v1/projects/web-$S",
            json!({"displayName": "x", "etag": "c3RhbGU"}),
        )
        .answers_differ(&IMPLIED_MASK),
        patch(
            "UpdateProject, force as a query parameter",
            "/v1/projects/web-$S?force=true",
            json!({"regions": ["sto1", "osl1"]}),
        ),
        patch(
            "UpdateProject, force not a boolean",
            "/v1/projects/web-$S?force=perhaps",
            json!({"description": "x"}),
        )
        .front_error(),
        patch(
            "UpdateProject, missing",
            "/v1/projects/missing",
            json!({"description": "x"}),
        ),
        patch(
            "UpdateProject, mask of a field not updatable",
            "/v1/projects/web-$S?updateMask=createTime",
            json!({"displayName": "x"}),
        )
        .error_differs(&MASK_JSON_NAMES),
        patch(
            "UpdateProject, lowerCamelCase mask",
            "/v1/projects/web-$S?updateMask=displayName",
            json!({"displayName": "Renamed $S", "description": "not in the mask"}),
        )
        .answers_differ(&MASK_JSON_NAMES),
        patch(
            "UpdateProject, name in the body too",
            "/v1/projects/web-$S",
            json!({"name": "projects/other", "description": "named"}),
        )
        .answers_differ(&IMPLIED_MASK),
        patch(
            "UpdateProject, every field again",
            "/v1/projects/web-$S?update_mask=display_name,description,regions",
            json!({"displayName": "Web $S", "description": "shop", "regions": ["sto1", "osl1"]}),
        ),
        get("GetProject, after the updates", "/v1/projects/web-$S"),
        // ---- request bodies
        post(
            "CreateProject, body field named in the query",
            "/v1/projects?projectId=qp-$S&project.displayName=x",
            json!({"displayName": "Q", "regions": ["sto1"]}),
        )
        .answers_differ(&IGNORED_QUERY),
        get(
            "GetProject, path field in the query",
            "/v1/projects/web-$S?name=projects/q",
        )
        .answers_differ(&IGNORED_QUERY),
        case(
            "CreateProject, malformed JSON",
            "POST",
            "/v1/projects?projectId=bad-$S",
            r#"{"displayName": "x", "regions": ["sto1"]"#,
        )
        .front_error(),
        post(
            "CreateProject, a number for a string",
            "/v1/projects?projectId=bad-$S",
            json!({"displayName": 5, "regions": ["sto1"]}),
        )
        .front_error(),
        post(
            "CreateProject, a string for a list",
            "/v1/projects?projectId=bad-$S",
            json!({"displayName": "x", "regions": "sto1"}),
        )
        .front_error(),
        post(
            "CreateProject, null for a field",
            "/v1/projects?projectId=null-$S",
            json!({"displayName": "x", "regions": ["sto1"], "description": null}),
        ),
        post(
            "CreateProject, unknown field",
            "/v1/projects?projectId=unknown-$S",
            json!({"displayName": "x", "regions": ["sto1"], "colour": "red"}),
        )
        .answers_differ(&UNKNOWN_BODY_FIELDS),
        post(
            "CreateProject, an array body",
            "/v1/projects?projectId=bad-$S",
            json!([1, 2]),
        )
        .front_error(),
        case(
            "CreateProject, duplicate key",
            "POST",
            "/v1/projects?projectId=dup-$S",
            r#"{"displayName": "first", "displayName": "last", "regions": ["sto1"]}"#,
        )
        .answers_differ(&DUPLICATE_KEY),
        case(
            "CreateProject, no body",
            "POST",
            "/v1/projects?projectId=empty-$S",
            "",
        )
        .error_differs(&EMPTY_BODY),
        case(
            "CreateProject, no content type",
            "POST",
            "/v1/projects?projectId=plain-$S",
            r#"{"displayName": "Plain", "regions": ["sto1"]}"#,
        ),
        case(
            "CreateProject, text/plain",
            "POST",
            "/v1/projects?projectId=text-$S",
            r#"{"displayName": "Text", "regions": ["sto1"]}"#,
        )
        .header("content-type", "text/plain"),
        case(
            "CreateProject, trailing data after the JSON",
            "POST",
            "/v1/projects?projectId=trail-$S",
            r#"{"displayName": "Trail", "regions": ["sto1"]} {}"#,
        )
        .answers_differ(&TRAILING_DATA),
        case(
            "CreateProject, body larger than 4 MiB",
            "POST",
            "/v1/projects?projectId=big-$S",
            &format!(
                r#"{{"displayName": "{}"}}"#,
                "x".repeat(4 * 1024 * 1024 + 16)
            ),
        )
        .differs("body/code", &OVERSIZED_BODY)
        .error_differs(&OVERSIZED_BODY),
        post(
            "CreateProject, value over the service's limit",
            "/v1/projects?projectId=long-$S",
            json!({"displayName": "x".repeat(100), "regions": ["sto1"]}),
        ),
        post(
            "CreateProject, empty regions (BadRequest details)",
            "/v1/projects?projectId=noregion-$S",
            json!({"displayName": "x", "regions": []}),
        ),
        post(
            "CreateProject, over quota (QuotaFailure details)",
            "/v1/projects?projectId=over-$S",
            json!({"displayName": "x", "regions": ["sto1"]}),
        )
        .auth(Auth::Poor),
        // ---- routing
        get("unknown path", "/v2/projects").differs("body/message", &FRONT_ERROR_TEXT),
        get("too many segments", "/v1/projects/a/b/c/d").differs("body/message", &FRONT_ERROR_TEXT),
        get("root", "/").differs("body/message", &FRONT_ERROR_TEXT),
        case(
            "PUT on a GET/PATCH/DELETE path",
            "PUT",
            "/v1/projects/p",
            "{}",
        )
        .differs("status", &METHOD_NOT_ALLOWED)
        .differs("header/allow", &METHOD_NOT_ALLOWED)
        .differs("body/message", &METHOD_NOT_ALLOWED),
        case(
            "POST on a GET/PATCH/DELETE path",
            "POST",
            "/v1/projects/p",
            "{}",
        )
        .differs("status", &METHOD_NOT_ALLOWED)
        .differs("header/allow", &METHOD_NOT_ALLOWED)
        .differs("body/message", &METHOD_NOT_ALLOWED),
        case("HEAD of a GET path", "HEAD", "/v1/projects/web-$S", "")
            .differs("status", &METHOD_NOT_ALLOWED)
            .differs("header/allow", &METHOD_NOT_ALLOWED),
        case("OPTIONS", "OPTIONS", "/v1/projects", "")
            .differs("status", &METHOD_NOT_ALLOWED)
            .differs("header/allow", &METHOD_NOT_ALLOWED)
            .differs("body/message", &METHOD_NOT_ALLOWED),
        get(
            "custom verb with GET",
            "/v1/organizations/peer/environments/e:apply",
        ),
        get(
            "a long path",
            &format!("/v1/projects/{}", "a".repeat(60_000)),
        ),
        get(
            "a path longer than 64 KiB",
            &format!("/v1/projects/{}", "a".repeat(70_000)),
        )
        .wire()
        .differs("status", &BARE_431)
        .differs("header/content-type", &BARE_431)
        .differs("body", &BARE_431),
        get("a 2 MiB header", "/v1/projects/web-$S")
            .header("x-padding", &"p".repeat(2 << 20))
            .differs("header/content-type", &BARE_431)
            .differs("body", &BARE_431),
        // ---- headers
        get("grpc-timeout", "/v1/projects/web-$S").header("grpc-timeout", "20S"),
        get("grpc-timeout spent", "/v1/projects/web-$S")
            .header("grpc-timeout", "1n")
            .differs("body/message", &FRONT_ERROR_TEXT),
        get("grpc-timeout malformed", "/v1/projects/web-$S")
            .header("grpc-timeout", "1 minute")
            .front_error(),
        get("X-Request-Timeout", "/v1/projects/web-$S").header("x-request-timeout", "30"),
        get("X-Request-Timeout malformed", "/v1/projects/web-$S")
            .header("x-request-timeout", "soon")
            .answers_differ(&X_REQUEST_TIMEOUT),
        get("Grpc-Metadata header", "/v1/projects/web-$S").header("grpc-metadata-hint", "a"),
        get("bad key", "/v1/projects").auth(Auth::Header("Bearer nlk_not_a_key")),
        get("Basic auth", "/v1/projects").auth(Auth::Header("Basic dXNlcjpwYXNz")),
        get("empty bearer", "/v1/projects").auth(Auth::Header("Bearer ")),
        post(
            "CreateOrganization by a tenant (403)",
            "/v1/organizations?organizationId=other-$S",
            json!({}),
        ),
        post(
            "CreateOrganization, exists (409)",
            "/v1/organizations?organizationId=peer",
            json!({}),
        )
        .auth(Auth::Operator),
    ];

    // ---- networks: a repeated field
    all.extend([
        post(
            "CreateNetwork",
            "/v1/projects/web-$S/networks?networkId=backend",
            json!({"region": "sto1", "cidr": "10.20.0.0/24", "dnsServers": ["10.20.0.2", "10.20.0.3"]}),
        ),
        post(
            "CreateNetwork, bad CIDR",
            "/v1/projects/web-$S/networks?networkId=bad",
            json!({"region": "sto1", "cidr": "10.0.0.1/24"}),
        ),
        post(
            "CreateNetwork, missing project",
            "/v1/projects/none-$S/networks?networkId=n",
            json!({"region": "sto1", "cidr": "10.30.0.0/24"}),
        ),
        get("GetNetwork", "/v1/projects/web-$S/networks/backend"),
        get("ListNetworks", "/v1/projects/web-$S/networks"),
        get(
            "ListNetworks, pageSize",
            "/v1/projects/web-$S/networks?pageSize=1",
        ),
        patch(
            "UpdateNetwork, lowerCamelCase mask",
            "/v1/projects/web-$S/networks/backend?updateMask=dnsServers",
            json!({"dnsServers": ["10.20.0.4"]}),
        )
        .answers_differ(&MASK_JSON_NAMES),
        patch(
            "UpdateNetwork, name in the body too",
            "/v1/projects/web-$S/networks/backend",
            json!({"name": "projects/web-$S/networks/backend", "dnsServers": ["10.20.0.5"]}),
        )
        .answers_differ(&IMPLIED_MASK),
        patch(
            "UpdateNetwork, the repeated field again",
            "/v1/projects/web-$S/networks/backend?update_mask=dns_servers",
            json!({"dnsServers": ["10.20.0.6", "10.20.0.7"]}),
        ),
        patch(
            "UpdateNetwork, implied mask",
            "/v1/projects/web-$S/networks/backend",
            json!({"dnsServers": ["10.20.0.8"]}),
        ),
    ]);

    // ---- access rules: enums, unsigned and integer forms
    all.extend([
        post(
            "CreateAccessRule, enums by name",
            "/v1/projects/web-$S/accessRules?accessRuleId=ssh",
            json!({"region": "sto1", "direction": "INGRESS", "protocol": "TCP",
                   "portRangeMin": 22, "portRangeMax": 22, "remoteCidr": "192.0.2.0/24"}),
        ),
        post(
            "CreateAccessRule, enums by number, ports as strings",
            "/v1/projects/web-$S/accessRules?accessRuleId=dns",
            json!({"region": "sto1", "direction": 1, "protocol": 3,
                   "portRangeMin": "53", "portRangeMax": "53", "remoteCidr": "0.0.0.0/0"}),
        ),
        post(
            "CreateAccessRule, unknown enum name",
            "/v1/projects/web-$S/accessRules?accessRuleId=bad",
            json!({"region": "sto1", "direction": "SIDEWAYS", "protocol": "TCP"}),
        )
        .error_differs(&UNKNOWN_BODY_FIELDS),
        post(
            "CreateAccessRule, enum number out of range",
            "/v1/projects/web-$S/accessRules?accessRuleId=bad",
            json!({"region": "sto1", "direction": 99, "protocol": "TCP"}),
        ),
        post(
            "CreateAccessRule, enum name in lower case",
            "/v1/projects/web-$S/accessRules?accessRuleId=bad",
            json!({"region": "sto1", "direction": "ingress", "protocol": "TCP"}),
        )
        .error_differs(&UNKNOWN_BODY_FIELDS),
        post(
            "CreateAccessRule, negative uint32",
            "/v1/projects/web-$S/accessRules?accessRuleId=bad",
            json!({"region": "sto1", "direction": "INGRESS", "protocol": "TCP", "portRangeMin": -1}),
        )
        .front_error(),
        post(
            "CreateAccessRule, uint32 overflow",
            "/v1/projects/web-$S/accessRules?accessRuleId=bad",
            json!({"region": "sto1", "direction": "INGRESS", "protocol": "TCP",
                   "portRangeMin": 4294967296u64}),
        )
        .front_error(),
        post(
            "CreateAccessRule, fraction for an integer",
            "/v1/projects/web-$S/accessRules?accessRuleId=bad",
            json!({"region": "sto1", "direction": "INGRESS", "protocol": "TCP", "portRangeMin": 22.5}),
        )
        .front_error(),
        post(
            "CreateAccessRule, exponent for an integer",
            "/v1/projects/web-$S/accessRules?accessRuleId=exp",
            json!({"region": "sto1", "direction": "INGRESS", "protocol": "TCP",
                   "portRangeMin": 4.43e2, "portRangeMax": 443, "remoteCidr": "0.0.0.0/0"}),
        ),
        get("GetAccessRule", "/v1/projects/web-$S/accessRules/ssh"),
        get("ListAccessRules", "/v1/projects/web-$S/accessRules"),
        patch(
            "UpdateAccessRule",
            "/v1/projects/web-$S/accessRules/ssh?update_mask=description",
            json!({"description": "SSH from the lab"}),
        ),
        patch(
            "UpdateAccessRule, unknown enum name",
            "/v1/projects/web-$S/accessRules/ssh",
            json!({"protocol": "CARRIER_PIGEON"}),
        )
        .error_differs(&UNKNOWN_BODY_FIELDS),
        delete(
            "DeleteAccessRule, stale etag",
            "/v1/projects/web-$S/accessRules/dns?etag=c3RhbGU",
        ),
        delete("DeleteAccessRule", "/v1/projects/web-$S/accessRules/dns"),
        delete("DeleteAccessRule, again", "/v1/projects/web-$S/accessRules/dns"),
    ]);

    // ---- users and memberships
    let users = format!("/v1/{org}/users");
    all.extend([
        post(
            "CreateUser",
            &format!("{users}?userId=ada-$S"),
            json!({"displayName": "Ada $S", "email": "ada-$S@example.com", "regions": ["sto1"]}),
        ),
        post(
            "CreateUser, bad e-mail",
            &format!("{users}?userId=bob-$S"),
            json!({"displayName": "Bob", "email": "not an address", "regions": ["sto1"]}),
        ),
        get("GetUser", &format!("{users}/ada-$S")),
        get("ListUsers", &users),
        get("ListUsers, pageSize", &format!("{users}?pageSize=1")),
        patch(
            "UpdateUser",
            &format!("{users}/ada-$S?updateMask=email"),
            json!({"email": "ada.new-$S@example.com"}),
        ),
        post(
            "CreateMembership, role by name",
            "/v1/projects/web-$S/members",
            json!({"user": format!("{org}/users/ada-$S"), "role": "PROJECT_ROLE_MEMBER"}),
        ),
        post(
            "CreateMembership, unknown role",
            "/v1/projects/web-$S/members",
            json!({"user": format!("{org}/users/ada-$S"), "role": "OWNER"}),
        )
        .error_differs(&UNKNOWN_BODY_FIELDS),
        get("ListMemberships", "/v1/projects/web-$S/members"),
        get("GetMembership", "/v1/projects/web-$S/members/ada-$S"),
        delete("DeleteMembership", "/v1/projects/web-$S/members/ada-$S"),
        delete("DeleteUser", &format!("{users}/ada-$S")),
    ]);

    // ---- organizations, members, API keys
    all.extend([
        get("GetOrganization", &format!("/v1/{org}")),
        get("GetOrganization, another", "/v1/organizations/poorpeer"),
        get("ListOrganizations", "/v1/organizations"),
        get("ListOrganizations, operator", "/v1/organizations?pageSize=1").auth(Auth::Operator),
        post(
            "CreateOrganization",
            "/v1/organizations?organizationId=org-$S",
            json!({"displayName": "Org $S"}),
        )
        .auth(Auth::Operator),
        post(
            "CreateMember, role by name",
            &format!("/v1/{org}/members?memberId=eve-$S@peer.example"),
            json!({"role": "VIEWER"}),
        ),
        get("ListMembers", &format!("/v1/{org}/members")),
        post(
            "CreateApiKey",
            &format!("/v1/{org}/apiKeys"),
            json!({"member": format!("{org}/members/eve-$S@peer.example"), "displayName": "key $S"}),
        ),
        get("ListApiKeys", &format!("/v1/{org}/apiKeys")),
        delete(
            "DeleteMember",
            &format!("/v1/{org}/members/eve-$S@peer.example"),
        ),
    ]);

    // ---- quotas: nested field paths, int64
    let quota = format!("/v1/{org}/quotas/sto1");
    all.extend([
        get("GetQuota", &quota),
        get("ListQuotas", &format!("/v1/{org}/quotas")),
        patch(
            "UpdateQuota, nested mask, int64 as numbers",
            &format!("{quota}?updateMask=limits.projects"),
            json!({"limits": {"projects": 90, "networks": 1}}),
        )
        .auth(Auth::Operator),
        patch(
            "UpdateQuota, int64 as strings, implied nested mask",
            &quota,
            json!({"limits": {"users": "80"}}),
        )
        .auth(Auth::Operator),
        patch(
            "UpdateQuota, int64 not a number",
            &quota,
            json!({"limits": {"users": "eighty"}}),
        )
        .auth(Auth::Operator)
        .front_error(),
        patch(
            "UpdateQuota, nested lowerCamelCase mask",
            &format!("{quota}?updateMask=limits.accessRules"),
            json!({"limits": {"accessRules": 70}}),
        )
        .auth(Auth::Operator)
        .answers_differ(&MASK_JSON_NAMES),
        patch(
            "UpdateQuota, nested proto-name mask",
            &format!("{quota}?updateMask=limits.access_rules"),
            json!({"limits": {"accessRules": 60}}),
        )
        .auth(Auth::Operator),
        patch(
            "UpdateQuota, by a tenant",
            &quota,
            json!({"limits": {"users": 1}}),
        ),
        get("GetProjectQuota", "/v1/projects/web-$S/quota"),
        post(
            "RequestTierChange, body *",
            &format!("/v1/{org}/quotas:requestTierChange"),
            json!({"tier": "large"}),
        ),
        post(
            "RequestTierChange, a query parameter with body *",
            &format!("/v1/{org}/quotas:requestTierChange?tier=large"),
            json!({}),
        )
        .error_differs(&IGNORED_QUERY),
        post(
            "ApproveTierChange",
            &format!("/v1/{org}/quotas:approveTierChange"),
            json!({}),
        )
        .auth(Auth::Operator),
        post(
            "ReconcileQuotas, validate only",
            "/v1/quotas:reconcile",
            json!({"organization": org, "validateOnly": true}),
        )
        .auth(Auth::Operator),
    ]);

    // ---- events: a repeated query parameter, a server stream
    all.extend([
        get(
            "ListEvents",
            &format!("/v1/events?organization={org}&pageSize=5"),
        ),
        get(
            "ListEvents, repeated types",
            &format!(
                "/v1/events?organization={org}&types=io.nordlys.v1.project.created\
                 &types=io.nordlys.v1.network.created"
            ),
        ),
        get(
            "ListEvents, repeated types, one bad",
            &format!("/v1/events?organization={org}&types=io.nordlys.v1.project.created&types=x"),
        ),
        get(
            "ListEvents, one resource",
            &format!("/v1/events?organization={org}&resource=projects/web-nrdx"),
        ),
        get(
            "WatchEvents until a deadline",
            &format!(
                "/v1/events:watch?organization={org}&resource=projects/web-nrdx&resumeAfter=0"
            ),
        )
        .header("grpc-timeout", "1S")
        .differs("header/content-type", &SERVER_STREAMS)
        // The deadline's error ends both streams; grpc-gateway's text is
        // its client's.
        .differs("body/ndjson/*/error/message", &FRONT_ERROR_TEXT),
    ]);

    // ---- environments: body "*", a custom verb, additional bindings
    let spec = json!({
        "project": {"projectId": "env-$S", "displayName": "Env $S", "regions": ["sto1"]},
        "networks": [{"networkId": "net", "region": "sto1", "cidr": "10.40.0.0/24"}],
        "accessRules": [{"accessRuleId": "https", "region": "sto1", "direction": "INGRESS",
                         "protocol": "TCP", "portRangeMin": 443, "portRangeMax": 443,
                         "remoteCidr": "0.0.0.0/0"}]
    });
    all.extend([
        post(
            "ApplyEnvironment, validate only",
            &format!("/v1/{org}/environments/env-$S:apply"),
            json!({"environment": {"spec": spec}, "validateOnly": true}),
        ),
        post(
            "ApplyEnvironment",
            &format!("/v1/{org}/environments/env-$S:apply"),
            json!({"environment": {"spec": spec}, "requestId": "apply-env-$S"}),
        ),
        post(
            "ApplyEnvironment, a query parameter with body *",
            &format!("/v1/{org}/environments/env-$S:apply?validateOnly=true"),
            json!({"environment": {"spec": spec}}),
        )
        .answers_differ(&IGNORED_QUERY),
        post(
            "ApplyEnvironment, environment.name in the body too",
            &format!("/v1/{org}/environments/env-$S:apply"),
            json!({"environment": {"name": format!("{org}/environments/other"), "spec": spec},
                   "validateOnly": true}),
        ),
        get("GetEnvironment", &format!("/v1/{org}/environments/env-$S")),
        get("ListEnvironments", &format!("/v1/{org}/environments")),
        post(
            "CreateEnvironmentTemplate",
            &format!("/v1/{org}/environmentTemplates?templateId=tpl-$S"),
            json!({"description": "T", "spec": spec}),
        ),
        post(
            "CreateEnvironmentTemplate, additional binding",
            "/v1/environmentTemplates?templateId=shared-$S",
            json!({"description": "shared", "spec": spec}),
        )
        .auth(Auth::Operator),
        get(
            "GetEnvironmentTemplate",
            &format!("/v1/{org}/environmentTemplates/tpl-$S"),
        ),
        get(
            "GetEnvironmentTemplate, additional binding",
            "/v1/environmentTemplates/shared-$S",
        ),
        get(
            "ListEnvironmentTemplates",
            &format!("/v1/{org}/environmentTemplates"),
        ),
        delete(
            "DeleteEnvironmentTemplate",
            &format!("/v1/{org}/environmentTemplates/tpl-$S"),
        ),
        delete(
            "DeleteEnvironmentTemplate, additional binding",
            "/v1/environmentTemplates/shared-$S",
        )
        .auth(Auth::Operator),
        delete(
            "DeleteEnvironment",
            &format!("/v1/{org}/environments/env-$S"),
        ),
    ]);

    // ---- deletes
    all.extend([
        delete("DeleteNetwork", "/v1/projects/web-$S/networks/backend"),
        delete(
            "DeleteProject, stale etag",
            "/v1/projects/snake-$S?etag=c3RhbGU",
        ),
        delete("DeleteProject", "/v1/projects/snake-$S"),
        delete("DeleteProject, again", "/v1/projects/snake-$S"),
        get("ListProjects, at the end", "/v1/projects"),
    ]);
    all
}
