//! Regions and their daemons, from NATS micro discovery.
//!
//! Every interval the gateway asks `$SRV.INFO.nordlys-regiond` and gathers
//! every instance's answer. A region stays known after its last daemon
//! stops (it is then down, and lists name it unreachable) so a region
//! outage never silently shrinks a list.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::Duration;

use async_nats::service::Info;
use futures::StreamExt;

/// The micro service name of regional daemons.
pub const REGIOND_SERVICE: &str = "nordlys-regiond";

/// One regiond instance as it described itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Micro service instance id.
    pub id: String,
    /// regiond version.
    pub version: String,
    /// Backend (`memory`, `openstack`, ...).
    pub backend: String,
    /// Direct gRPC endpoint, if it serves one.
    pub grpc_endpoint: String,
    /// The resource collections it serves (`projects`, `networks`, ...);
    /// empty from a regiond too old to say.
    pub resources: Vec<String>,
}

/// The regions the gateway knows of.
#[derive(Debug, Default)]
pub struct Discovery {
    regions: RwLock<BTreeMap<String, Vec<Instance>>>,
}

impl Discovery {
    /// Starts with the `expected` regions known (and down until seen).
    pub fn new(expected: &[String]) -> Discovery {
        let regions = expected.iter().map(|r| (r.clone(), Vec::new())).collect();
        Discovery {
            regions: RwLock::new(regions),
        }
    }

    /// One sweep: asks every instance for its info and waits until answers
    /// stop coming (`quiet`) or `limit` passes.
    pub async fn refresh(
        &self,
        client: &async_nats::Client,
        quiet: Duration,
        limit: Duration,
    ) -> Result<(), async_nats::Error> {
        let inbox = client.new_inbox();
        let mut replies = client.subscribe(inbox.clone()).await?;
        client
            .publish_with_reply(format!("$SRV.INFO.{REGIOND_SERVICE}"), inbox, "".into())
            .await?;
        client.flush().await?;
        let mut seen: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let wait = quiet.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            match tokio::time::timeout(wait, replies.next()).await {
                Ok(Some(message)) => {
                    let Ok(info) = serde_json::from_slice::<Info>(&message.payload) else {
                        tracing::warn!("undecodable $SRV.INFO reply ignored");
                        continue;
                    };
                    let Some(region) = info.metadata.get("region").cloned() else {
                        continue;
                    };
                    let meta = |k: &str| info.metadata.get(k).cloned().unwrap_or_default();
                    seen.entry(region).or_default().push(Instance {
                        id: info.id.clone(),
                        version: info.version.clone(),
                        backend: meta("backend"),
                        grpc_endpoint: meta("grpc_endpoint"),
                        resources: meta("resources")
                            .split(',')
                            .filter(|r| !r.is_empty())
                            .map(str::to_string)
                            .collect(),
                    });
                }
                Ok(None) | Err(_) => break,
            }
        }
        let _ = replies.unsubscribe().await;
        if let Ok(mut regions) = self.regions.write() {
            for instances in regions.values_mut() {
                instances.clear();
            }
            for (region, mut instances) in seen {
                instances.sort_by(|a, b| a.id.cmp(&b.id));
                regions.insert(region, instances);
            }
        }
        Ok(())
    }

    /// Every known region, sorted.
    pub fn known(&self) -> Vec<String> {
        self.regions
            .read()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether `region` is known.
    pub fn is_known(&self, region: &str) -> bool {
        self.regions
            .read()
            .map(|r| r.contains_key(region))
            .unwrap_or(false)
    }

    /// The kind of cloud behind `region` (its instances' backend) when it
    /// says it does not serve `collection` (`networks`); `None` when it
    /// does, or no instance says.
    pub fn lacks(&self, region: &str, collection: &str) -> Option<String> {
        let regions = self.regions.read().ok()?;
        let instance = regions.get(region)?.first()?;
        (!instance.resources.is_empty() && !instance.resources.iter().any(|r| r == collection))
            .then(|| instance.backend.clone())
    }

    /// Every known region with the instances that answered last time.
    pub fn snapshot(&self) -> Vec<(String, Vec<Instance>)> {
        self.regions
            .read()
            .map(|r| r.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}
