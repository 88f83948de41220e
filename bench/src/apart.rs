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

/// The separate-process floors, stopped when dropped.
#[derive(Debug)]
pub(crate) struct ApartFloors {
    /// Each process with its role in the CPU table.
    procs: Vec<(&'static str, Proc)>,
    /// The tonic-to-NATS forwarder (its responder in another process).
    pub(crate) to_nats: SocketAddr,
    /// The tonic-to-tonic forwarder (its fixed server in another process).
    pub(crate) to_tonic: SocketAddr,
    /// The pids of the tonic-to-NATS forwarder and of its responder.
    pub(crate) to_nats_pids: [Option<u32>; 2],
    /// The pids of the tonic-to-tonic forwarder and of its fixed server.
    pub(crate) to_tonic_pids: [Option<u32>; 2],
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
            to_nats_pids: [to_nats.pid(), responder.pid()],
            to_tonic_pids: [to_tonic.pid(), fixed.pid()],
            procs: vec![
                ("upstream", responder),
                ("upstream", fixed),
                ("forwarder", to_nats),
                ("forwarder", to_tonic),
            ],
            to_nats: to_nats_addr,
            to_tonic: to_tonic_addr,
        })
    }

    /// The floor processes' pids by role, for the CPU probe: the
    /// forwarders (the gateway's counterpart) and what they forward to (the
    /// regiond's counterpart).
    pub(crate) fn pids(&self) -> Vec<(&'static str, Option<u32>)> {
        self.procs
            .iter()
            .map(|(role, p)| (*role, p.pid()))
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
