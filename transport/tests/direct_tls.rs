//! `DirectChannel` over the mesh's mutual TLS against a tonic server behind
//! `TlsIncoming`: a call crosses when both sides hold certificates of the
//! mesh CA, and fails at once (UNAVAILABLE, never a hang) when the server's
//! certificate names another host or comes from another CA.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nordlys_proto::pb::nordlys::v1::region_service_client::RegionServiceClient;
use nordlys_proto::pb::nordlys::v1::region_service_server::{RegionService, RegionServiceServer};
use nordlys_proto::pb::nordlys::v1::{ListRegionsRequest, ListRegionsResponse, Region};
use nordlys_transport::tls::{MeshTls, MeshTlsConfig, TlsIncoming};
use nordlys_transport::{DirectChannel, DirectOptions};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic::{Code, Request, Response, Status};

/// Answers every call with one region named `sto1`.
struct Sto1;

#[tonic::async_trait]
impl RegionService for Sto1 {
    async fn list_regions(
        &self,
        _request: Request<ListRegionsRequest>,
    ) -> Result<Response<ListRegionsResponse>, Status> {
        Ok(Response::new(ListRegionsResponse {
            regions: vec![Region {
                name: "sto1".into(),
                up: true,
                ..Default::default()
            }],
        }))
    }
}

/// A CA that writes the files of the certificates it issues.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    dir: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).expect("CA");
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).expect("write CA");
        Ca {
            params,
            key,
            dir: dir.to_path_buf(),
        }
    }

    /// `[mesh_tls]` with this CA and a new certificate for `sans`.
    fn mesh(&self, ca_name: &str, name: &str, sans: &[&str]) -> MeshTls {
        let key = KeyPair::generate().expect("key");
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("params");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .expect("certificate");
        let (cert_file, key_file) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_file, cert.pem()).expect("write cert");
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        MeshTlsConfig {
            ca_file: Some(self.dir.join(format!("{ca_name}.crt"))),
            cert_file: Some(cert_file),
            key_file: Some(key_file),
            ..MeshTlsConfig::default()
        }
        .load()
        .expect("loads")
        .expect("configured")
    }
}

/// A tonic server on loopback behind the mesh's TLS.
async fn server(mesh: &MeshTls) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let incoming = TlsIncoming::new(listener, mesh.server_config().expect("config"), "test")
        .expect("incoming");
    let addr = incoming.local_addr();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RegionServiceServer::new(Sto1))
            .serve_with_incoming(incoming),
    );
    addr
}

async fn call(addr: SocketAddr, client: &MeshTls) -> Result<String, Status> {
    let options = DirectOptions {
        tls: Some(client.client_config().expect("client config")),
        ..DirectOptions::default()
    };
    let channel = DirectChannel::lazy(&addr.to_string(), options).expect("channel");
    RegionServiceClient::new(channel)
        .list_regions(ListRegionsRequest {})
        .await
        .map(|answer| answer.into_inner().regions[0].name.clone())
}

#[tokio::test]
async fn a_call_crosses_mutual_tls_with_certificates_of_the_mesh_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "ca");
    let addr = server(&ca.mesh("ca", "regiond", &["127.0.0.1"])).await;
    let answer = call(addr, &ca.mesh("ca", "gateway", &[])).await;
    assert_eq!(answer.expect("an answer over mutual TLS"), "sto1");
}

#[tokio::test]
async fn a_server_certificate_for_another_host_or_from_another_ca_fails_the_call_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "ca");
    let gateway = ca.mesh("ca", "gateway", &[]);
    let elsewhere = server(&ca.mesh("ca", "elsewhere", &["127.0.0.2", "regiond.example"])).await;
    let other_ca = Ca::new(dir.path(), "other-ca");
    let foreign = server(&other_ca.mesh("other-ca", "foreign", &["127.0.0.1"])).await;
    for (what, addr) in [("another host", elsewhere), ("another CA", foreign)] {
        let started = Instant::now();
        let status = call(addr, &gateway)
            .await
            .expect_err("the server's certificate is refused");
        assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
        assert!(
            status.message().contains("TLS handshake failed"),
            "{what}: {status:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{what}");
    }
}
