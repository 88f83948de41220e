//! The NATS micro service host of nordlys-transport, on a real nats-server:
//! an endpoint answers its requests concurrently (they run inside the
//! endpoint's task, not a task each), shutdown finishes what it took, and
//! a started service is reachable at once from any other connection.

use std::time::{Duration, Instant};

use nordlys_tests::NatsServer;
use nordlys_transport::{unary, MicroServiceBuilder, NatsChannel};
use tonic::{Request, Response};

const PREFIX: &str = "nordlys.test.Slow";
const NAP: Duration = Duration::from_millis(300);

async fn slow_service(url: &str) -> (nordlys_transport::MicroService, NatsChannel) {
    let client = async_nats::connect(url).await.expect("connects");
    let service = MicroServiceBuilder::new(client.clone(), "nordlys-test-slow", "0.1.0", PREFIX)
        .endpoint(
            "Nap",
            unary(|_: Request<()>| async {
                tokio::time::sleep(NAP).await;
                Ok(Response::new(()))
            }),
        )
        .start()
        .await
        .expect("starts");
    (service, NatsChannel::new(client, Duration::from_secs(10)))
}

#[tokio::test]
async fn an_endpoint_answers_its_requests_concurrently() {
    let nats = NatsServer::start();
    let (_service, channel) = slow_service(&nats.url()).await;
    let started = Instant::now();
    let calls = (0..20).map(|_| {
        let channel = channel.clone();
        async move {
            channel
                .unary::<(), ()>(format!("{PREFIX}.Nap"), Request::new(()))
                .await
        }
    });
    let answers = futures::future::join_all(calls).await;
    let took = started.elapsed();
    let failed: Vec<_> = answers.iter().filter(|a| a.is_err()).collect();
    assert!(failed.is_empty(), "failed calls: {failed:?}");
    println!("20 calls of a {NAP:?} handler answered in {took:?}");
    // One at a time they would take 20 x 300 ms = 6 s.
    assert!(took < NAP * 4, "20 concurrent calls took {took:?}");
}

#[tokio::test]
async fn shutdown_answers_what_it_took_and_takes_nothing_more() {
    let nats = NatsServer::start();
    let (service, channel) = slow_service(&nats.url()).await;
    let subject = format!("{PREFIX}.Nap");
    let in_flight = {
        let (channel, subject) = (channel.clone(), subject.clone());
        tokio::spawn(async move { channel.unary::<(), ()>(subject, Request::new(())).await })
    };
    // Let the request reach the handler before shutting down.
    tokio::time::sleep(Duration::from_millis(100)).await;
    service.shutdown(Duration::from_secs(5)).await;
    let answer = in_flight.await.expect("the caller task ends");
    assert!(answer.is_ok(), "the call taken before shutdown: {answer:?}");
    let after = channel
        .unary::<(), ()>(subject, Request::new(()))
        .await
        .expect_err("nobody serves the endpoint any more");
    assert_eq!(after.code(), tonic::Code::Unavailable, "{after:?}");
}

/// `start` returning is what a ready line promises: a request from another
/// connection, sent at once, finds the endpoint (no "no responders"), each
/// of many times on a fresh subject. Run on a busy machine, a flush of our
/// socket alone did not promise this.
#[tokio::test]
async fn a_started_service_is_reachable_at_once_from_another_connection() {
    let nats = NatsServer::start();
    let other = async_nats::connect(nats.url()).await.expect("connects");
    let caller = NatsChannel::new(other, Duration::from_secs(5));
    for i in 0..50 {
        let prefix = format!("nordlys.test.Fresh{i}");
        let client = async_nats::connect(nats.url()).await.expect("connects");
        let service = MicroServiceBuilder::new(client, "nordlys-test-fresh", "0.1.0", &prefix)
            .endpoint(
                "Echo",
                unary(|_: Request<()>| async { Ok(Response::new(())) }),
            )
            .start()
            .await
            .expect("starts");
        let answer = caller
            .unary::<(), ()>(format!("{prefix}.Echo"), Request::new(()))
            .await;
        assert!(answer.is_ok(), "service {i}, right after start: {answer:?}");
        service.shutdown(Duration::from_secs(1)).await;
    }
}
