//! TLS: the gateway's public gRPC and HTTP listeners over TLS, certificates
//! replaced without a restart (SIGHUP, changed files), bad settings refused
//! at start-up, and mutual TLS on the direct route between the gateway and
//! regiond, which refuses strangers and falls back to NATS when only one
//! side has it. Certificates are made here with rcgen.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use nordlys_proto::pb::nordlys::v1::{
    project_service_client::ProjectServiceClient, region_service_client::RegionServiceClient,
    GetProjectRequest, ListRegionsRequest,
};
use nordlys_tests::{
    bearer, bin_path, create_project, instances, log_tail, ClientTls, Gateway, GatewayOpts,
    NatsServer, Quota, Regiond, Stack, StackOpts, OPERATOR_KEY,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::Channel;

// ---------------------------------------------------------------------------
// Certificates

/// A test certificate authority.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

/// A certificate issued by a [`Ca`], with its key.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let pem = params.self_signed(&key).expect("CA certificate").pem();
        Ca { params, key, pem }
    }

    /// A certificate for `name` (and `sans`), for `usage`, valid now.
    fn issue(&self, name: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        self.issue_with(name, sans, usage, |_| {})
    }

    /// Like [`Ca::issue`], valid only in 2020.
    fn issue_expired(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> Leaf {
        self.issue_with(name, &[], usage, |params| {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
    }

    fn issue_with(
        &self,
        name: &str,
        sans: &[&str],
        usage: ExtendedKeyUsagePurpose,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        adjust(&mut params);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

impl Leaf {
    /// Writes `{name}.crt` and `{name}.key` in `dir`.
    fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        self.write_over(&cert, &key);
        (cert, key)
    }

    /// Replaces the files, key first.
    fn write_over(&self, cert: &Path, key: &Path) {
        std::fs::write(key, &self.key_pem).expect("write key");
        std::fs::write(cert, &self.cert_pem).expect("write certificate");
    }
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

/// A client configuration trusting `ca_pem`, presenting `identity` if given.
fn client_config(ca_pem: &str, identity: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(leaf) => {
            let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("leaf PEM");
            let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate")
        }
    };
    Arc::new(config)
}

/// `[tls]` for a gateway config file.
fn tls_section(cert: &Path, key: &Path, reload_interval_ms: u64) -> String {
    format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nreload_interval_ms = {reload_interval_ms}\n",
        cert.display(),
        key.display()
    )
}

/// `[mesh_tls]` for a gateway config file.
fn mesh_section(ca: &Path, cert: &Path, key: &Path) -> String {
    format!(
        "[mesh_tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        ca.display(),
        cert.display(),
        key.display()
    )
}

/// regiond's `[mesh_tls]` as environment variables.
fn mesh_env(ca: &Path, cert: &Path, key: &Path) -> Vec<(String, String)> {
    [
        ("NORDLYS_MESH_TLS__CA_FILE", ca),
        ("NORDLYS_MESH_TLS__CERT_FILE", cert),
        ("NORDLYS_MESH_TLS__KEY_FILE", key),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.display().to_string()))
    .collect()
}

// ---------------------------------------------------------------------------
// Clients and logs

/// The certificate a TLS server at `addr` presents to a new connection.
async fn served_certificate(addr: SocketAddr, tls: &ClientTls, alpn: &[u8]) -> Vec<u8> {
    let mut config = (*tls.config).clone();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(tls.server_name.clone()).expect("server name");
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"));
    let (_, connection) = stream.get_ref();
    assert_eq!(connection.alpn_protocol(), Some(alpn));
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.as_ref().to_vec())
        .unwrap_or_else(|| panic!("{addr} presented no certificate"))
}

/// GETs `path` from the HTTP port over TLS with ALPN `alpn` (`h2` or
/// `http/1.1`); returns the status and body.
async fn https_get(
    addr: SocketAddr,
    tls: &ClientTls,
    alpn: &[u8],
    path: &str,
    key: &str,
) -> (u16, String) {
    let mut config = (*tls.config).clone();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(tls.server_name.clone()).expect("server name");
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake with the HTTP port: {e}"));
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn));
    let request = http::Request::get(format!("https://{}{path}", tls.server_name))
        .header("authorization", format!("Bearer {key}"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let io = TokioIo::new(stream);
    let response = if alpn == b"h2" {
        let (mut send, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("HTTP/2 handshake");
        tokio::spawn(connection);
        send.send_request(request).await
    } else {
        let (mut send, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(connection);
        let (mut parts, body) = request.into_parts();
        parts.uri = path.parse().expect("path");
        parts.headers.insert(
            http::header::HOST,
            tls.server_name.parse().expect("host header"),
        );
        send.send_request(http::Request::from_parts(parts, body))
            .await
    }
    .expect("HTTP answer");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A gRPC health check of `addr` (regiond's direct port) over TLS with
/// `config`, bounded in time. Returns the client's own address (to find
/// regiond's log line about it) and the outcome.
async fn health_check(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> (Option<SocketAddr>, Result<(), String>) {
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let local = Arc::new(Mutex::new(None));
    let seen = local.clone();
    let connect = tower::service_fn(move |_: http::Uri| {
        let (connector, seen) = (connector.clone(), seen.clone());
        async move {
            let tcp = TcpStream::connect(addr).await?;
            if let Ok(mut seen) = seen.lock() {
                seen.get_or_insert(tcp.local_addr()?);
            }
            let name = ServerName::IpAddress(addr.ip().into());
            let stream = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        let channel = Channel::from_shared(format!("https://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .connect_with_connector(connect)
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
        Ok(())
    })
    .await
    .unwrap_or_else(|_| Err("no answer within 10 s".to_owned()));
    let local = local.lock().ok().and_then(|l| *l);
    (local, outcome)
}

/// Waits up to 10 s for a line of the log at `path` that `matches`.
async fn wait_for_log(path: &Path, what: &str, matches: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| matches(l)) {
            return line.to_owned();
        }
        if Instant::now() > deadline {
            panic!("no log line {what} within 10 s\n{}", log_tail(path));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The direct gRPC endpoint a regiond serves, from its "serving" log line.
fn direct_endpoint(regiond: &Regiond) -> SocketAddr {
    let log = std::fs::read_to_string(regiond.log_path()).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("serving"))
        .flat_map(|l| l.split_whitespace())
        .find_map(|word| word.strip_prefix("grpc=")?.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "regiond logged no direct endpoint\n{}",
                log_tail(&regiond.log_path())
            )
        })
}

/// The gateway's `/metrics` counters (plaintext HTTP port).
async fn metrics(gateway: &Gateway) -> std::collections::BTreeMap<String, f64> {
    let mut tcp = TcpStream::connect(gateway.http_addr())
        .await
        .expect("connect");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.expect("read");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_owned(), v.trim().parse().ok()?)))
        .collect()
}

/// The sum over the series `(name, route)` names, whatever their other
/// labels (region, method, code).
fn counter(
    metrics: &std::collections::BTreeMap<String, f64>,
    (name, route): (&str, Option<&str>),
) -> f64 {
    metrics
        .iter()
        .filter(|(series, _)| {
            let (series_name, labels) = series.split_once('{').unwrap_or((series.as_str(), ""));
            series_name == name
                && route.is_none_or(|route| {
                    labels
                        .trim_end_matches('}')
                        .split(',')
                        .any(|pair| pair == format!("route=\"{route}\""))
                })
        })
        .map(|(_, value)| value)
        .sum()
}

const DIRECT_CALLS: (&str, Option<&str>) = ("nordlys_gateway_region_calls_total", Some("grpc"));
const NATS_CALLS: (&str, Option<&str>) = ("nordlys_gateway_region_calls_total", Some("nats"));
const FALLBACKS: (&str, Option<&str>) = ("nordlys_gateway_fallbacks_total", None);

// ---------------------------------------------------------------------------
// The public listeners

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_http_are_served_over_tls_and_plaintext_clients_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("Nordlys test public CA");
    let server = ca.issue(
        "gateway.test",
        &["localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (cert, key) = server.write(dir.path(), "gateway");
    let config = write_file(dir.path(), "gateway.toml", &tls_section(&cert, &key, 5_000));
    let tls = ClientTls {
        config: client_config(&ca.pem, None),
        server_name: "localhost".to_owned(),
    };
    // The stack waits for its regions over a TLS gRPC channel.
    let stack = Stack::start_with(StackOpts {
        sto1_instances: 1,
        gateway_args: vec!["--config".into(), config.display().to_string()],
        gateway_tls: Some(tls.clone()),
        ..StackOpts::default()
    })
    .await;
    let tenant = stack.tenant("acme").await;
    let created = stack
        .create_project(&tenant.key, "web", &["sto1", "osl1"])
        .await
        .expect("CreateProject over TLS");
    assert_eq!(created.name, "projects/web");
    let got = ProjectServiceClient::new(stack.channel().await)
        .get_project(bearer(
            GetProjectRequest {
                name: "projects/web".into(),
            },
            &tenant.key,
        ))
        .await
        .expect("GetProject over TLS")
        .into_inner();
    assert_eq!(got.name, "projects/web");
    let mut regions = got.regions.clone();
    regions.sort();
    assert_eq!(regions, ["osl1", "sto1"]);

    // The HTTP port: HTTP/1.1 and HTTP/2, chosen by ALPN.
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let (status, body) = https_get(
            stack.gateway.http_addr(),
            &tls,
            alpn,
            "/v1/projects/web",
            &tenant.key,
        )
        .await;
        assert_eq!(status, 200, "{}: {body}", String::from_utf8_lossy(alpn));
        let project: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(project["name"], "projects/web", "{body}");
    }
    // Both ports present the configured certificate.
    assert_eq!(
        served_certificate(stack.gateway.addr(), &tls, b"h2").await,
        server.der
    );
    assert_eq!(
        served_certificate(stack.gateway.http_addr(), &tls, b"http/1.1").await,
        server.der
    );

    // Plaintext gRPC to the TLS port fails, promptly.
    let plain = tokio::time::timeout(Duration::from_secs(10), async {
        let channel = Channel::from_shared(format!("http://{}", stack.gateway.addr()))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        RegionServiceClient::new(channel)
            .list_regions(bearer(ListRegionsRequest::default(), OPERATOR_KEY))
            .await
            .map_err(|s| s.to_string())?;
        Ok::<_, String>(())
    })
    .await
    .expect("a plaintext gRPC client is refused within 10 s");
    assert!(plain.is_err(), "a plaintext gRPC call succeeded");

    // Plaintext HTTP/1.1 to the TLS port gets no HTTP answer, and the
    // gateway logs the refusal with the client's address.
    let mut tcp = TcpStream::connect(stack.gateway.http_addr())
        .await
        .expect("connect");
    let local = tcp.local_addr().expect("local addr");
    tcp.write_all(b"GET /openapi.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the TLS port kept a plaintext client hanging");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "a plaintext client got an HTTP answer: {}",
        String::from_utf8_lossy(&answer)
    );
    let peer = format!("peer={local}");
    wait_for_log(
        &stack.gateway.log_path(),
        "refusing the plaintext HTTP client",
        |l| l.contains("refused a TLS handshake") && l.contains(&peer),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_a_new_certificate_to_new_connections_and_keeps_it_over_a_bad_file() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("Nordlys test public CA");
    let usage = ExtendedKeyUsagePurpose::ServerAuth;
    let first = ca.issue("first.gateway.test", &["localhost"], usage.clone());
    let (cert, key) = first.write(dir.path(), "gateway");
    // The files are looked at once an hour: only SIGHUP reloads here.
    let config = write_file(
        dir.path(),
        "gateway.toml",
        &tls_section(&cert, &key, 3_600_000),
    );
    let tls = ClientTls {
        config: client_config(&ca.pem, None),
        server_name: "localhost".to_owned(),
    };
    let mut gateway = Gateway::start(
        &nats,
        &GatewayOpts {
            args: vec!["--config".into(), config.display().to_string()],
            tls: Some(tls.clone()),
            ..GatewayOpts::default()
        },
    );
    assert_eq!(
        served_certificate(gateway.addr(), &tls, b"h2").await,
        first.der
    );
    // An open connection, to see that it survives the reloads.
    let open = gateway.channel().await;

    let second = ca.issue("second.gateway.test", &["localhost"], usage.clone());
    assert_ne!(second.der, first.der);
    second.write_over(&cert, &key);
    assert_eq!(
        served_certificate(gateway.addr(), &tls, b"h2").await,
        first.der,
        "the certificate changed before SIGHUP"
    );
    gateway.hangup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_certificate(gateway.addr(), &tls, b"h2").await != second.der {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within 10 s of SIGHUP\n{}",
            log_tail(&gateway.log_path())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        served_certificate(gateway.http_addr(), &tls, b"http/1.1").await,
        second.der,
        "the HTTP port serves the new certificate too"
    );

    // A certificate whose key was not replaced: refused, logged, and the
    // last good certificate stays.
    let third = ca.issue("third.gateway.test", &["localhost"], usage);
    std::fs::write(&cert, &third.cert_pem).expect("write certificate");
    gateway.hangup();
    let line = wait_for_log(
        &gateway.log_path(),
        "refusing the mismatched certificate",
        |l| l.contains("cannot reload the TLS certificate"),
    )
    .await;
    assert!(line.contains(&key.display().to_string()), "{line}");
    assert!(
        gateway.is_running(),
        "a bad certificate file ended the gateway"
    );
    assert_eq!(
        served_certificate(gateway.addr(), &tls, b"h2").await,
        second.der
    );
    for channel in [open, gateway.channel().await] {
        RegionServiceClient::new(channel)
            .list_regions(bearer(ListRegionsRequest::default(), OPERATOR_KEY))
            .await
            .expect("ListRegions after the reloads");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_certificate_files_are_picked_up_without_a_signal() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("Nordlys test public CA");
    let usage = ExtendedKeyUsagePurpose::ServerAuth;
    let first = ca.issue("first.gateway.test", &["localhost"], usage.clone());
    let (cert, key) = first.write(dir.path(), "gateway");
    let config = write_file(dir.path(), "gateway.toml", &tls_section(&cert, &key, 200));
    let tls = ClientTls {
        config: client_config(&ca.pem, None),
        server_name: "localhost".to_owned(),
    };
    let gateway = Gateway::start(
        &nats,
        &GatewayOpts {
            args: vec!["--config".into(), config.display().to_string()],
            tls: Some(tls.clone()),
            ..GatewayOpts::default()
        },
    );
    assert_eq!(
        served_certificate(gateway.http_addr(), &tls, b"h2").await,
        first.der
    );
    let second = ca.issue("second.gateway.test", &["localhost"], usage);
    second.write_over(&cert, &key);
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_certificate(gateway.http_addr(), &tls, b"h2").await != second.der {
        assert!(
            Instant::now() < deadline,
            "changed files were not picked up within 10 s\n{}",
            log_tail(&gateway.log_path())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        served_certificate(gateway.addr(), &tls, b"h2").await,
        second.der
    );
}

/// Runs `binary` with `args` and `env` until it exits (at most 20 s);
/// returns whether it succeeded and its stderr.
fn run_to_exit(binary: &str, args: &[&str], env: &[(String, String)]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let stderr_path = dir.path().join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut child = Command::new(bin_path(binary))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{binary} {args:?} did not exit within 20 s\n{}",
                log_tail(&stderr_path)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    (status.success(), text)
}

#[test]
fn bad_tls_settings_stop_start_up_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("Nordlys test CA");
    let usage = ExtendedKeyUsagePurpose::ServerAuth;
    let (cert, key) = ca
        .issue("gateway.test", &["localhost"], usage.clone())
        .write(dir.path(), "gateway");
    let (other_cert, _) = ca
        .issue("other.test", &["localhost"], usage)
        .write(dir.path(), "other");
    let ca_file = write_file(dir.path(), "ca.crt", &ca.pem);
    let missing = dir.path().join("missing.key");
    // Nothing listens on port 1: a gateway that got past TLS would fail on
    // NATS instead, with a message that names no certificate file.
    let gateway_args = |config: &Path| {
        vec![
            "--config".to_owned(),
            config.display().to_string(),
            "--nats-url".to_owned(),
            "nats://127.0.0.1:1".to_owned(),
            "--listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--http-listen".to_owned(),
            "127.0.0.1:0".to_owned(),
        ]
    };
    let cases = [
        (
            "a certificate without a key",
            format!("[tls]\ncert_file = \"{}\"\n", cert.display()),
            cert.clone(),
        ),
        (
            "a key that is not the certificate's",
            format!(
                "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                other_cert.display(),
                key.display()
            ),
            key.clone(),
        ),
        (
            "a missing key file",
            format!(
                "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                cert.display(),
                missing.display()
            ),
            missing.clone(),
        ),
        (
            "a mesh section with a missing CA",
            mesh_section(&dir.path().join("missing-ca.crt"), &cert, &key),
            dir.path().join("missing-ca.crt"),
        ),
    ];
    for (what, toml, named) in cases {
        let config = write_file(dir.path(), "gateway.toml", &toml);
        let args = gateway_args(&config);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, stderr) = run_to_exit("gateway", &args, &[]);
        assert!(!ok, "the gateway started with {what}");
        assert!(
            stderr.contains(&named.display().to_string()),
            "the gateway's error for {what} does not name {}:\n{stderr}",
            named.display()
        );
    }

    // regiond, from the environment: a CA file that is not there.
    let regiond_args = [
        "--nats-url",
        "nats://127.0.0.1:1",
        "--region",
        "sto1",
        "--backend",
        "memory",
        "--insecure-dev",
    ];
    let missing_ca = dir.path().join("no-such-ca.crt");
    let (ok, stderr) = run_to_exit(
        "regiond",
        &regiond_args,
        &mesh_env(&missing_ca, &cert, &key),
    );
    assert!(!ok, "regiond started without its mesh CA");
    assert!(
        stderr.contains(&missing_ca.display().to_string()),
        "regiond's error does not name {}:\n{stderr}",
        missing_ca.display()
    );
    // The same settings with the CA present get past TLS (and fail on NATS).
    let (ok, stderr) = run_to_exit("regiond", &regiond_args, &mesh_env(&ca_file, &cert, &key));
    assert!(!ok, "regiond connected to a NATS server on port 1");
    assert!(
        !stderr.contains("[mesh_tls]"),
        "good mesh files were refused:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------
// The mesh

/// The mesh PKI of a test: its CA, regiond's server certificate (for
/// 127.0.0.1), the gateway's client certificate, and three client
/// certificates regiond must refuse to trust.
struct Mesh {
    dir: tempfile::TempDir,
    ca: Ca,
    ca_file: PathBuf,
    regiond: (PathBuf, PathBuf),
    gateway: Leaf,
    gateway_files: (PathBuf, PathBuf),
    foreign: Leaf,
    expired: Leaf,
}

impl Mesh {
    fn new() -> Mesh {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("Nordlys test mesh CA");
        let ca_file = write_file(dir.path(), "mesh-ca.crt", &ca.pem);
        let regiond = ca
            .issue(
                "regiond.mesh.test",
                &["127.0.0.1"],
                ExtendedKeyUsagePurpose::ServerAuth,
            )
            .write(dir.path(), "regiond");
        let gateway = ca.issue(
            "gateway.mesh.test",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let gateway_files = gateway.write(dir.path(), "gateway");
        let foreign = Ca::new("Some other CA").issue(
            "gateway.mesh.test",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let expired = ca.issue_expired("gateway.mesh.test", ExtendedKeyUsagePurpose::ClientAuth);
        Mesh {
            dir,
            ca,
            ca_file,
            regiond,
            gateway,
            gateway_files,
            foreign,
            expired,
        }
    }

    fn regiond_env(&self) -> Vec<(String, String)> {
        mesh_env(&self.ca_file, &self.regiond.0, &self.regiond.1)
    }

    /// A gateway config file with this mesh's `[mesh_tls]`.
    fn gateway_config(&self) -> PathBuf {
        write_file(
            self.dir.path(),
            "gateway-mesh.toml",
            &mesh_section(&self.ca_file, &self.gateway_files.0, &self.gateway_files.1),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_mtls_carries_direct_calls_and_regiond_refuses_clients_without_a_mesh_certificate() {
    let mesh = Mesh::new();
    // Direct gRPC only: a call that could not go over mutual TLS would fail.
    let stack = Stack::start_with(StackOpts {
        route: "grpc".into(),
        sto1_instances: 1,
        regiond_env: mesh.regiond_env(),
        gateway_args: vec![
            "--config".into(),
            mesh.gateway_config().display().to_string(),
        ],
        ..StackOpts::default()
    })
    .await;
    let tenant = stack.tenant("acme").await;
    let channel = stack.channel().await;
    for i in 0..3 {
        create_project(&channel, &tenant.key, &format!("p-{i}"), &["sto1", "osl1"])
            .await
            .unwrap_or_else(|s| panic!("CreateProject p-{i} over mutual TLS: {s:?}"));
    }
    let listed = stack.projects_in(&tenant.key, "sto1").await;
    assert_eq!(listed.projects.len(), 3, "{listed:?}");
    let counters = metrics(&stack.gateway).await;
    assert!(counter(&counters, DIRECT_CALLS) >= 6.0, "{counters:?}");
    assert_eq!(counter(&counters, NATS_CALLS), 0.0, "{counters:?}");

    // Raw clients at regiond's direct port: with the gateway's certificate
    // it answers; without one, with a foreign CA's or an expired one it
    // refuses, and says so with the client's address and the reason.
    let endpoint = direct_endpoint(&stack.sto1_a);
    let (_, good) = health_check(endpoint, client_config(&mesh.ca.pem, Some(&mesh.gateway))).await;
    good.unwrap_or_else(|e| panic!("a mesh client was refused: {e}"));
    let strangers = [
        (
            "no certificate",
            client_config(&mesh.ca.pem, None),
            "peer sent no certificates",
        ),
        (
            "a foreign CA's certificate",
            client_config(&mesh.ca.pem, Some(&mesh.foreign)),
            "UnknownIssuer",
        ),
        (
            "an expired certificate",
            client_config(&mesh.ca.pem, Some(&mesh.expired)),
            "expired",
        ),
    ];
    for (what, config, reason) in strangers {
        let (local, outcome) = health_check(endpoint, config).await;
        assert!(outcome.is_err(), "a client with {what} was served");
        let local = local.unwrap_or_else(|| panic!("the client with {what} never connected"));
        let peer = format!("peer={local}");
        let line = wait_for_log(
            &stack.sto1_a.log_path(),
            &format!("refusing the client with {what}"),
            |l| l.contains("refused a TLS handshake") && l.contains(&peer),
        )
        .await;
        assert!(line.contains(reason), "{what}: {line}");
        println!("regiond refused a client with {what}: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_tls_on_one_side_only_falls_back_to_nats_promptly() {
    let mesh = Mesh::new();
    let nats = NatsServer::start();
    let quota = Quota::start(&nats);
    let env = mesh.regiond_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // sto1 requires mutual TLS; osl1 is plaintext.
    let sto1 = Regiond::start_env(&nats, "sto1", &["--backend", "kv"], &env);
    let osl1 = Regiond::start_with(&nats, "osl1", &["--backend", "kv"]);
    // A plaintext gateway (auto route) in front, and one with mesh TLS.
    let plain = Gateway::start(&nats, &GatewayOpts::default());
    let stack = Stack {
        gateway: plain,
        sto1_a: sto1,
        sto1_b: None,
        osl1,
        quota,
        quota_b: None,
        nats,
    };
    stack
        .wait_for_regions(|r| instances(r, "sto1") == 1 && instances(r, "osl1") == 1)
        .await;
    let with_mesh = Gateway::start(
        &stack.nats,
        &GatewayOpts {
            args: vec![
                "--config".into(),
                mesh.gateway_config().display().to_string(),
            ],
            ..GatewayOpts::default()
        },
    );
    let tenant = stack.tenant("acme").await;

    // Each call answers, well within the deadline, after one direct attempt
    // fails (then the endpoint is ejected and calls go to NATS at once).
    let timed = |channel: Channel, id: &'static str, region: &'static str| {
        let key = tenant.key.clone();
        async move {
            let started = Instant::now();
            create_project(&channel, &key, id, &[region])
                .await
                .unwrap_or_else(|s| panic!("CreateProject {id} in {region}: {s:?}"));
            let took = started.elapsed();
            assert!(
                took < Duration::from_secs(3),
                "{id} in {region} took {took:?}"
            );
        }
    };

    // The plaintext gateway to sto1 (TLS only): falls back.
    timed(stack.channel().await, "plain-sto1", "sto1").await;
    let counters = metrics(&stack.gateway).await;
    assert!(counter(&counters, FALLBACKS) >= 1.0, "{counters:?}");
    assert!(counter(&counters, NATS_CALLS) >= 1.0, "{counters:?}");
    wait_for_log(
        &stack.sto1_a.log_path(),
        "refusing the plaintext gateway",
        |l| l.contains("refused a TLS handshake"),
    )
    .await;

    // The mesh gateway: sto1 over mutual TLS, no fallback...
    let channel = with_mesh.channel().await;
    timed(channel.clone(), "mesh-sto1", "sto1").await;
    let counters = metrics(&with_mesh).await;
    assert_eq!(counter(&counters, FALLBACKS), 0.0, "{counters:?}");
    assert!(counter(&counters, DIRECT_CALLS) >= 1.0, "{counters:?}");
    // ...and osl1 (plaintext only) falls back.
    timed(channel, "mesh-osl1", "osl1").await;
    let counters = metrics(&with_mesh).await;
    assert!(counter(&counters, FALLBACKS) >= 1.0, "{counters:?}");
    wait_for_log(
        &with_mesh.log_path(),
        "the mesh gateway's failed handshake with plaintext osl1",
        |l| l.contains("direct gRPC connect failed") && l.contains("TLS handshake failed"),
    )
    .await;

    // What runs without TLS or NATS credentials warns so in its log...
    let warnings = [
        (
            stack.gateway.log_path(),
            "the gRPC and HTTP listeners are PLAINTEXT",
        ),
        (
            stack.gateway.log_path(),
            "direct gRPC to regiond is PLAINTEXT",
        ),
        (stack.osl1.log_path(), "the direct gRPC port is PLAINTEXT"),
        (
            stack.osl1.log_path(),
            "INSECURE: the NATS connection has no credentials",
        ),
        (
            stack.quota.log_path(),
            "INSECURE: the NATS connection has no credentials",
        ),
    ];
    for (log, warning) in &warnings {
        let line = wait_for_log(log, warning, |l| l.contains(warning)).await;
        assert!(line.contains("WARN"), "not a warning: {line}");
    }
    // ...and what has mutual TLS on the direct route does not.
    for (log, warning) in [
        (with_mesh.log_path(), "direct gRPC to regiond is PLAINTEXT"),
        (stack.sto1_a.log_path(), "the direct gRPC port is PLAINTEXT"),
    ] {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!text.contains(warning), "{}: {warning}", log.display());
    }
}
