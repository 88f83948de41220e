//! The real paths: quota, one regiond (memory backend) and a gateway, as
//! release processes on loopback, plus a tenant with an API key and one
//! project made through the public API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nordlys_proto::pb::nordlys::v1::{
    self as pb, organization_service_client::OrganizationServiceClient,
    project_service_client::ProjectServiceClient, quota_service_client::QuotaServiceClient,
    region_service_client::RegionServiceClient, ApiKey, CreateApiKeyRequest, CreateMemberRequest,
    CreateOrganizationRequest, CreateProjectRequest, GetProjectRequest, ListRegionsRequest, Member,
    Organization, OrganizationRole, Project, ResourceCounts, UpdateQuotaRequest,
};
use tonic::transport::Channel;

use crate::floors::grpc_channel;
use crate::procs::Proc;

/// The region the bench's regiond serves.
pub(crate) const REGION: &str = "sto1";
/// The project GetProject reads.
pub(crate) const PROJECT: &str = "projects/bench";

/// Where the binaries are and what the gateway can do.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    pub(crate) dir: PathBuf,
    /// `--route` exists.
    pub(crate) gateway_route: bool,
    /// The gateway's HTTP listen flag, if it has one (`--http...`).
    pub(crate) gateway_http_flag: Option<String>,
}

impl Binaries {
    /// Finds gateway, regiond and quota in `dir` and reads the gateway's --help.
    pub(crate) fn find(dir: &Path) -> Result<Binaries, String> {
        // Absolute: the services start in directories of their own.
        let dir = &dir
            .canonicalize()
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        for name in ["gateway", "regiond", "quota"] {
            if !dir.join(name).is_file() {
                return Err(format!(
                    "{} not found: run `cargo build --release --workspace --bins` (or drop --no-build)",
                    dir.join(name).display()
                ));
            }
        }
        let help = Command::new(dir.join("gateway"))
            .arg("--help")
            .output()
            .map_err(|e| format!("gateway --help: {e}"))?;
        let help = String::from_utf8_lossy(&help.stdout).into_owned();
        let gateway_route = help.contains("--route");
        let gateway_http_flag = help
            .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '<')
            .find(|w| w.starts_with("--http"))
            .map(str::to_owned);
        Ok(Binaries {
            dir: dir.to_path_buf(),
            gateway_route,
            gateway_http_flag,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Builds the service binaries with cargo, in the profile the bench runs in.
pub(crate) fn build(release: bool) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace dir")?;
    let mut command = Command::new(cargo);
    command.current_dir(workspace).args([
        "build",
        "-p",
        "nordlys-gateway",
        "-p",
        "nordlys-regiond",
        "-p",
        "nordlys-quota",
        "--bins",
    ]);
    if release {
        command.arg("--release");
    }
    // `cargo run` gives the bench the variables of its own package; passed
    // on, they reach build scripts that watch them (ring's watches
    // CARGO_MANIFEST_DIR), so this build and the next `cargo run` each
    // found the other's ring stale and rebuilt half the tree, twice a run.
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("CARGO_PKG_")
            || matches!(
                name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
            )
        {
            command.env_remove(name);
        }
    }
    eprintln!("bench: building the service binaries: {command:?}");
    let status = command
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo build failed ({status})"))
    }
}

/// quota and regiond, shared by every gateway the bench starts.
#[derive(Debug)]
pub(crate) struct Backends {
    // Dropped in order: regiond first, then quota.
    regiond: Proc,
    quota: Proc,
}

impl Backends {
    pub(crate) async fn start(bins: &Binaries, nats_url: &str) -> Result<Backends, String> {
        Self::start_with(bins, nats_url, "memory").await
    }

    /// quota and a regiond with `backend` (memory or kv).
    pub(crate) async fn start_with(
        bins: &Binaries,
        nats_url: &str,
        backend: &str,
    ) -> Result<Backends, String> {
        let quota = start_quota(bins, nats_url).await?;
        let regiond = start_regiond(bins, nats_url, REGION, backend).await?;
        Ok(Backends { regiond, quota })
    }

    pub(crate) fn regiond_pid(&self) -> Option<u32> {
        self.regiond.pid()
    }

    pub(crate) fn quota_pid(&self) -> Option<u32> {
        self.quota.pid()
    }
}

/// A quota service process, once ready.
pub(crate) async fn start_quota(bins: &Binaries, nats_url: &str) -> Result<Proc, String> {
    let mut quota = Proc::spawn(
        "quota",
        &bins.path("quota"),
        &[
            "--nats-url".into(),
            nats_url.into(),
            "--insecure-dev".into(),
        ],
        &[],
    )?;
    quota.ready("nordlys-quota ready").await?;
    Ok(quota)
}

/// A regiond process serving `region` with `backend`, once ready.
pub(crate) async fn start_regiond(
    bins: &Binaries,
    nats_url: &str,
    region: &str,
    backend: &str,
) -> Result<Proc, String> {
    let mut regiond = Proc::spawn(
        "regiond",
        &bins.path("regiond"),
        &[
            "--nats-url".into(),
            nats_url.into(),
            "--region".into(),
            region.into(),
            "--backend".into(),
            backend.into(),
            "--grpc-listen".into(),
            "127.0.0.1:0".into(),
            "--insecure-dev".into(),
        ],
        &[],
    )?;
    regiond.ready("nordlys-regiond ready").await?;
    Ok(regiond)
}

/// A running gateway: a process of its own, or a task in the bench
/// process ([`crate::together`]).
#[derive(Debug)]
pub(crate) struct Gateway {
    pub(crate) proc: Option<Proc>,
    pub(crate) grpc: SocketAddr,
    pub(crate) http: Option<SocketAddr>,
    pub(crate) operator_key: String,
    /// The regions it expects, each waited for at start.
    pub(crate) regions: Vec<String>,
}

impl Gateway {
    /// Starts a gateway in route mode `route` (when the flag exists) and
    /// waits until it sees the region.
    pub(crate) async fn start(
        bins: &Binaries,
        nats_url: &str,
        route: Option<&str>,
        operator_key: &str,
    ) -> Result<Gateway, String> {
        Self::start_in(bins, nats_url, route, operator_key, &[REGION]).await
    }

    /// As [`Gateway::start`], expecting `regions` and waiting for each.
    pub(crate) async fn start_in(
        bins: &Binaries,
        nats_url: &str,
        route: Option<&str>,
        operator_key: &str,
        regions: &[&str],
    ) -> Result<Gateway, String> {
        let mut args: Vec<String> = vec![
            "--nats-url".into(),
            nats_url.into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--regions".into(),
            regions.join(","),
        ];
        if let Some(route) = route {
            args.extend(["--route".into(), route.into()]);
        }
        if let Some(flag) = &bins.gateway_http_flag {
            args.extend([flag.clone(), "127.0.0.1:0".into()]);
        }
        let mut proc = Proc::spawn(
            "gateway",
            &bins.path("gateway"),
            &args,
            // Not a flag: flags show in `ps`.
            &[("NORDLYS_OPERATOR_KEY", operator_key)],
        )?;
        let line = proc.ready("nordlys-gateway listening on ").await?;
        let grpc = parse_addr(&line)?;
        const HTTP: &str = "nordlys-gateway http listening on ";
        let http = if bins.gateway_http_flag.is_some() {
            Some(parse_addr(
                &proc.wait_line(HTTP, Duration::from_secs(5)).await?,
            )?)
        } else {
            // It may serve HTTP without a flag; the line comes with the gRPC one.
            tokio::time::sleep(Duration::from_millis(200)).await;
            proc.find_line(HTTP).map(|l| parse_addr(&l)).transpose()?
        };
        let gateway = Gateway {
            proc: Some(proc),
            grpc,
            http,
            operator_key: operator_key.to_owned(),
            regions: regions.iter().map(|r| (*r).to_owned()).collect(),
        };
        gateway.wait_for_region().await?;
        Ok(gateway)
    }

    /// A gateway already serving at these addresses (in the bench process),
    /// once it sees the region.
    pub(crate) async fn serving(
        grpc: SocketAddr,
        http: SocketAddr,
        operator_key: &str,
    ) -> Result<Gateway, String> {
        let gateway = Gateway {
            proc: None,
            grpc,
            http: Some(http),
            operator_key: operator_key.to_owned(),
            regions: vec![REGION.to_owned()],
        };
        gateway.wait_for_region().await?;
        Ok(gateway)
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(Proc::pid)
    }

    pub(crate) async fn channel(&self) -> Result<Channel, String> {
        grpc_channel(self.grpc).await
    }

    /// Polls ListRegions until every expected region is up with an instance.
    async fn wait_for_region(&self) -> Result<(), String> {
        let mut client = RegionServiceClient::new(self.channel().await?);
        let deadline = Instant::now() + Duration::from_secs(20);
        let names: Vec<String> = self
            .regions
            .iter()
            .map(|r| format!("regions/{r}"))
            .collect();
        let mut last = String::new();
        while Instant::now() < deadline {
            match client
                .list_regions(bearer(ListRegionsRequest::default(), &self.operator_key)?)
                .await
            {
                Ok(r) => {
                    let r = r.into_inner();
                    let up = |name: &String| {
                        r.regions
                            .iter()
                            .any(|r| &r.name == name && r.up && !r.instances.is_empty())
                    };
                    if names.iter().all(up) {
                        return Ok(());
                    }
                    last = format!("{r:?}");
                }
                Err(s) => last = format!("{s:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "the gateway did not see regions {:?} within 20 s; last answer: {last}\n{}",
            self.regions,
            self.proc.as_ref().map(Proc::log_tail).unwrap_or_default()
        ))
    }

    /// Makes organization `bench` with an owner, a quota in the region and
    /// an API key (operator key), then project `bench` (owner's key).
    /// Returns the owner's key.
    pub(crate) async fn setup_tenant(&self) -> Result<String, String> {
        let op = &self.operator_key;
        let channel = self.channel().await?;
        let mut orgs = OrganizationServiceClient::new(channel.clone());
        let organization = orgs
            .create_organization(bearer(
                CreateOrganizationRequest {
                    organization: Some(Organization {
                        display_name: "Bench".into(),
                        ..Default::default()
                    }),
                    organization_id: "bench".into(),
                },
                op,
            )?)
            .await
            .map_err(|s| format!("CreateOrganization: {s:?}"))?
            .into_inner()
            .name;
        let member = orgs
            .create_member(bearer(
                CreateMemberRequest {
                    parent: organization.clone(),
                    member: Some(Member {
                        role: OrganizationRole::Owner as i32,
                        ..Default::default()
                    }),
                    member_id: "owner@bench.example".into(),
                },
                op,
            )?)
            .await
            .map_err(|s| format!("CreateMember: {s:?}"))?
            .into_inner()
            .name;
        QuotaServiceClient::new(channel.clone())
            .update_quota(bearer(
                UpdateQuotaRequest {
                    quota: Some(pb::Quota {
                        name: format!("{organization}/quotas/{REGION}"),
                        limits: Some(ResourceCounts {
                            projects: 10,
                            users: 10,
                            networks: 10,
                            access_rules: 10,
                        }),
                        ..Default::default()
                    }),
                    update_mask: None,
                },
                op,
            )?)
            .await
            .map_err(|s| format!("UpdateQuota: {s:?}"))?;
        let key = orgs
            .create_api_key(bearer(
                CreateApiKeyRequest {
                    parent: organization.clone(),
                    api_key: Some(ApiKey {
                        member,
                        display_name: "bench key".into(),
                        ..Default::default()
                    }),
                },
                op,
            )?)
            .await
            .map_err(|s| format!("CreateApiKey: {s:?}"))?
            .into_inner()
            .secret;
        let mut projects = ProjectServiceClient::new(channel);
        projects
            .create_project(bearer(
                CreateProjectRequest {
                    project: Some(Project {
                        display_name: "Project bench".into(),
                        regions: vec![REGION.into()],
                        ..Default::default()
                    }),
                    project_id: "bench".into(),
                    request_id: String::new(),
                },
                &key,
            )?)
            .await
            .map_err(|s| format!("CreateProject: {s:?}"))?;
        Ok(key)
    }

    /// Checks that `key` reads the project through this gateway.
    pub(crate) async fn check_read(&self, key: &str) -> Result<(), String> {
        ProjectServiceClient::new(self.channel().await?)
            .get_project(bearer(
                GetProjectRequest {
                    name: PROJECT.into(),
                },
                key,
            )?)
            .await
            .map_err(|s| format!("GetProject through the gateway: {s:?}"))?;
        Ok(())
    }
}

/// The address at the end of a ready line (`... listening on 127.0.0.1:PORT`).
pub(crate) fn parse_addr(line: &str) -> Result<SocketAddr, String> {
    line.rsplit(' ')
        .next()
        .and_then(|a| a.trim().parse().ok())
        .ok_or_else(|| format!("no address in {line:?}"))
}

pub(crate) fn bearer<T>(message: T, key: &str) -> Result<tonic::Request<T>, String> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {key}")
        .parse()
        .map_err(|e| format!("key is not valid metadata: {e}"))?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}
