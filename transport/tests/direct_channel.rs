//! `DirectChannel` against a real tonic server on loopback: answers,
//! statuses and metadata cross as sent, calls share one connection, a
//! dropped call is cancelled at the server, and a peer that dies or stops
//! answering fails the call instead of hanging it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use nordlys_proto::pb::nordlys::v1::region_service_client::RegionServiceClient;
use nordlys_proto::pb::nordlys::v1::region_service_server::{RegionService, RegionServiceServer};
use nordlys_proto::pb::nordlys::v1::{ListRegionsRequest, ListRegionsResponse, Region};
use nordlys_transport::{DirectChannel, DirectOptions};
use tokio::sync::mpsc;
use tonic::{Code, Request, Response, Status};

/// Answers with a region named after the `x-echo` metadata; `x-fail` makes
/// it fail with that message and a trailer; `x-hang` makes it wait until
/// the call is cancelled, reporting the cancellation on `dropped`.
struct Echo {
    dropped: mpsc::UnboundedSender<()>,
}

struct OnDrop(mpsc::UnboundedSender<()>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

#[tonic::async_trait]
impl RegionService for Echo {
    async fn list_regions(
        &self,
        request: Request<ListRegionsRequest>,
    ) -> Result<Response<ListRegionsResponse>, Status> {
        let text = |key: &str| {
            request
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if let Some(message) = text("x-fail") {
            let mut status = Status::failed_precondition(message);
            status
                .metadata_mut()
                .insert("x-detail", "kept".parse().expect("ascii"));
            return Err(status);
        }
        if text("x-hang").is_some() {
            let _guard = OnDrop(self.dropped.clone());
            std::future::pending::<()>().await;
        }
        Ok(Response::new(ListRegionsResponse {
            regions: vec![Region {
                name: text("x-echo").unwrap_or_default(),
                up: true,
                ..Default::default()
            }],
        }))
    }
}

/// A listener on a free loopback port.
async fn listener() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

/// A tonic server on loopback; returns its address, the number of
/// connections it accepted, and the cancellations its handlers saw.
async fn server() -> (SocketAddr, Arc<AtomicUsize>, mpsc::UnboundedReceiver<()>) {
    let (listener, addr) = listener().await;
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    let incoming = nordlys_transport::coalesced_incoming(listener).inspect_ok(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    let (dropped, cancelled) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RegionServiceServer::new(Echo { dropped }))
            .serve_with_incoming(incoming),
    );
    (addr, accepted, cancelled)
}

fn client(addr: SocketAddr, options: DirectOptions) -> RegionServiceClient<DirectChannel> {
    let channel = DirectChannel::lazy(&addr.to_string(), options).expect("channel");
    RegionServiceClient::new(channel)
}

fn request(key: &'static str, value: &str) -> Request<ListRegionsRequest> {
    let mut request = Request::new(ListRegionsRequest {});
    request
        .metadata_mut()
        .insert(key, value.parse().expect("ascii"));
    request
}

#[tokio::test]
async fn answers_statuses_and_metadata_cross_as_sent() {
    let (addr, _, _) = server().await;
    let mut client = client(addr, DirectOptions::default());

    let answer = client
        .list_regions(request("x-echo", "sto1"))
        .await
        .expect("an answer");
    assert_eq!(answer.get_ref().regions[0].name, "sto1");

    let status = client
        .list_regions(request("x-fail", "no such thing"))
        .await
        .expect_err("a status");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "no such thing");
    assert_eq!(
        status
            .metadata()
            .get("x-detail")
            .and_then(|v| v.to_str().ok()),
        Some("kept")
    );
}

#[tokio::test]
async fn concurrent_calls_share_one_connection() {
    let (addr, accepted, _) = server().await;
    let client = client(addr, DirectOptions::default());
    let calls = (0..64).map(|i| {
        let mut client = client.clone();
        async move {
            let name = format!("r{i}");
            let answer = client.list_regions(request("x-echo", &name)).await?;
            Ok::<_, Status>(answer.into_inner().regions[0].name == name)
        }
    });
    let answers = futures::future::try_join_all(calls).await.expect("answers");
    assert!(
        answers.into_iter().all(|same| same),
        "an answer went to the wrong call"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_dropped_call_is_cancelled_at_the_server() {
    let (addr, _, mut cancelled) = server().await;
    let mut client = client(addr, DirectOptions::default());
    let call = client.list_regions(request("x-hang", "1"));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), call)
            .await
            .is_err(),
        "the hanging call answered"
    );
    // The dropped call resets its stream; the server drops the handler.
    tokio::time::timeout(Duration::from_secs(2), cancelled.recv())
        .await
        .expect("the handler was not cancelled within 2 s")
        .expect("the server is gone");
}

#[tokio::test]
async fn a_closed_port_fails_the_call_at_once() {
    let (listener, addr) = listener().await;
    drop(listener);
    let mut client = client(addr, DirectOptions::default());
    let started = Instant::now();
    let status = client
        .list_regions(request("x-echo", "sto1"))
        .await
        .expect_err("nothing listens");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_peer_that_stops_answering_is_closed_by_the_keep_alive() {
    // Accepts and then reads nothing and writes nothing, as a stopped
    // (SIGSTOP) process would: no handshake, no answer, no PING reply.
    let (listener, addr) = listener().await;
    let held = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.expect("accept");
        std::future::pending::<()>().await;
        drop(socket);
    });
    let options = DirectOptions {
        keep_alive_interval: Duration::from_millis(100),
        keep_alive_timeout: Duration::from_millis(200),
        ..DirectOptions::default()
    };
    let mut client = client(addr, options);
    let started = Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(5),
        client.list_regions(request("x-echo", "sto1")),
    )
    .await
    .expect("the call hung past 5 s");
    let status = outcome.expect_err("nothing answers");
    let took = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    println!("a silent peer failed the call after {took:?}: {status:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    held.abort();
}

#[tokio::test]
async fn dropping_the_last_clone_closes_the_connection() {
    // A peer that reads until the connection closes and says when.
    let (listener, addr) = listener().await;
    let (closed, mut was_closed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut sink = vec![0u8; 4096];
        while socket.read(&mut sink).await.map(|n| n > 0).unwrap_or(false) {}
        let _ = closed.send(());
    });
    let mut client = client(addr, DirectOptions::default());
    // Connects; the peer never answers, so the call ends by its deadline.
    let call = client.list_regions(request("x-echo", "sto1"));
    assert!(tokio::time::timeout(Duration::from_millis(200), call)
        .await
        .is_err());
    drop(client);
    tokio::time::timeout(Duration::from_secs(2), was_closed.recv())
        .await
        .expect("the connection stayed open 2 s after the channel was dropped")
        .expect("the peer task is gone");
}
