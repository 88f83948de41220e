//! `nordlys.v1.EnvironmentService`: a project setup as one document,
//! planned against what exists and applied through the same calls a
//! client would make (each authenticated as the caller, under quota, with
//! its audit event), in dependency order.
//!
//! The plan compares the spec with what the regions hold; an apply first
//! records what it is about to make (so a crash leaves nothing the
//! environment does not know it owns), runs the steps, and records the
//! spec it converged to (to tell later drift from a changed spec).

mod markers;
mod plan;
mod spec;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nordlys_api::{names, validate, Violations};
use nordlys_proto::pb::nordlys::v1::{
    access_rule_service_server::AccessRuleService, environment_service_server::EnvironmentService,
    membership_service_server::MembershipService, network_service_server::NetworkService,
    plan_step::Action, project_service_server::ProjectService, quota_service_server::QuotaService,
    region_status::State as RegionState, tier_change::State as TierChangeState,
    user_service_server::UserService, ApplyEnvironmentRequest, ApplyEnvironmentResponse,
    CreateEnvironmentTemplateRequest, DeleteEnvironmentRequest, DeleteEnvironmentResponse,
    DeleteEnvironmentTemplateRequest, DeleteEnvironmentTemplateResponse, Environment,
    EnvironmentSpec, EnvironmentState, EnvironmentTemplate, GetEnvironmentRequest,
    GetEnvironmentTemplateRequest, GetProjectRequest, GetQuotaRequest, GetUserRequest,
    ListAccessRulesRequest, ListEnvironmentTemplatesRequest, ListEnvironmentTemplatesResponse,
    ListEnvironmentsRequest, ListEnvironmentsResponse, ListMembershipsRequest, ListNetworksRequest,
    Quota, RegionStatus, StepResult, UpdateQuotaRequest,
};
use nordlys_transport::metadata::{set_timeout, timeout_of};
use nordlys_transport::Role;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, QuotaViolation, StatusExt};

use self::plan::{Actual, Counted, Op, Step};
pub(crate) use self::store::EnvironmentStore;
use self::store::Stored;
use super::Api;
use crate::call::{Call, EveryRegion};

/// How many of each list a plan reads at a time.
const PAGE: i32 = 500;

/// What the environment's own calls carry on the caller's behalf: the
/// caller's metadata (credentials, trace context) and the deadline of the
/// whole apply or delete. Each call gets what is left of it, at most the
/// default deadline of one call, so that one region that never answers
/// costs a step that long, not the whole apply's time.
struct Behalf {
    metadata: MetadataMap,
    call: Call,
    per_call: Duration,
}

/// A call the environment makes on the caller's behalf. Its lists wait
/// for every region (a plan needs every region's answer).
fn inner<T>(on: &Behalf, message: T) -> Request<T> {
    let mut request = Request::new(message);
    *request.metadata_mut() = on.metadata.clone();
    set_timeout(request.metadata_mut(), on.call.remaining().min(on.per_call));
    request.extensions_mut().insert(EveryRegion);
    request
}

fn now() -> prost_types::Timestamp {
    nordlys_api::now()
}

/// A checksum of what decides an environment: its spec (or template) and
/// parameters.
fn etag(env: &Environment) -> String {
    use prost::Message;
    let mut h = Sha256::new();
    h.update(
        env.spec
            .as_ref()
            .map(|s| s.encode_to_vec())
            .unwrap_or_default(),
    );
    h.update(env.template.as_bytes());
    for (k, v) in &env.parameters {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    format!("\"{}\"", hex::encode(&h.finalize()[..12]))
}

/// The request id of a step. A create fanned out to several regions (a
/// project, a user, a membership) keeps one id for the environment's life,
/// so a create cut short finishes where it is missing and replays where it
/// is not. Others: the same for a retried apply with the same request id,
/// fresh otherwise (a request id once used by a deleted resource is
/// refused for a day, and a network deleted outside is made anew).
fn step_request_id(environment: &Environment, apply: &str, step: &Step) -> String {
    let mut h = Sha256::new();
    let fanned_out = step.shown.action == Action::Create as i32
        && matches!(step.shown.kind.as_str(), "project" | "user" | "membership");
    if fanned_out {
        h.update(environment.name.as_bytes());
        h.update(
            environment
                .create_time
                .map(|t| t.to_string())
                .unwrap_or_default()
                .as_bytes(),
        );
    } else {
        h.update(apply.as_bytes());
    }
    h.update([0]);
    h.update(step.shown.action.to_le_bytes());
    h.update(step.shown.resource.as_bytes());
    format!("env-{}", hex::encode(&h.finalize()[..20]))
}

/// How many times a plan asks for a list some region did not answer (its
/// lists wait for each region until the deadline; a region may be between
/// daemons, or its cloud briefly down), and how long it waits before asking
/// again, times the tries so far.
const LIST_TRIES: u32 = 3;
const LIST_RETRY_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// Every item of a paged list, each page asked again while a region does
/// not answer; UNAVAILABLE when one still does not: a missing answer would
/// read as "not there" and plan a create.
async fn every_page<T, F, Fut>(what: &str, project: &str, page: F) -> Result<Vec<T>, Status>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, String, Vec<String>), Status>>,
{
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let mut tries = 0;
        let (items, next) = loop {
            let (items, next, unreachable) = page(token.clone()).await?;
            if unreachable.is_empty() {
                break (items, next);
            }
            tries += 1;
            if tries == LIST_TRIES {
                return Err(Status::unavailable(format!(
                    "cannot plan: the {what} of {project} could not be read in {} (a plan needs every region's answer)",
                    unreachable.join(", ")
                )));
            }
            tokio::time::sleep(LIST_RETRY_WAIT * tries).await;
        };
        all.extend(items);
        if next.is_empty() {
            return Ok(all);
        }
        token = next;
    }
}

impl Api {
    /// Starts an apply or delete (see [`crate::call::orchestrates`]): with
    /// the longest deadline when the caller set none, as the default suits
    /// one call of a region, not a dozen in a row; and what its own calls
    /// carry.
    async fn begin_orchestrating<T>(
        &self,
        request: &mut Request<T>,
    ) -> Result<(Call, Behalf), Status> {
        if timeout_of(request.metadata()).is_none() {
            set_timeout(request.metadata_mut(), self.state.config.max_timeout());
        }
        let call = self.state.begin(request).await?;
        let on = Behalf {
            metadata: request.metadata().clone(),
            call: call.clone(),
            per_call: self.state.config.default_timeout(),
        };
        Ok((call, on))
    }

    /// FAILED_PRECONDITION when a resource the plan would have this
    /// environment manage (`desired`, beyond what it does) is another
    /// environment's: two environments converging one project would undo
    /// each other, and deleting one would take the other's. Only the
    /// caller's organization's environments count: a mark of another's
    /// means the id is taken there, which the create says without naming
    /// anything of theirs.
    fn refuse_another_environments(
        &self,
        environment: &str,
        desired: &BTreeSet<String>,
        managed: &BTreeSet<String>,
    ) -> Result<(), Status> {
        let markers = self.environments().markers();
        let taken: Vec<(String, String)> = desired
            .difference(managed)
            .filter_map(|resource| {
                let owner = markers.managed_by(resource)?;
                (owner != environment
                    && names::organization_of(&owner) == names::organization_of(environment))
                .then(|| (resource.clone(), owner))
            })
            .collect();
        if taken.is_empty() {
            return Ok(());
        }
        let mut details = ErrorDetails::new();
        for (resource, owner) in &taken {
            details.add_precondition_failure_violation(
                "MANAGED_BY_ANOTHER_ENVIRONMENT",
                resource.clone(),
                format!("{resource} is managed by {owner}"),
            );
        }
        let summary = taken
            .iter()
            .map(|(r, o)| format!("{r} is managed by {o}"))
            .collect::<Vec<_>>()
            .join("; ");
        Err(Status::with_error_details(
            Code::FailedPrecondition,
            format!("another environment manages what this one names, so nothing was changed: {summary}"),
            details,
        ))
    }

    fn environments(&self) -> &EnvironmentStore {
        &self.state.environments
    }

    /// `(organization name, environment id)` of an environment's name the
    /// caller may see; PERMISSION_DENIED for another organization's.
    fn environment_name(
        &self,
        call: &Call,
        name: &str,
        field: &str,
    ) -> Result<(String, String), Status> {
        let ids = names::parse_field(name, &["organizations", "environments"], field)?;
        let (org, id) = (ids[0].to_string(), ids[1].to_string());
        let org = self.resolve_org(call, &names::organization(&org), field)?;
        Ok((org, id))
    }

    /// The spec an environment stands for: its own, or its template's.
    async fn spec_of(&self, call: &Call, env: &Environment) -> Result<EnvironmentSpec, Status> {
        match (&env.spec, env.template.is_empty()) {
            (Some(_), false) => Err(nordlys_api::invalid(
                "environment.template",
                "give a spec or a template, not both",
            )),
            (Some(spec), true) => Ok(spec.clone()),
            (None, true) => Err(nordlys_api::invalid(
                "environment.spec",
                "is required (or a template)",
            )),
            (None, false) => Ok(self
                .visible_template(call, &env.template, "environment.template")
                .await?
                .spec
                .unwrap_or_default()),
        }
    }

    /// A template the caller may use: its organization's or a shared one.
    async fn visible_template(
        &self,
        call: &Call,
        name: &str,
        field: &str,
    ) -> Result<EnvironmentTemplate, Status> {
        let missing = || Status::not_found(format!("environment template {name} not found"));
        let found = if let Ok(ids) = names::parse_field(name, &["environmentTemplates"], field) {
            self.environments().template(None, ids[0]).await?
        } else {
            let ids = names::parse_field(name, &["organizations", "environmentTemplates"], field)?;
            if !call.caller.can_see(&names::organization(ids[0])) {
                return Err(missing());
            }
            self.environments().template(Some(ids[0]), ids[1]).await?
        };
        found.ok_or_else(missing)
    }

    /// What exists of the resources `spec` names.
    async fn actual(
        &self,
        metadata: &Behalf,
        spec: &EnvironmentSpec,
        organization: &str,
    ) -> Result<Actual, Status> {
        let mut actual = Actual::default();
        let Some(project) = &spec.project else {
            return Ok(actual);
        };
        let pname = names::project(&project.project_id);
        actual.project = match ProjectService::get_project(
            self,
            inner(
                metadata,
                GetProjectRequest {
                    name: pname.clone(),
                },
            ),
        )
        .await
        {
            Ok(p) => Some(p.into_inner()),
            Err(s) if s.code() == Code::NotFound => None,
            Err(s) => return Err(s),
        };
        if actual.project.is_some() {
            let md = metadata;
            let parent = pname.as_str();
            actual.networks = every_page("networks", &pname, |token| async move {
                let parent = parent.to_string();
                let page = NetworkService::list_networks(
                    self,
                    inner(
                        md,
                        ListNetworksRequest {
                            parent,
                            page_size: PAGE,
                            page_token: token,
                        },
                    ),
                )
                .await?
                .into_inner();
                Ok((page.networks, page.next_page_token, page.unreachable))
            })
            .await?
            .into_iter()
            .map(|n| (n.name.clone(), n))
            .collect();
            actual.rules = every_page("access rules", &pname, |token| async move {
                let parent = parent.to_string();
                let page = AccessRuleService::list_access_rules(
                    self,
                    inner(
                        md,
                        ListAccessRulesRequest {
                            parent,
                            page_size: PAGE,
                            page_token: token,
                        },
                    ),
                )
                .await?
                .into_inner();
                Ok((page.access_rules, page.next_page_token, page.unreachable))
            })
            .await?
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect();
            actual.members = every_page("members", &pname, |token| async move {
                let parent = parent.to_string();
                let page = MembershipService::list_memberships(
                    self,
                    inner(
                        md,
                        ListMembershipsRequest {
                            parent,
                            page_size: PAGE,
                            page_token: token,
                        },
                    ),
                )
                .await?
                .into_inner();
                Ok((page.memberships, page.next_page_token, page.unreachable))
            })
            .await?
            .into_iter()
            .map(|m| (m.name.clone(), m))
            .collect();
        }
        for m in &spec.members {
            let name = format!("{organization}/users/{}", m.user_id);
            match UserService::get_user(
                self,
                inner(metadata, GetUserRequest { name: name.clone() }),
            )
            .await
            {
                Ok(u) => {
                    actual.users.insert(name, u.into_inner());
                }
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => return Err(s),
            }
        }
        Ok(actual)
    }

    /// The step that gives the organization the spec's tier, if it names
    /// one: from the organization's quota in the project's first region
    /// (the tier is the same in every region).
    async fn tier_step(
        &self,
        call: &Call,
        metadata: &Behalf,
        desired: &EnvironmentSpec,
        organization: &str,
    ) -> Result<Option<Step>, Status> {
        let Some(project) = &desired.project else {
            return Ok(None);
        };
        let (true, Some(region)) = (!project.tier.is_empty(), project.regions.first()) else {
            return Ok(None);
        };
        let quota = self.quota_in(metadata, organization, region).await?;
        plan::tier(
            &project.tier,
            &quota,
            organization,
            call.caller.role == Role::Operator,
        )
    }

    /// The organization's quota in `region`, read as the caller.
    async fn quota_in(
        &self,
        metadata: &Behalf,
        organization: &str,
        region: &str,
    ) -> Result<Quota, Status> {
        let name = format!("{organization}/quotas/{region}");
        Ok(
            QuotaService::get_quota(self, inner(metadata, GetQuotaRequest { name }))
                .await?
                .into_inner(),
        )
    }

    /// RESOURCE_EXHAUSTED, with a google.rpc.QuotaFailure naming each
    /// region and kind, when the plan's creates do not fit the
    /// organization's quota left there.
    async fn check_quota(
        &self,
        metadata: &Behalf,
        organization: &str,
        steps: &[Step],
    ) -> Result<(), Status> {
        let mut needed: BTreeMap<(String, Counted), i64> = BTreeMap::new();
        for step in steps {
            for (region, kind, n) in &step.counts {
                *needed.entry((region.clone(), *kind)).or_default() += n;
            }
        }
        let regions: BTreeSet<&String> = needed
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|((r, _), _)| r)
            .collect();
        let mut violations = Vec::new();
        for region in regions {
            let quota = self.quota_in(metadata, organization, region).await?;
            let (limits, usage, reserved) = (
                quota.limits.unwrap_or_default(),
                quota.usage.unwrap_or_default(),
                quota.reserved.unwrap_or_default(),
            );
            for (kind, name, limit, used) in [
                (
                    Counted::Projects,
                    "projects",
                    limits.projects,
                    usage.projects + reserved.projects,
                ),
                (
                    Counted::Users,
                    "users",
                    limits.users,
                    usage.users + reserved.users,
                ),
                (
                    Counted::Networks,
                    "networks",
                    limits.networks,
                    usage.networks + reserved.networks,
                ),
                (
                    Counted::AccessRules,
                    "access_rules",
                    limits.access_rules,
                    usage.access_rules + reserved.access_rules,
                ),
            ] {
                let want = needed.get(&(region.clone(), kind)).copied().unwrap_or(0);
                if want > 0 && used + want > limit {
                    violations.push(QuotaViolation::new(
                        format!("{organization}/quotas/{region}"),
                        format!(
                            "{name}: the plan makes {want} more in {region}, {} of {limit} are left",
                            (limit - used).max(0)
                        ),
                    ));
                }
            }
        }
        if violations.is_empty() {
            return Ok(());
        }
        let summary = violations
            .iter()
            .map(|v| v.description.clone())
            .collect::<Vec<_>>()
            .join("; ");
        Err(Status::with_error_details(
            Code::ResourceExhausted,
            format!("the plan does not fit the quota, so nothing was changed: {summary}"),
            ErrorDetails::with_quota_failure(violations),
        ))
    }

    /// Runs one step's call; the resource's region statuses when it has
    /// them. What a delete finds already gone is done.
    async fn run(
        &self,
        metadata: &Behalf,
        op: Op,
        request_id: String,
    ) -> Result<Vec<RegionStatus>, Status> {
        let md = metadata;
        let gone_is_done = |r: Result<Vec<RegionStatus>, Status>| match r {
            Err(s) if s.code() == Code::NotFound => Ok(Vec::new()),
            other => other,
        };
        match op {
            Op::CreateProject(mut r) => {
                r.request_id = request_id;
                Ok(ProjectService::create_project(self, inner(md, r))
                    .await?
                    .into_inner()
                    .region_status)
            }
            Op::UpdateProject(mut r) => {
                r.request_id = request_id;
                Ok(ProjectService::update_project(self, inner(md, r))
                    .await?
                    .into_inner()
                    .region_status)
            }
            Op::DeleteProject(r) => gone_is_done(
                ProjectService::delete_project(self, inner(md, r))
                    .await
                    .map(|r| r.into_inner().region_status),
            ),
            Op::CreateUser(mut r) => {
                r.request_id = request_id;
                Ok(UserService::create_user(self, inner(md, r))
                    .await?
                    .into_inner()
                    .region_status)
            }
            Op::DeleteUser(r) => gone_is_done(
                UserService::delete_user(self, inner(md, r))
                    .await
                    .map(|_| Vec::new()),
            ),
            Op::CreateMembership(mut r) => {
                r.request_id = request_id;
                Ok(MembershipService::create_membership(self, inner(md, r))
                    .await?
                    .into_inner()
                    .region_status)
            }
            Op::DeleteMembership(r) => gone_is_done(
                MembershipService::delete_membership(self, inner(md, r))
                    .await
                    .map(|_| Vec::new()),
            ),
            Op::CreateNetwork(mut r) => {
                r.request_id = request_id;
                NetworkService::create_network(self, inner(md, r)).await?;
                Ok(Vec::new())
            }
            Op::UpdateNetwork(mut r) => {
                r.request_id = request_id;
                NetworkService::update_network(self, inner(md, r)).await?;
                Ok(Vec::new())
            }
            Op::DeleteNetwork(r) => gone_is_done(
                NetworkService::delete_network(self, inner(md, r))
                    .await
                    .map(|_| Vec::new()),
            ),
            Op::CreateRule(mut r) => {
                r.request_id = request_id;
                AccessRuleService::create_access_rule(self, inner(md, r)).await?;
                Ok(Vec::new())
            }
            Op::UpdateRule(mut r) => {
                r.request_id = request_id;
                AccessRuleService::update_access_rule(self, inner(md, r)).await?;
                Ok(Vec::new())
            }
            Op::RaiseTier {
                request,
                quota,
                set: true,
            } => Ok(QuotaService::update_quota(
                self,
                inner(
                    md,
                    UpdateQuotaRequest {
                        quota: Some(Quota {
                            name: quota,
                            tier: request.tier,
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["tier".into()],
                        }),
                    },
                ),
            )
            .await?
            .into_inner()
            .tier_status),
            Op::RaiseTier {
                request,
                set: false,
                ..
            } => {
                let tier = request.tier.clone();
                let change = QuotaService::request_tier_change(self, inner(md, request))
                    .await?
                    .into_inner();
                if change.state == TierChangeState::Approved as i32 {
                    Ok(change.region_status)
                } else {
                    Err(Status::failed_precondition(format!(
                        "tier {tier} was asked for and waits for an operator's approval: {}",
                        change.reason
                    )))
                }
            }
            Op::DeleteRule(r) => gone_is_done(
                AccessRuleService::delete_access_rule(self, inner(md, r))
                    .await
                    .map(|_| Vec::new()),
            ),
        }
    }

    /// Runs `steps` in order and says what became of each that ran. It
    /// stops at the first that fails (later steps may need it); a step
    /// that left a region not READY counts as done but leaves the
    /// environment incomplete. Returns the results and whether all is done.
    async fn run_steps(
        &self,
        metadata: &Behalf,
        environment: &Environment,
        steps: &[Step],
        apply_key: &str,
    ) -> (Vec<StepResult>, bool) {
        let mut results = Vec::new();
        let mut complete = true;
        for (i, step) in steps.iter().enumerate() {
            let Some(op) = step.op.clone() else {
                continue;
            };
            let outcome = self
                .run(metadata, op, step_request_id(environment, apply_key, step))
                .await;
            let index = i32::try_from(i).unwrap_or(i32::MAX);
            match outcome {
                Ok(region_status) => {
                    if region_status
                        .iter()
                        .any(|s| s.state != RegionState::Ready as i32 || s.code != 0)
                    {
                        complete = false;
                    }
                    results.push(StepResult {
                        step: index,
                        code: 0,
                        message: String::new(),
                        region_status,
                    });
                }
                Err(status) => {
                    results.push(StepResult {
                        step: index,
                        code: status.code() as i32,
                        message: status.message().to_string(),
                        region_status: Vec::new(),
                    });
                    return (results, false);
                }
            }
        }
        (results, complete)
    }
}

#[tonic::async_trait]
impl EnvironmentService for Api {
    async fn apply_environment(
        &self,
        request: Request<ApplyEnvironmentRequest>,
    ) -> Result<Response<ApplyEnvironmentResponse>, Status> {
        let mut request = request;
        let (call, metadata) = self.begin_orchestrating(&mut request).await?;
        let req = request.into_inner();
        let mut env = req
            .environment
            .ok_or_else(|| nordlys_api::invalid("environment", "is required"))?;
        let (org, id) = self.environment_name(&call, &env.name, "environment.name")?;
        let org_id =
            names::parse_field(&org, &["organizations"], "environment.name")?[0].to_string();
        if !req.validate_only {
            self.require_write(&call, &env.name)?;
        }
        let mut v = Violations::new();
        validate::check_request_id(&mut v, "request_id", &req.request_id);
        v.into_result()?;
        let spec = self.spec_of(&call, &env).await?;
        let mut v = Violations::new();
        let values: BTreeMap<String, String> = env
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let desired = spec::resolve(&spec, &values, &id, &mut v);
        // A spec with parameters left unfilled is not checked further: its
        // placeholders would only repeat the same mistake.
        v.into_result()?;
        let mut v = Violations::new();
        spec::check(&desired, |r| self.state.discovery.is_known(r), &mut v);
        v.into_result()?;

        let stored = self.environments().environment(&org_id, &id).await?;
        let (previous, revision) = match &stored {
            Some((s, rev)) => (Some(s.clone()), Some(*rev)),
            None => (None, None),
        };
        let managed: BTreeSet<String> = previous
            .as_ref()
            .and_then(|s| s.environment.as_ref())
            .map(|e| e.resources.iter().cloned().collect())
            .unwrap_or_default();
        let applied = previous.as_ref().and_then(|s| s.applied.clone());
        let actual = self.actual(&metadata, &desired, &org).await?;
        let mut steps = plan::plan(&desired, applied.as_ref(), &actual, &managed, &org)?;
        // Last: resources do not wait for a tier an operator has to grant,
        // and a granted tier reaches every project of the organization.
        if let Some(tier) = self.tier_step(&call, &metadata, &desired, &org).await? {
            steps.push(tier);
        }
        // What the environment is to manage when its steps are done: not
        // the tier (the organization's), nor a user it only makes a member.
        let desired_names: BTreeSet<String> = steps
            .iter()
            .filter(|s| s.shown.action != Action::Delete as i32)
            .filter(|s| s.shown.kind != "tier")
            .filter(|s| {
                s.shown.kind != "user" || s.op.is_some() || managed.contains(&s.shown.resource)
            })
            .map(|s| s.shown.resource.clone())
            .collect();
        self.refuse_another_environments(&env.name, &desired_names, &managed)?;
        let changes = steps.iter().any(|s| s.op.is_some());
        let shown: Vec<_> = steps.iter().map(|s| s.shown.clone()).collect();
        self.check_quota(&metadata, &org, &steps).await?;

        let now = now();
        env.resources.clear();
        env.etag = etag(&env);
        let mut record = previous
            .as_ref()
            .and_then(|s| s.environment.clone())
            .unwrap_or_else(|| Environment {
                create_time: Some(now),
                ..Default::default()
            });
        if req.validate_only {
            return Ok(Response::new(ApplyEnvironmentResponse {
                environment: previous.is_some().then_some(record),
                plan: shown,
                results: Vec::new(),
                changes,
            }));
        }
        // What the steps make is the environment's before they run: an
        // apply cut short leaves nothing it does not know it owns.
        let mut intent: BTreeSet<String> = managed.union(&desired_names).cloned().collect();
        record.name = env.name.clone();
        record.spec = env.spec.clone();
        record.template = env.template.clone();
        record.parameters = env.parameters.clone();
        record.etag = env.etag.clone();
        let mut revision = revision;
        if changes || previous.is_none() {
            record.resources = intent.iter().cloned().collect();
            record.state = EnvironmentState::Incomplete as i32;
            let write = Stored {
                environment: Some(record.clone()),
                applied: applied.clone(),
            };
            self.environments()
                .put_environment(&org_id, &id, &write, revision)
                .await?;
            revision = self
                .environments()
                .environment(&org_id, &id)
                .await?
                .map(|(_, r)| r);
        }
        let apply_key = if req.request_id.is_empty() {
            format!("{}:{}", env.name, nordlys_api::ids::random_hex(16))
        } else {
            format!("{}:{}", env.name, req.request_id)
        };
        let (results, complete) = self.run_steps(&metadata, &record, &steps, &apply_key).await;
        // Marked once known to be the environment's: made by a step that
        // succeeded, or found by the plan and already its own. Not before:
        // a create that fails (the id taken in another organization) must
        // not mark what it did not make. Also when nothing changed, which
        // marks what an apply cut short after its step did not mark.
        let done: BTreeSet<usize> = results
            .iter()
            .filter(|r| r.code == 0)
            .map(|r| r.step as usize)
            .collect();
        let made: Vec<&String> = steps
            .iter()
            .enumerate()
            .filter(|(i, s)| s.op.is_none() || done.contains(i))
            .map(|(_, s)| &s.shown.resource)
            .filter(|r| desired_names.contains(*r))
            .collect();
        self.environments().mark(made, &env.name).await?;
        // What the deletes that ran removed is no longer the environment's.
        for r in &results {
            let step = &steps[r.step as usize];
            if r.code == 0
                && step.shown.action == Action::Delete as i32
                && !desired_names.contains(&step.shown.resource)
            {
                intent.remove(&step.shown.resource);
            }
        }
        let kept: BTreeSet<String> = if complete {
            desired_names.clone()
        } else {
            intent.clone()
        };
        // Unmarked before the record lets go of them (see markers.rs).
        let dropped: Vec<&String> = managed
            .union(&intent)
            .filter(|r| !kept.contains(*r))
            .collect();
        self.environments().unmark(dropped, &env.name).await?;
        record.resources = kept.into_iter().collect();
        record.state = if complete {
            EnvironmentState::Applied
        } else {
            EnvironmentState::Incomplete
        } as i32;
        record.update_time = Some(now);
        let write = Stored {
            environment: Some(record.clone()),
            applied: if complete { Some(desired) } else { applied },
        };
        self.environments()
            .put_environment(&org_id, &id, &write, revision)
            .await?;
        Ok(Response::new(ApplyEnvironmentResponse {
            environment: Some(record),
            plan: shown,
            results,
            changes,
        }))
    }

    async fn get_environment(
        &self,
        request: Request<GetEnvironmentRequest>,
    ) -> Result<Response<Environment>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        let (org, id) = self.environment_name(&call, &req.name, "name")?;
        let org_id = names::parse_field(&org, &["organizations"], "name")?[0].to_string();
        self.environments()
            .environment(&org_id, &id)
            .await?
            .and_then(|(s, _)| s.environment)
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("environment {} not found", req.name)))
    }

    async fn list_environments(
        &self,
        request: Request<ListEnvironmentsRequest>,
    ) -> Result<Response<ListEnvironmentsResponse>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        let org = self.resolve_org(&call, &req.parent, "parent")?;
        let org_id = names::parse_field(&org, &["organizations"], "parent")?[0].to_string();
        let limit = match req.page_size {
            n if n <= 0 => 50,
            n => n.min(500) as usize,
        };
        let mut all: Vec<Environment> = self
            .environments()
            .environments(&org_id)
            .await?
            .into_iter()
            .filter_map(|s| s.environment)
            .filter(|e| e.name.as_str() > req.page_token.as_str())
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        let next_page_token = if all.len() > limit {
            all.truncate(limit);
            all.last().map(|e| e.name.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListEnvironmentsResponse {
            environments: all,
            next_page_token,
        }))
    }

    async fn delete_environment(
        &self,
        request: Request<DeleteEnvironmentRequest>,
    ) -> Result<Response<DeleteEnvironmentResponse>, Status> {
        let mut request = request;
        let (call, metadata) = self.begin_orchestrating(&mut request).await?;
        let req = request.into_inner();
        let (org, id) = self.environment_name(&call, &req.name, "name")?;
        let org_id = names::parse_field(&org, &["organizations"], "name")?[0].to_string();
        self.require_write(&call, &req.name)?;
        let Some((stored, revision)) = self.environments().environment(&org_id, &id).await? else {
            return Err(Status::not_found(format!(
                "environment {} not found",
                req.name
            )));
        };
        let mut record = stored.environment.clone().unwrap_or_default();
        let managed: BTreeSet<String> = record.resources.iter().cloned().collect();
        let steps = plan::teardown(&managed);
        let apply_key = format!("{}:delete:{}", req.name, nordlys_api::ids::random_hex(16));
        let (results, _) = self.run_steps(&metadata, &record, &steps, &apply_key).await;
        let mut left = managed.clone();
        for r in &results {
            if r.code == 0 {
                left.remove(&steps[r.step as usize].shown.resource);
            }
        }
        let gone: Vec<&String> = managed.difference(&left).collect();
        self.environments().unmark(gone, &req.name).await?;
        if left.is_empty() {
            self.environments().delete_environment(&org_id, &id).await?;
        } else {
            // Not all went: keep what is left, so deleting again finishes.
            record.resources = left.into_iter().collect();
            record.state = EnvironmentState::Incomplete as i32;
            let write = Stored {
                environment: Some(record),
                applied: stored.applied,
            };
            self.environments()
                .put_environment(&org_id, &id, &write, Some(revision))
                .await?;
        }
        Ok(Response::new(DeleteEnvironmentResponse {
            plan: steps.into_iter().map(|s| s.shown).collect(),
            results,
        }))
    }

    async fn create_environment_template(
        &self,
        request: Request<CreateEnvironmentTemplateRequest>,
    ) -> Result<Response<EnvironmentTemplate>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        let mut template = req
            .template
            .ok_or_else(|| nordlys_api::invalid("template", "is required"))?;
        let mut v = Violations::new();
        validate::check_id(&mut v, "template_id", &req.template_id);
        validate::check_text(
            &mut v,
            "template.description",
            &template.description,
            1000,
            false,
        );
        if template.spec.is_none() {
            v.add("template.spec", "is required");
        }
        v.into_result()?;
        let owner = if req.parent.is_empty() {
            if call.caller.role != Role::Operator {
                return Err(Status::permission_denied(
                    "only operators make shared templates: give parent organizations/{org}",
                ));
            }
            template.name = format!("environmentTemplates/{}", req.template_id);
            None
        } else {
            let org = self.resolve_org(&call, &req.parent, "parent")?;
            self.require_write(&call, &org)?;
            template.name = format!("{org}/environmentTemplates/{}", req.template_id);
            Some(names::parse_field(&org, &["organizations"], "parent")?[0].to_string())
        };
        template.create_time = Some(now());
        self.environments()
            .create_template(owner.as_deref(), &req.template_id, &template)
            .await?;
        Ok(Response::new(template))
    }

    async fn get_environment_template(
        &self,
        request: Request<GetEnvironmentTemplateRequest>,
    ) -> Result<Response<EnvironmentTemplate>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        Ok(Response::new(
            self.visible_template(&call, &req.name, "name").await?,
        ))
    }

    async fn list_environment_templates(
        &self,
        request: Request<ListEnvironmentTemplatesRequest>,
    ) -> Result<Response<ListEnvironmentTemplatesResponse>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        let org = self.resolve_org(&call, &req.parent, "parent")?;
        let org_id = names::parse_field(&org, &["organizations"], "parent")?[0].to_string();
        let mut templates = self.environments().templates(Some(&org_id)).await?;
        templates.extend(self.environments().templates(None).await?);
        Ok(Response::new(ListEnvironmentTemplatesResponse {
            templates,
        }))
    }

    async fn delete_environment_template(
        &self,
        request: Request<DeleteEnvironmentTemplateRequest>,
    ) -> Result<Response<DeleteEnvironmentTemplateResponse>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        let template = self.visible_template(&call, &req.name, "name").await?;
        match names::parse_field(&template.name, &["environmentTemplates"], "name") {
            Ok(ids) => {
                if call.caller.role != Role::Operator {
                    return Err(Status::permission_denied(
                        "only operators delete shared templates",
                    ));
                }
                self.environments().delete_template(None, ids[0]).await?;
            }
            Err(_) => {
                let ids = names::parse_field(
                    &template.name,
                    &["organizations", "environmentTemplates"],
                    "name",
                )?;
                self.require_write(&call, &template.name)?;
                self.environments()
                    .delete_template(Some(ids[0]), ids[1])
                    .await?;
            }
        }
        Ok(Response::new(DeleteEnvironmentTemplateResponse {}))
    }
}
