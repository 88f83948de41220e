//! The floors: the cheapest shapes of each path, with no Nordlys logic,
//! all served inside the bench process (nats-server beside it). They answer
//! GetProject with a fixed project of the size regiond answers with, so
//! the payloads match the real paths.

use std::future::Future;
use std::net::SocketAddr;

use async_nats::Subject;
use bytes::Bytes;
use futures::StreamExt;
use nordlys_proto::pb::nordlys::v1::project_service_client::ProjectServiceClient;
use nordlys_proto::pb::nordlys::v1::project_service_server::{
    ProjectService, ProjectServiceServer,
};
use nordlys_proto::pb::nordlys::v1::{
    region_status::State, CreateProjectRequest, DeleteProjectRequest, DeleteProjectResponse,
    GetProjectRequest, ListProjectsRequest, ListProjectsResponse, Project, RegionStatus,
    UpdateProjectRequest,
};
use prost::Message;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Subject of the raw request-reply responder.
pub(crate) const RAW_SUBJECT: &str = "bench.raw.GetProject";
/// Subject of the raw responder that runs as its own process.
pub(crate) const APART_SUBJECT: &str = "bench.apart.GetProject";
/// Subject of the NATS micro endpoint.
pub(crate) const MICRO_SUBJECT: &str = "bench.micro.GetProject";

/// The project every floor answers with.
pub(crate) fn fixed_project() -> Project {
    Project {
        name: "projects/bench".into(),
        organization: "organizations/bench".into(),
        display_name: "Project bench".into(),
        description: String::new(),
        regions: vec!["sto1".into()],
        region_status: vec![RegionStatus {
            region: "sto1".into(),
            state: State::Ready as i32,
            code: 0,
            message: String::new(),
        }],
        create_time: Some(prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 123_456_789,
        }),
        etag: String::new(),
        managed_by: String::new(),
    }
}

/// Tasks serving the floors; aborted on drop.
#[derive(Debug, Default)]
pub(crate) struct Servers {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Servers {
    /// (a) A plain subscriber answering each request with the fixed project,
    /// on its own NATS connection.
    pub(crate) async fn raw_responder(
        &mut self,
        nats_url: &str,
        subject: &'static str,
    ) -> Result<(), String> {
        let client = connect(nats_url).await?;
        let mut sub = client
            .subscribe(subject)
            .await
            .map_err(|e| format!("subscribe: {e}"))?;
        client.flush().await.map_err(|e| format!("flush: {e}"))?;
        let reply_payload = Bytes::from(fixed_project().encode_to_vec());
        self.tasks.push(tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if let Some(reply) = msg.reply {
                    let _ = client.publish(reply, reply_payload.clone()).await;
                }
            }
        }));
        Ok(())
    }

    /// (b) The same through an async-nats `service` (NATS micro) endpoint.
    pub(crate) async fn micro_responder(&mut self, nats_url: &str) -> Result<(), String> {
        use async_nats::service::ServiceExt;
        let client = connect(nats_url).await?;
        let service = client
            .service_builder()
            .description("bench floor")
            .start("bench-floor", "0.1.0")
            .await
            .map_err(|e| format!("micro service: {e}"))?;
        let mut endpoint = service
            .endpoint(MICRO_SUBJECT)
            .await
            .map_err(|e| format!("micro endpoint: {e}"))?;
        client.flush().await.map_err(|e| format!("flush: {e}"))?;
        let reply_payload = Bytes::from(fixed_project().encode_to_vec());
        self.tasks.push(tokio::spawn(async move {
            // Keeps the service (and its $SRV handlers) alive with the task.
            let _service = service;
            while let Some(request) = endpoint.next().await {
                let _ = request.respond(Ok(reply_payload.clone())).await;
            }
        }));
        Ok(())
    }

    /// (c) A tonic server answering GetProject with the fixed project.
    pub(crate) async fn tonic_fixed(&mut self) -> Result<SocketAddr, String> {
        self.serve(Fixed {
            project: fixed_project(),
        })
        .await
    }

    /// (d) A tonic server forwarding each GetProject over NATS request-reply
    /// to the raw responder: the gateway's shape with no logic.
    pub(crate) async fn tonic_to_nats(
        &mut self,
        nats_url: &str,
        subject: &'static str,
    ) -> Result<SocketAddr, String> {
        let client = connect(nats_url).await?;
        self.serve(ToNats {
            client,
            subject: Subject::from_static(subject),
        })
        .await
    }

    /// (e) A tonic server forwarding each GetProject over tonic to `upstream`.
    pub(crate) async fn tonic_to_tonic(
        &mut self,
        upstream: SocketAddr,
    ) -> Result<SocketAddr, String> {
        let client = ProjectServiceClient::new(grpc_channel(upstream).await?);
        self.serve(ToTonic { client }).await
    }

    /// (a) over TLS: the fixed answer behind the mesh's TLS listener
    /// (`config` verifies clients as regiond's direct port does).
    pub(crate) async fn tonic_fixed_tls(
        &mut self,
        config: std::sync::Arc<rustls::ServerConfig>,
    ) -> Result<SocketAddr, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("bind: {e}"))?;
        let incoming = nordlys_transport::tls::TlsIncoming::new(listener, config, "floor")
            .map_err(|e| format!("TLS listener: {e}"))?;
        let addr = incoming.local_addr();
        let answer = Fixed {
            project: fixed_project(),
        };
        self.tasks.push(tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(ProjectServiceServer::new(Floor(answer)))
                .serve_with_incoming(incoming)
                .await;
        }));
        Ok(addr)
    }

    async fn serve<A: Answer>(&mut self, answer: A) -> Result<SocketAddr, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("bind: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("local_addr: {e}"))?;
        self.tasks.push(tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(ProjectServiceServer::new(Floor(answer)))
                // serve_with_incoming ignores the builder's tcp_nodelay: set it
                // on the incoming stream, or Nagle delays small HTTP/2 writes.
                .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
                .await;
        }));
        Ok(addr)
    }
}

/// A NATS connection for the bench.
pub(crate) async fn connect(url: &str) -> Result<async_nats::Client, String> {
    async_nats::ConnectOptions::new()
        .name("nordlys-bench")
        .connect(url)
        .await
        .map_err(|e| format!("cannot connect to NATS at {url}: {e}"))
}

/// A connected gRPC channel (one HTTP/2 connection, multiplexed).
pub(crate) async fn grpc_channel(addr: SocketAddr) -> Result<Channel, String> {
    Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad address {addr}: {e}"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))
}

/// How a floor answers GetProject.
trait Answer: Send + Sync + 'static {
    fn get_project(
        &self,
        request: GetProjectRequest,
    ) -> impl Future<Output = Result<Project, Status>> + Send;
}

/// A ProjectService serving only GetProject, through `A`.
struct Floor<A>(A);

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("only GetProject is served"))
}

#[tonic::async_trait]
impl<A: Answer> ProjectService for Floor<A> {
    async fn get_project(
        &self,
        request: Request<GetProjectRequest>,
    ) -> Result<Response<Project>, Status> {
        self.0
            .get_project(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn create_project(
        &self,
        _: Request<CreateProjectRequest>,
    ) -> Result<Response<Project>, Status> {
        unimplemented()
    }
    async fn list_projects(
        &self,
        _: Request<ListProjectsRequest>,
    ) -> Result<Response<ListProjectsResponse>, Status> {
        unimplemented()
    }
    async fn update_project(
        &self,
        _: Request<UpdateProjectRequest>,
    ) -> Result<Response<Project>, Status> {
        unimplemented()
    }
    async fn delete_project(
        &self,
        _: Request<DeleteProjectRequest>,
    ) -> Result<Response<DeleteProjectResponse>, Status> {
        unimplemented()
    }
}

/// (c) answers at once.
struct Fixed {
    project: Project,
}

impl Answer for Fixed {
    async fn get_project(&self, _: GetProjectRequest) -> Result<Project, Status> {
        Ok(self.project.clone())
    }
}

/// (d) forwards over NATS request-reply.
struct ToNats {
    client: async_nats::Client,
    subject: Subject,
}

impl Answer for ToNats {
    async fn get_project(&self, request: GetProjectRequest) -> Result<Project, Status> {
        let payload = Bytes::from(request.encode_to_vec());
        let reply = self
            .client
            .request(self.subject.clone(), payload)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Project::decode(reply.payload).map_err(|e| Status::internal(e.to_string()))
    }
}

/// (e) forwards over tonic.
struct ToTonic {
    client: ProjectServiceClient<Channel>,
}

impl Answer for ToTonic {
    async fn get_project(&self, request: GetProjectRequest) -> Result<Project, Status> {
        let mut client = self.client.clone();
        Ok(client.get_project(request).await?.into_inner())
    }
}
