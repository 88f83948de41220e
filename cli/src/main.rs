//! `nordlysctl`: a small client of the Nordlys public gRPC API.
//!
//! Run with `cargo run -p nordlys-cli -- --help`. The demo script uses
//! `nordlysctl bootstrap --print-key-only` to make an organization and its key.

mod environments;
mod nats;

use std::{process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};
use nordlys_proto::pb::nordlys::v1::{
    organization_service_client::OrganizationServiceClient,
    quota_service_client::QuotaServiceClient, region_service_client::RegionServiceClient, ApiKey,
    CreateApiKeyRequest, CreateMemberRequest, CreateOrganizationRequest, ListRegionsRequest,
    Member, Organization, OrganizationRole, Quota, ReconcileQuotasRequest, ReconcileQuotasResponse,
    ResourceCounts, UpdateQuotaRequest,
};
use tonic::{transport::Channel, Code, Status};

#[derive(Debug, Parser)]
#[command(
    name = "nordlysctl",
    version,
    about = "A small client of the Nordlys gRPC API"
)]
struct Cli {
    /// The gateway's gRPC endpoint.
    #[arg(long, global = true, default_value = "http://127.0.0.1:50051")]
    endpoint: String,
    /// API key (operator key for bootstrap), sent as `authorization: Bearer`.
    #[arg(long, global = true, env = "NORDLYS_API_KEY", hide_env_values = true)]
    key: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Creates an organization, its owner, quotas and an API key (operator key).
    Bootstrap(Bootstrap),
    /// Lists the regions the gateway sees.
    Regions,
    /// Quota administration (operator key).
    #[command(subcommand)]
    Quota(QuotaCommand),
    /// The NATS side of a deployment: permissions and keys (no gateway
    /// needed).
    #[command(subcommand)]
    Nats(nats::NatsCommand),
    /// Plans an environment from a YAML or JSON file without changing
    /// anything (exit 0: no changes, 2: changes, 1: error).
    Plan(environments::Plan),
    /// Applies an environment from a YAML or JSON file (exit 0: no
    /// changes, 2: changed, 1: error or a step failed).
    Apply(environments::Apply),
    /// Deletes an environment and what it made (exit 0: all deleted).
    DeleteEnv(environments::DeleteEnv),
}

#[derive(Debug, Subcommand)]
enum QuotaCommand {
    /// Compares usage with what the regions hold and repairs drift.
    Reconcile(Reconcile),
}

#[derive(Debug, Args)]
struct Reconcile {
    /// Only this organization (an id); every organization when absent.
    #[arg(long)]
    org: Option<String>,
    /// Report the drift without correcting it.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
struct Bootstrap {
    /// The organization id.
    #[arg(long, default_value = "demo")]
    org: String,
    /// The owner's principal.
    #[arg(long, default_value = "owner@demo.example")]
    owner: String,
    /// Limits set in every region, `kind=count` separated by commas.
    #[arg(long, default_value = "projects=10,users=50,networks=20,access_rules=100", value_parser = parse_limits)]
    limits: ResourceCounts,
    /// Regions to set limits in.
    #[arg(long, default_value = "sto1,osl1", value_delimiter = ',')]
    regions: Vec<String>,
    /// Print only the API key secret (for scripts).
    #[arg(long)]
    print_key_only: bool,
}

fn parse_limits(text: &str) -> Result<ResourceCounts, String> {
    let mut counts = ResourceCounts::default();
    for pair in text.split(',').filter(|p| !p.is_empty()) {
        let (kind, count) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` is not kind=count"))?;
        let count: i64 = count
            .trim()
            .parse()
            .map_err(|_| format!("`{count}` is not a count"))?;
        let slot = match kind.trim() {
            "projects" => &mut counts.projects,
            "users" => &mut counts.users,
            "networks" => &mut counts.networks,
            "access_rules" => &mut counts.access_rules,
            other => {
                return Err(format!(
                    "unknown kind `{other}` (projects, users, networks, access_rules)"
                ))
            }
        };
        *slot = count;
    }
    Ok(counts)
}

/// A failure to report: where it happened and why.
#[derive(Debug)]
enum Failure {
    Usage(String),
    Connect(String),
    Rpc(&'static str, Status),
    /// Bad input (a file): what and where.
    Input(String),
    /// The call answered, but not everything was done.
    Failed(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Usage(why) => write!(f, "{why}"),
            Failure::Connect(why) => write!(f, "cannot connect: {why}"),
            Failure::Rpc(rpc, status) => {
                write!(
                    f,
                    "{rpc} failed: {:?} ({}): {}",
                    status.code(),
                    status.code() as i32,
                    status.message()
                )?;
                write_details(f, status)
            }
            Failure::Input(why) | Failure::Failed(why) => write!(f, "{why}"),
        }
    }
}

/// The google.rpc error details of a status, one per line.
fn write_details(f: &mut std::fmt::Formatter<'_>, status: &Status) -> std::fmt::Result {
    use tonic_types::StatusExt;
    let details = status.get_error_details();
    if let Some(bad) = details.bad_request() {
        for v in &bad.field_violations {
            write!(f, "\n  field {}: {}", v.field, v.description)?;
        }
    }
    if let Some(quota) = details.quota_failure() {
        for v in &quota.violations {
            write!(f, "\n  quota {}: {}", v.subject, v.description)?;
        }
    }
    if let Some(pre) = details.precondition_failure() {
        for v in &pre.violations {
            write!(
                f,
                "\n  precondition {} {}: {}",
                v.r#type, v.subject, v.description
            )?;
        }
    }
    if let Some(info) = details.resource_info() {
        write!(
            f,
            "\n  resource {} {}: {}",
            info.resource_type, info.resource_name, info.description
        )?;
    }
    if let Some(info) = details.error_info() {
        write!(f, "\n  reason {} ({})", info.reason, info.domain)?;
    }
    if let Some(retry) = details.retry_info() {
        if let Some(delay) = retry.retry_delay {
            write!(f, "\n  retry after {delay:?}")?;
        }
    }
    if let Some(help) = details.help() {
        for link in &help.links {
            write!(f, "\n  see {}: {}", link.description, link.url)?;
        }
    }
    Ok(())
}

fn request<T>(message: T, key: &str) -> Result<tonic::Request<T>, Failure> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {key}")
        .parse()
        .map_err(|_| Failure::Usage("the key is not valid header text".to_owned()))?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

async fn connect(endpoint: &str) -> Result<Channel, Failure> {
    Channel::from_shared(endpoint.to_owned())
        .map_err(|e| Failure::Usage(format!("bad endpoint {endpoint}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        // An environment's apply or delete runs many calls in one.
        .timeout(Duration::from_secs(150))
        .connect()
        .await
        .map_err(|e| Failure::Connect(format!("{endpoint}: {e}")))
}

async fn bootstrap(channel: Channel, key: &str, args: &Bootstrap) -> Result<(), Failure> {
    let mut orgs = OrganizationServiceClient::new(channel.clone());
    let organization = format!("organizations/{}", args.org);
    let created = orgs
        .create_organization(request(
            CreateOrganizationRequest {
                organization: Some(Organization {
                    display_name: args.org.clone(),
                    ..Default::default()
                }),
                organization_id: args.org.clone(),
            },
            key,
        )?)
        .await;
    match created {
        Ok(_) => note(args, format!("created {organization}")),
        // Re-running bootstrap against a live stack is fine.
        Err(status) if status.code() == Code::AlreadyExists => {
            note(args, format!("{organization} already exists"))
        }
        Err(status) => return Err(Failure::Rpc("CreateOrganization", status)),
    }

    let member = orgs
        .create_member(request(
            CreateMemberRequest {
                parent: organization.clone(),
                member: Some(Member {
                    role: OrganizationRole::Owner as i32,
                    ..Default::default()
                }),
                member_id: args.owner.clone(),
            },
            key,
        )?)
        .await
        .map_err(|s| Failure::Rpc("CreateMember", s))?
        .into_inner()
        .name;
    note(args, format!("owner {member}"));

    let mut quotas = QuotaServiceClient::new(channel);
    for region in &args.regions {
        let quota = quotas
            .update_quota(request(
                UpdateQuotaRequest {
                    quota: Some(Quota {
                        name: format!("{organization}/quotas/{region}"),
                        limits: Some(args.limits),
                        ..Default::default()
                    }),
                    update_mask: None,
                },
                key,
            )?)
            .await
            .map_err(|s| Failure::Rpc("UpdateQuota", s))?
            .into_inner();
        note(args, format!("{} limits {:?}", quota.name, quota.limits));
    }

    let created = orgs
        .create_api_key(request(
            CreateApiKeyRequest {
                parent: organization,
                api_key: Some(ApiKey {
                    member,
                    display_name: "nordlysctl bootstrap".to_owned(),
                    ..Default::default()
                }),
            },
            key,
        )?)
        .await
        .map_err(|s| Failure::Rpc("CreateApiKey", s))?
        .into_inner();
    if args.print_key_only {
        println!("{}", created.secret);
    } else {
        let name = created.api_key.map(|k| k.name).unwrap_or_default();
        println!("api key {name} (shown once):\n{}", created.secret);
    }
    Ok(())
}

fn note(args: &Bootstrap, line: String) {
    if !args.print_key_only {
        println!("{line}");
    }
}

async fn regions(channel: Channel, key: &str) -> Result<(), Failure> {
    let regions = RegionServiceClient::new(channel)
        .list_regions(request(ListRegionsRequest::default(), key)?)
        .await
        .map_err(|s| Failure::Rpc("ListRegions", s))?
        .into_inner();
    for region in regions.regions {
        let state = if region.up { "up" } else { "down" };
        println!(
            "{} {state} instances={}",
            region.name,
            region.instances.len()
        );
    }
    Ok(())
}

async fn reconcile(channel: Channel, key: &str, args: &Reconcile) -> Result<(), Failure> {
    let mut req = request(
        ReconcileQuotasRequest {
            organization: args
                .org
                .as_ref()
                .map(|o| format!("organizations/{o}"))
                .unwrap_or_default(),
            validate_only: args.dry_run,
        },
        key,
    )?;
    // Every drift is observed twice a moment apart: give it time.
    req.set_timeout(Duration::from_secs(60));
    let answer = QuotaServiceClient::new(channel)
        .reconcile_quotas(req)
        .await
        .map_err(|s| Failure::Rpc("ReconcileQuotas", s))?
        .into_inner();
    print!("{}", reconcile_table(&answer));
    Ok(())
}

/// The answer as plain text: one row per kind that differs.
fn reconcile_table(answer: &ReconcileQuotasResponse) -> String {
    let mut rows: Vec<[String; 6]> = vec![[
        "QUOTA".into(),
        "KIND".into(),
        "USAGE".into(),
        "EXISTING".into(),
        "CORRECTED".into(),
        "REASON".into(),
    ]];
    for drift in &answer.drifts {
        let usage = drift.usage.unwrap_or_default();
        let existing = drift.existing.unwrap_or_default();
        let kinds = [
            ("projects", usage.projects, existing.projects),
            ("users", usage.users, existing.users),
            ("networks", usage.networks, existing.networks),
            ("access_rules", usage.access_rules, existing.access_rules),
        ];
        for (kind, used, exists) in kinds.into_iter().filter(|(_, u, e)| u != e) {
            rows.push([
                drift.quota.clone(),
                kind.into(),
                used.to_string(),
                exists.to_string(),
                if drift.corrected { "yes" } else { "no" }.into(),
                drift.reason.clone(),
            ]);
        }
    }
    let mut out = String::new();
    if rows.len() > 1 {
        let widths: Vec<usize> = (0..6)
            .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
            .collect();
        for row in &rows {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
    }
    out.push_str(&format!(
        "{} quotas checked, {} drifted, {} corrected\n",
        answer.checked,
        answer.drifts.len(),
        answer.drifts.iter().filter(|d| d.corrected).count()
    ));
    if !answer.unreachable.is_empty() {
        out.push_str(&format!(
            "unreachable regions: {}\n",
            answer.unreachable.join(", ")
        ));
    }
    for orphan in &answer.orphans {
        out.push_str(&format!("orphan: {orphan}\n"));
    }
    out
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    if let Command::Nats(command) = &cli.command {
        return nats::run(command).map(|()| ExitCode::SUCCESS);
    }
    let key = cli
        .key
        .clone()
        .ok_or_else(|| Failure::Usage("no key: pass --key or set NORDLYS_API_KEY".to_owned()))?;
    let channel = || connect(&cli.endpoint);
    // plan and apply exit 2 when there are changes; they read their file
    // before connecting.
    let changes = |changed: bool| ExitCode::from(if changed { 2 } else { 0 });
    match &cli.command {
        Command::Bootstrap(args) => bootstrap(channel().await?, &key, args).await,
        Command::Regions => regions(channel().await?, &key).await,
        Command::Quota(QuotaCommand::Reconcile(args)) => {
            reconcile(channel().await?, &key, args).await
        }
        Command::Nats(command) => nats::run(command),
        Command::Plan(args) => {
            return environments::plan(&cli.endpoint, &key, args)
                .await
                .map(changes)
        }
        Command::Apply(args) => {
            return environments::apply(&cli.endpoint, &key, args)
                .await
                .map(changes)
        }
        Command::DeleteEnv(args) => environments::delete(channel().await?, &key, args).await,
    }
    .map(|()| ExitCode::SUCCESS)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("nordlysctl: {failure}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nordlys_proto::pb::nordlys::v1::QuotaDrift;

    #[test]
    fn reconcile_table_lists_each_differing_kind() {
        let answer = ReconcileQuotasResponse {
            drifts: vec![QuotaDrift {
                quota: "organizations/acme/quotas/sto1".into(),
                usage: Some(ResourceCounts {
                    projects: 5,
                    users: 2,
                    ..Default::default()
                }),
                existing: Some(ResourceCounts {
                    projects: 3,
                    users: 2,
                    ..Default::default()
                }),
                corrected: true,
                reason: String::new(),
            }],
            checked: 4,
            unreachable: vec!["osl1".into()],
            orphans: vec![],
        };
        let table = reconcile_table(&answer);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("QUOTA"), "{table}");
        assert!(
            lines[1].contains("projects") && lines[1].contains("yes"),
            "{table}"
        );
        assert!(
            !table.contains("users  2"),
            "equal kinds are left out: {table}"
        );
        assert!(table.contains("4 quotas checked, 1 drifted, 1 corrected"));
        assert!(table.contains("unreachable regions: osl1"));
    }
}
