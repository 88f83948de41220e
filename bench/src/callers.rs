//! The clients the load generator drives: NATS request-reply, gRPC
//! GetProject, and JSON over HTTP/1.1.

use std::net::SocketAddr;

use async_nats::Subject;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use nordlys_proto::pb::nordlys::v1::project_service_client::ProjectServiceClient;
use nordlys_proto::pb::nordlys::v1::{GetProjectRequest, Project};
use prost::Message;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

use crate::load::Caller;

/// NATS request-reply on a subject; the answer is decoded as a project.
#[derive(Debug, Clone)]
pub(crate) struct NatsCaller {
    pub(crate) client: async_nats::Client,
    pub(crate) subject: Subject,
    pub(crate) payload: Bytes,
}

impl NatsCaller {
    pub(crate) fn new(client: async_nats::Client, subject: &'static str, name: &str) -> NatsCaller {
        NatsCaller {
            client,
            subject: Subject::from_static(subject),
            payload: Bytes::from(
                GetProjectRequest {
                    name: name.to_owned(),
                }
                .encode_to_vec(),
            ),
        }
    }
}

impl Caller for NatsCaller {
    async fn call(&mut self) -> Result<(), String> {
        let reply = self
            .client
            .request(self.subject.clone(), self.payload.clone())
            .await
            .map_err(|e| e.to_string())?;
        Project::decode(reply.payload).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// gRPC GetProject on a shared channel (one HTTP/2 connection).
#[derive(Debug, Clone)]
pub(crate) struct GrpcCaller {
    client: ProjectServiceClient<Channel>,
    name: String,
    authorization: Option<AsciiMetadataValue>,
}

impl GrpcCaller {
    /// Calls GetProject `name` on `channel`, with `key` as bearer if given.
    pub(crate) fn new(
        channel: Channel,
        name: &str,
        key: Option<&str>,
    ) -> Result<GrpcCaller, String> {
        let authorization = key
            .map(|k| {
                AsciiMetadataValue::try_from(format!("Bearer {k}"))
                    .map_err(|e| format!("bad key: {e}"))
            })
            .transpose()?;
        Ok(GrpcCaller {
            client: ProjectServiceClient::new(channel),
            name: name.to_owned(),
            authorization,
        })
    }
}

impl Caller for GrpcCaller {
    async fn call(&mut self) -> Result<(), String> {
        let mut request = tonic::Request::new(GetProjectRequest {
            name: self.name.clone(),
        });
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        self.client
            .get_project(request)
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
        Ok(())
    }
}

/// GET of one path over its own keep-alive HTTP/1.1 connection.
#[derive(Debug)]
pub(crate) struct HttpCaller {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    path: String,
    authorization: String,
}

impl HttpCaller {
    /// Connects to `addr`; each call GETs `path` with `key` as bearer.
    pub(crate) async fn connect(
        addr: SocketAddr,
        path: &str,
        key: &str,
    ) -> Result<HttpCaller, String> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {addr}: {e}"))?;
        // The connection task ends when the sender is dropped.
        tokio::spawn(connection);
        Ok(HttpCaller {
            sender,
            addr,
            path: path.to_owned(),
            authorization: format!("Bearer {key}"),
        })
    }
}

impl Caller for HttpCaller {
    async fn call(&mut self) -> Result<(), String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let request = hyper::Request::get(self.path.as_str())
            .header(hyper::header::HOST, self.addr.to_string())
            .header(hyper::header::AUTHORIZATION, self.authorization.as_str())
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(())
    }
}

/// How to make the callers of one path.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// NATS request-reply on `subject`.
    Nats {
        client: async_nats::Client,
        subject: &'static str,
    },
    /// gRPC GetProject on a shared channel, with `key` as bearer if set.
    Grpc {
        channel: Channel,
        key: Option<String>,
    },
    /// JSON over HTTP/1.1, a connection per caller.
    Http {
        addr: SocketAddr,
        path: String,
        key: String,
    },
}

impl Source {
    /// A new caller of this path.
    pub(crate) async fn caller(&self) -> Result<AnyCaller, String> {
        Ok(match self {
            Source::Nats { client, subject } => AnyCaller::Nats(NatsCaller::new(
                client.clone(),
                subject,
                crate::stack::PROJECT,
            )),
            Source::Grpc { channel, key } => AnyCaller::Grpc(GrpcCaller::new(
                channel.clone(),
                crate::stack::PROJECT,
                key.as_deref(),
            )?),
            Source::Http { addr, path, key } => {
                AnyCaller::Http(HttpCaller::connect(*addr, path, key).await?)
            }
        })
    }
}

/// A caller of any kind of path.
#[derive(Debug)]
pub(crate) enum AnyCaller {
    Nats(NatsCaller),
    Grpc(GrpcCaller),
    Http(HttpCaller),
}

impl Caller for AnyCaller {
    async fn call(&mut self) -> Result<(), String> {
        match self {
            AnyCaller::Nats(c) => c.call().await,
            AnyCaller::Grpc(c) => c.call().await,
            AnyCaller::Http(c) => c.call().await,
        }
    }
}
