//! Helpers shared by the mesh tests.

use std::time::{Duration, Instant};

use nordlys_proto::pb::nordlys::v1::{
    project_service_client::ProjectServiceClient, GetProjectRequest, Project,
};
use nordlys_tests::bearer;
use tonic::transport::Channel;

/// Creates project `id` in `regions` with request id `req-{id}`.
pub(crate) use nordlys_tests::create_project as create;

/// Gets a project with a deadline.
pub(crate) async fn get(
    channel: &Channel,
    key: &str,
    name: &str,
    deadline: Duration,
) -> Result<Project, tonic::Status> {
    let mut request = bearer(
        GetProjectRequest {
            name: name.to_owned(),
        },
        key,
    );
    request.set_timeout(deadline);
    ProjectServiceClient::new(channel.clone())
        .get_project(request)
        .await
        .map(tonic::Response::into_inner)
}

/// Figures of a steady stream of calls.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) ok: u64,
    pub(crate) failed: Vec<String>,
    pub(crate) max_latency: Duration,
}

/// Sends GetProject calls from `clients` concurrent loops until `until`.
pub(crate) async fn steady_gets(
    channel: Channel,
    key: String,
    name: String,
    clients: usize,
    until: Instant,
) -> Tally {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (channel, key, name) = (channel.clone(), key.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < until {
                let started = Instant::now();
                match get(&channel, &key, &name, Duration::from_secs(5)).await {
                    Ok(_) => tally.ok += 1,
                    Err(s) => tally
                        .failed
                        .push(format!("{:?}: {}", s.code(), s.message())),
                }
                tally.max_latency = tally.max_latency.max(started.elapsed());
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        let t = task.await.expect("client task");
        total.ok += t.ok;
        total.failed.extend(t.failed);
        total.max_latency = total.max_latency.max(t.max_latency);
    }
    total
}

/// The gateway's `/metrics` counters, by series (`name{labels}` -> value).
pub(crate) async fn metrics(http: std::net::SocketAddr) -> std::collections::BTreeMap<String, f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(http).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("read");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_owned(), v.trim().parse().ok()?)))
        .collect()
}

/// The sum of the samples of series `name` whose labels include `labels`
/// (the gateway's series carry more labels than these tests look at).
pub(crate) fn total(
    metrics: &std::collections::BTreeMap<String, f64>,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    metrics
        .iter()
        .filter(|(series, _)| {
            let (series_name, rest) = series.split_once('{').unwrap_or((series.as_str(), ""));
            series_name == name
                && labels.iter().all(|(k, v)| {
                    rest.split(',')
                        .any(|pair| pair.trim_end_matches('}') == format!("{k}=\"{v}\""))
                })
        })
        .map(|(_, value)| value)
        .sum()
}

/// Runs the mesh tests one at a time: they load the machine on purpose and
/// assert on timings, which two at once on two cores would blur.
pub(crate) async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}
