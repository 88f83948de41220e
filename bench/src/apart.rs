//! The forwarding floors again, with each server in a process of its own:
//! the bench binary started as `bench --serve-floor KIND`. Their topology is
//! the real paths' one (client, forwarder and backend in three processes),
//! so the real paths' ratio to them is what the gateway's own work costs,
//! and their ratio to the in-process floors is what the process
//! boundaries cost.

use std::net::SocketAddr;
use std::path::Path;

use crate::floors::{self, Servers};
use crate::procs::Proc;
use crate::stack::parse_addr;

/// What `--serve-floor` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum FloorKind {
    /// The raw NATS responder on [`floors::APART_SUBJECT`].
    Responder,
    /// A tonic server answering GetProject with the fixed project.
    Fixed,
    /// A tonic server forwarding over NATS to the responder process.
    ToNats,
    /// A tonic server forwarding over tonic to `--upstream`.
    ToTonic,
}

/// The line a floor process prints when it serves.
const READY: &str = "bench-floor ready on ";

/// Runs one floor in this process until SIGTERM or Ctrl-C.
pub(crate) async fn serve(
    kind: FloorKind,
    nats_url: Option<&str>,
    upstream: Option<SocketAddr>,
) -> Result<(), String> {
    let mut servers = Servers::default();
    let nats = || nats_url.ok_or("--serve-floor needs --nats-url");
    let addr = match kind {
        FloorKind::Responder => {
            servers
                .raw_responder(nats()?, floors::APART_SUBJECT)
                .await?;
            None
        }
        FloorKind::Fixed => Some(servers.tonic_fixed().await?),
        FloorKind::ToNats => Some(
            servers
                .tonic_to_nats(nats()?, floors::APART_SUBJECT)
                .await?,
        ),
        FloorKind::ToTonic => Some(
            servers
                .tonic_to_tonic(upstream.ok_or("--serve-floor to-tonic needs --upstream")?)
                .await?,
        ),
    };
    match addr {
        Some(addr) => println!("{READY}{addr}"),
        None => println!("{READY}nats"),
    }
    crate::interrupted().await;
    Ok(())
}

/// A forwarder in a process of its own and the process it forwards to.
#[derive(Debug)]
pub(crate) struct Pair {
    forwarder: Proc,
    upstream: Proc,
    /// Where the forwarder listens.
    pub(crate) addr: SocketAddr,
}

impl Pair {
    /// The forwarder's pid and its upstream's.
    pub(crate) fn pids(&self) -> [Option<u32>; 2] {
        [self.forwarder.pid(), self.upstream.pid()]
    }
}

/// The separate-process floors, stopped when dropped.
#[derive(Debug)]
pub(crate) struct ApartFloors {
    /// The tonic-to-NATS forwarder and its responder.
    pub(crate) to_nats: Pair,
    /// The tonic-to-tonic forwarder and its fixed server.
    pub(crate) to_tonic: Pair,
}

impl ApartFloors {
    pub(crate) async fn start(bench: &Path, nats_url: &str) -> Result<ApartFloors, String> {
        let nats = ["--nats-url", nats_url];
        let mut responder = spawn(bench, "floor-responder", "responder", &nats)?;
        let mut fixed = spawn(bench, "floor-fixed", "fixed", &[])?;
        let mut to_nats = spawn(bench, "floor-to-nats", "to-nats", &nats)?;
        responder.ready(READY).await?;
        let fixed_addr = parse_addr(&fixed.ready(READY).await?)?;
        let to_nats_addr = parse_addr(&to_nats.ready(READY).await?)?;
        // It needs the fixed server's address, so it starts last.
        let upstream = fixed_addr.to_string();
        let mut to_tonic = spawn(
            bench,
            "floor-to-tonic",
            "to-tonic",
            &["--upstream", &upstream],
        )?;
        let to_tonic_addr = parse_addr(&to_tonic.ready(READY).await?)?;
        Ok(ApartFloors {
            to_nats: Pair {
                forwarder: to_nats,
                upstream: responder,
                addr: to_nats_addr,
            },
            to_tonic: Pair {
                forwarder: to_tonic,
                upstream: fixed,
                addr: to_tonic_addr,
            },
        })
    }

    /// The floor processes' pids by role, for the CPU probe: the
    /// forwarders (the gateway's counterpart) and what they forward to (the
    /// regiond's counterpart).
    pub(crate) fn pids(&self) -> Vec<(&'static str, Option<u32>)> {
        [&self.to_nats, &self.to_tonic]
            .into_iter()
            .flat_map(|pair| {
                let [forwarder, upstream] = pair.pids();
                [("forwarder", forwarder), ("upstream", upstream)]
            })
            .collect()
    }
}

/// Starts `bench --serve-floor KIND ARGS...` as process `name`.
fn spawn(bench: &Path, name: &str, kind: &str, args: &[&str]) -> Result<Proc, String> {
    let all: Vec<String> = ["--serve-floor", kind]
        .iter()
        .chain(args)
        .map(|a| a.to_string())
        .collect();
    Proc::spawn(name, bench, &all, &[])
}
