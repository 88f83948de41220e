//! The plan of an environment: what exists against what its spec asks
//! for, as steps in the order they run. Pure: the caller reads what
//! exists and runs the steps.

use std::collections::{BTreeMap, BTreeSet};

use nordlys_api::validate;
use nordlys_proto::pb::nordlys::v1::{
    plan_step::Action, region_status::State as RegionState, AccessRule, CreateAccessRuleRequest,
    CreateMembershipRequest, CreateNetworkRequest, CreateProjectRequest, CreateUserRequest,
    DeleteAccessRuleRequest, DeleteMembershipRequest, DeleteNetworkRequest, DeleteProjectRequest,
    DeleteUserRequest, EnvironmentSpec, Membership, Network, PlanStep, Project, Quota,
    RegionStatus, RequestTierChangeRequest, UpdateAccessRuleRequest, UpdateNetworkRequest,
    UpdateProjectRequest, User,
};
use tonic::Status;

use super::spec::rule_of;

/// What exists of an environment's resources.
#[derive(Debug, Default)]
pub(super) struct Actual {
    /// The project, when it exists.
    pub(super) project: Option<Project>,
    /// Its networks, by name.
    pub(super) networks: BTreeMap<String, Network>,
    /// Its access rules, by name.
    pub(super) rules: BTreeMap<String, AccessRule>,
    /// Its memberships, by name.
    pub(super) members: BTreeMap<String, Membership>,
    /// The users the spec names that exist, by name.
    pub(super) users: BTreeMap<String, User>,
}

/// The call a step makes (its request id is set when it runs).
#[derive(Debug, Clone)]
pub(super) enum Op {
    CreateProject(CreateProjectRequest),
    UpdateProject(UpdateProjectRequest),
    DeleteProject(DeleteProjectRequest),
    CreateUser(CreateUserRequest),
    DeleteUser(DeleteUserRequest),
    CreateMembership(CreateMembershipRequest),
    DeleteMembership(DeleteMembershipRequest),
    CreateNetwork(CreateNetworkRequest),
    UpdateNetwork(UpdateNetworkRequest),
    DeleteNetwork(DeleteNetworkRequest),
    CreateRule(CreateAccessRuleRequest),
    UpdateRule(UpdateAccessRuleRequest),
    DeleteRule(DeleteAccessRuleRequest),
    /// Raises the organization's tier: asked for as a customer, or set
    /// (`set`) as an operator through the quota named.
    RaiseTier {
        request: RequestTierChangeRequest,
        quota: String,
        set: bool,
    },
}

/// A quota-counted kind, as the plan's shortfall check counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Counted {
    Projects,
    Users,
    Networks,
    AccessRules,
}

/// One step: what the plan shows, and what it does.
#[derive(Debug, Clone)]
pub(super) struct Step {
    pub(super) shown: PlanStep,
    /// `None` for an unchanged resource.
    pub(super) op: Option<Op>,
    /// How it changes what counts against quota: (region, kind, +1 or -1).
    pub(super) counts: Vec<(String, Counted, i64)>,
}

fn step(action: Action, kind: &str, resource: &str, fields: &[&str], reason: &str) -> PlanStep {
    PlanStep {
        action: action as i32,
        resource: resource.to_string(),
        kind: kind.to_string(),
        fields: fields.iter().map(|f| f.to_string()).collect(),
        reason: reason.to_string(),
    }
}

fn unchanged(kind: &str, resource: &str) -> Step {
    Step {
        shown: step(Action::Unchanged, kind, resource, &[], ""),
        op: None,
        counts: Vec::new(),
    }
}

/// Why a resource the spec asks for is not there, or differs: drift when
/// the spec asks for what the last apply made.
fn why(managed: bool, same_as_applied: bool, otherwise: &str) -> String {
    if managed && same_as_applied {
        "changed outside the environment".to_string()
    } else {
        otherwise.to_string()
    }
}

/// FAILED_PRECONDITION for `resource`, which exists and is not this
/// environment's: another's (`managed_by`), or made directly.
fn not_ours(resource: &str, managed_by: &str) -> Status {
    if managed_by.is_empty() {
        Status::failed_precondition(format!(
            "{resource} exists and is not this environment's: environments manage only what they made (delete it, or choose another id)"
        ))
    } else {
        Status::failed_precondition(format!(
            "{resource} is managed by {managed_by}: an environment manages only what it made (choose another id)"
        ))
    }
}

/// The step that gives the organization at least `wanted`, the spec's
/// tier (none when it names none), from its quota as the quota service
/// shows it (its tier, the configured tiers in order, a change pending).
/// `operator`: the caller sets tiers rather than asking for them.
pub(super) fn tier(
    wanted: &str,
    quota: &Quota,
    organization: &str,
    operator: bool,
) -> Result<Option<Step>, Status> {
    if wanted.is_empty() {
        return Ok(None);
    }
    let field = "environment.spec.project.tier";
    let rank = |tier: &str| quota.tiers.iter().position(|t| t == tier);
    let Some(want) = rank(wanted) else {
        return Err(if quota.tiers.is_empty() {
            nordlys_api::invalid(field, "no quota tiers are configured")
        } else {
            nordlys_api::invalid(field, format!("must be one of {}", quota.tiers.join(", ")))
        });
    };
    let have = rank(&quota.tier);
    if have.is_some_and(|have| have >= want) {
        let mut same = unchanged("tier", organization);
        same.shown.reason = format!("the organization has {}", quota.tier);
        return Ok(Some(same));
    }
    let current = if quota.tier.is_empty() {
        "no tier"
    } else {
        quota.tier.as_str()
    };
    let mut reason = format!("the organization has {current}; the spec needs at least {wanted}");
    if quota
        .pending_tier_change
        .as_ref()
        .is_some_and(|p| p.tier == wanted)
    {
        reason.push_str(" (asked for, waiting for an operator's approval)");
    }
    Ok(Some(Step {
        shown: step(Action::Update, "tier", organization, &["tier"], &reason),
        op: Some(Op::RaiseTier {
            request: RequestTierChangeRequest {
                organization: organization.to_string(),
                tier: wanted.to_string(),
            },
            quota: quota.name.clone(),
            set: operator,
        }),
        counts: Vec::new(),
    }))
}

/// The delete of a resource of `kind` (`accessRule`, `network`,
/// `membership`, `project`, `user`).
fn delete_of(kind: &str, name: &str) -> Op {
    let name = name.to_string();
    match kind {
        "accessRule" => Op::DeleteRule(DeleteAccessRuleRequest {
            name,
            ..Default::default()
        }),
        "network" => Op::DeleteNetwork(DeleteNetworkRequest {
            name,
            ..Default::default()
        }),
        "membership" => Op::DeleteMembership(DeleteMembershipRequest {
            name,
            ..Default::default()
        }),
        "project" => Op::DeleteProject(DeleteProjectRequest {
            name,
            ..Default::default()
        }),
        _ => Op::DeleteUser(DeleteUserRequest {
            name,
            ..Default::default()
        }),
    }
}

fn mask(field: &str) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: vec![field.to_string()],
    })
}

/// How a child the spec asks for (a network, a rule) differs from the one
/// that exists: fields that cannot change in place (a replacement), one
/// that can (an update), or none.
struct Changed<'a> {
    kind: &'static str,
    name: &'a str,
    /// Fields that differ and cannot change in place.
    fixed: Vec<&'static str>,
    /// The field that differs and changes in place, with its update.
    update: Option<(&'static str, Op)>,
    /// Its delete and what that gives back.
    delete: (Op, (String, Counted, i64)),
    /// Whether the spec asks for what the last apply made (drift).
    drift: bool,
}

impl Changed<'_> {
    /// Its steps: a delete among the removals and `create` among `steps`
    /// for a replacement, else an update, else unchanged.
    fn steps(
        self,
        removals: &mut Vec<Step>,
        steps: &mut Vec<Step>,
        create: impl Fn(&[&str], String) -> Step,
    ) {
        if !self.fixed.is_empty() {
            let reason = format!("replaced: {} cannot change in place", self.fixed.join(", "));
            let (op, counts) = self.delete;
            removals.push(Step {
                shown: step(Action::Delete, self.kind, self.name, &self.fixed, &reason),
                op: Some(op),
                counts: vec![counts],
            });
            steps.push(create(&self.fixed, reason));
        } else if let Some((field, op)) = self.update {
            steps.push(Step {
                shown: step(
                    Action::Update,
                    self.kind,
                    self.name,
                    &[field],
                    &why(true, self.drift, "the spec changed"),
                ),
                op: Some(op),
                counts: Vec::new(),
            });
        } else {
            steps.push(unchanged(self.kind, self.name));
        }
    }
}

/// The regions of `regions` where a resource is not READY.
fn not_ready(statuses: &[RegionStatus], regions: &[String]) -> Vec<String> {
    regions
        .iter()
        .filter(|r| {
            !statuses
                .iter()
                .any(|s| &s.region == *r && s.state == RegionState::Ready as i32 && s.code == 0)
        })
        .cloned()
        .collect()
}

fn sorted(regions: &[String]) -> Vec<String> {
    let mut r = regions.to_vec();
    r.sort();
    r
}

/// The steps that bring what exists to `desired`, in the order they run:
/// removals (rules, networks, members, users), then the project, users,
/// members, networks and rules. `applied` is the spec the last apply
/// converged to (to tell drift from a changed spec); `managed` what the
/// environment made. FAILED_PRECONDITION when the spec names something
/// that exists but is not the environment's, or a member that is not a
/// user and is not to be created.
pub(super) fn plan(
    desired: &EnvironmentSpec,
    applied: Option<&EnvironmentSpec>,
    actual: &Actual,
    managed: &BTreeSet<String>,
    organization: &str,
) -> Result<Vec<Step>, Status> {
    let project = desired
        .project
        .as_ref()
        .ok_or_else(|| nordlys_api::invalid("environment.spec.project", "is required"))?;
    let pname = format!("projects/{}", project.project_id);
    if let Some(other) = managed
        .iter()
        .find(|r| r.starts_with("projects/") && r.matches('/').count() == 1 && **r != pname)
    {
        return Err(Status::failed_precondition(format!(
            "this environment's project is {other}: an environment's project cannot change (delete the environment and apply it anew)"
        )));
    }
    let applied_project = applied.and_then(|a| a.project.as_ref());
    let regions = sorted(&project.regions);
    let mut removals = Vec::new();
    let mut project_steps = Vec::new();
    let mut user_steps = Vec::new();
    let mut member_steps = Vec::new();
    let mut network_steps = Vec::new();
    let mut rule_steps = Vec::new();

    // The project.
    match &actual.project {
        None => project_steps.push(Step {
            shown: step(
                Action::Create,
                "project",
                &pname,
                &[],
                &why(managed.contains(&pname), true, "not there"),
            ),
            op: Some(Op::CreateProject(CreateProjectRequest {
                project: Some(Project {
                    // Named, so that an operator's apply makes it there.
                    organization: organization.to_string(),
                    display_name: project.display_name.clone(),
                    description: project.description.clone(),
                    regions: project.regions.clone(),
                    ..Default::default()
                }),
                project_id: project.project_id.clone(),
                request_id: String::new(),
            })),
            counts: regions
                .iter()
                .map(|r| (r.clone(), Counted::Projects, 1))
                .collect(),
        }),
        Some(have) => {
            // Seen only by an operator's plan: ids are global, and a record
            // may name a project whose create failed because another
            // organization has the id.
            if have.organization != organization {
                return Err(Status::failed_precondition(format!(
                    "{pname} belongs to {}: choose another project id",
                    have.organization
                )));
            }
            if !managed.contains(&pname) {
                return Err(not_ours(&pname, &have.managed_by));
            }
            // A create cut short (a region down, a regiond killed) leaves
            // the project missing in some of its regions: the same create
            // again makes it there (its request id replays elsewhere).
            let missing = not_ready(&have.region_status, &regions);
            if !missing.is_empty() && have.regions.iter().any(|r| missing.contains(r)) {
                project_steps.push(Step {
                    shown: step(
                        Action::Create,
                        "project",
                        &pname,
                        &["regions"],
                        &format!("not there yet in {}", missing.join(", ")),
                    ),
                    op: Some(Op::CreateProject(CreateProjectRequest {
                        project: Some(Project {
                            organization: organization.to_string(),
                            display_name: have.display_name.clone(),
                            description: have.description.clone(),
                            regions: have.regions.clone(),
                            ..Default::default()
                        }),
                        project_id: project.project_id.clone(),
                        request_id: String::new(),
                    })),
                    counts: Vec::new(),
                });
            }
            let mut fields = Vec::new();
            if have.display_name != project.display_name {
                fields.push("display_name");
            }
            if have.description != project.description {
                fields.push("description");
            }
            if sorted(&have.regions) != regions {
                fields.push("regions");
            }
            if fields.is_empty() {
                project_steps.push(unchanged("project", &pname));
            } else {
                let same = applied_project == Some(project);
                let added: Vec<String> = regions
                    .iter()
                    .filter(|r| !have.regions.contains(r))
                    .cloned()
                    .collect();
                let removed = have.regions.iter().filter(|r| !regions.contains(r));
                let mut counts: Vec<(String, Counted, i64)> = added
                    .iter()
                    .map(|r| (r.clone(), Counted::Projects, 1))
                    .collect();
                counts.extend(removed.map(|r| (r.clone(), Counted::Projects, -1)));
                project_steps.push(Step {
                    shown: step(
                        Action::Update,
                        "project",
                        &pname,
                        &fields,
                        &why(true, same, "the spec changed"),
                    ),
                    op: Some(Op::UpdateProject(UpdateProjectRequest {
                        project: Some(Project {
                            name: pname.clone(),
                            display_name: project.display_name.clone(),
                            description: project.description.clone(),
                            regions: project.regions.clone(),
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: fields.iter().map(|f| f.to_string()).collect(),
                        }),
                        request_id: String::new(),
                        force: false,
                    })),
                    counts,
                });
            }
        }
    }

    // Users the environment creates, and members.
    let mut wanted_users = BTreeSet::new();
    let mut wanted_members = BTreeSet::new();
    for m in &desired.members {
        let uname = format!("{organization}/users/{}", m.user_id);
        let mname = format!("{pname}/members/{}", m.user_id);
        wanted_users.insert(uname.clone());
        wanted_members.insert(mname.clone());
        let make_user = |reason: String, counted: &[String]| Step {
            shown: step(Action::Create, "user", &uname, &[], &reason),
            op: Some(Op::CreateUser(CreateUserRequest {
                parent: organization.to_string(),
                user: Some(User {
                    // A user needs a display name: the id, when none is given.
                    display_name: if m.display_name.is_empty() {
                        m.user_id.clone()
                    } else {
                        m.display_name.clone()
                    },
                    email: m.email.clone(),
                    regions: project.regions.clone(),
                    ..Default::default()
                }),
                user_id: m.user_id.clone(),
                request_id: String::new(),
            })),
            counts: counted
                .iter()
                .map(|r| (r.clone(), Counted::Users, 1))
                .collect(),
        };
        match actual.users.get(&uname) {
            // A user this environment made, cut short in some regions: its
            // create again (the same request id) finishes it there.
            Some(have)
                if managed.contains(&uname)
                    && !not_ready(&have.region_status, &regions).is_empty() =>
            {
                let missing = not_ready(&have.region_status, &regions);
                user_steps.push(make_user(
                    format!("not there yet in {}", missing.join(", ")),
                    &missing,
                ));
            }
            Some(_) => user_steps.push(unchanged("user", &uname)),
            None if m.create_user => user_steps.push(Step {
                shown: step(
                    Action::Create,
                    "user",
                    &uname,
                    &[],
                    &why(managed.contains(&uname), true, "not there"),
                ),
                op: Some(Op::CreateUser(CreateUserRequest {
                    parent: organization.to_string(),
                    user: Some(User {
                        // A user needs a display name: the id, when none is given.
                        display_name: if m.display_name.is_empty() {
                            m.user_id.clone()
                        } else {
                            m.display_name.clone()
                        },
                        email: m.email.clone(),
                        regions: project.regions.clone(),
                        ..Default::default()
                    }),
                    user_id: m.user_id.clone(),
                    request_id: String::new(),
                })),
                counts: regions
                    .iter()
                    .map(|r| (r.clone(), Counted::Users, 1))
                    .collect(),
            }),
            None => {
                return Err(Status::failed_precondition(format!(
                "member {uname} is not a user of the organization: create it, or set create_user"
            )))
            }
        }
        let create = Step {
            shown: step(
                Action::Create,
                "membership",
                &mname,
                &[],
                &why(managed.contains(&mname), true, "not there"),
            ),
            op: Some(Op::CreateMembership(CreateMembershipRequest {
                parent: pname.clone(),
                membership: Some(Membership {
                    user: uname.clone(),
                    role: m.role,
                    ..Default::default()
                }),
                request_id: String::new(),
            })),
            counts: Vec::new(),
        };
        match actual.members.get(&mname) {
            None => member_steps.push(create),
            Some(have) if !managed.contains(&mname) => {
                return Err(not_ours(&mname, &have.managed_by))
            }
            Some(have) if have.role == m.role => member_steps.push(unchanged("membership", &mname)),
            Some(_) => {
                removals.push(Step {
                    shown: step(
                        Action::Delete,
                        "membership",
                        &mname,
                        &["role"],
                        "replaced: role cannot change in place",
                    ),
                    op: Some(delete_of("membership", &mname)),
                    counts: Vec::new(),
                });
                let mut create = create;
                create.shown.fields = vec!["role".to_string()];
                create.shown.reason = "replaced: role cannot change in place".to_string();
                member_steps.push(create);
            }
        }
    }

    // Networks.
    let mut wanted_networks = BTreeSet::new();
    for n in &desired.networks {
        let name = format!("{pname}/networks/{}", n.network_id);
        wanted_networks.insert(name.clone());
        let gateway = if n.gateway_ip.is_empty() {
            validate::default_gateway(&n.cidr).unwrap_or_default()
        } else {
            n.gateway_ip.clone()
        };
        let same = applied
            .map(|a| a.networks.iter().any(|x| x == n))
            .unwrap_or(false);
        let create = |fields: &[&str], reason: String| Step {
            shown: step(Action::Create, "network", &name, fields, &reason),
            op: Some(Op::CreateNetwork(CreateNetworkRequest {
                parent: pname.clone(),
                network: Some(Network {
                    region: n.region.clone(),
                    cidr: n.cidr.clone(),
                    gateway_ip: n.gateway_ip.clone(),
                    dns_servers: n.dns_servers.clone(),
                    ..Default::default()
                }),
                network_id: n.network_id.clone(),
                request_id: String::new(),
            })),
            counts: vec![(n.region.clone(), Counted::Networks, 1)],
        };
        match actual.networks.get(&name) {
            None => {
                network_steps.push(create(&[], why(managed.contains(&name), same, "not there")))
            }
            Some(have) if !managed.contains(&name) => {
                return Err(not_ours(&name, &have.managed_by))
            }
            Some(have) => {
                let mut fixed = Vec::new();
                if have.region != n.region {
                    fixed.push("region");
                }
                if have.cidr != n.cidr {
                    fixed.push("cidr");
                }
                if have.gateway_ip != gateway {
                    fixed.push("gateway_ip");
                }
                let update = (have.dns_servers != n.dns_servers).then(|| {
                    Op::UpdateNetwork(UpdateNetworkRequest {
                        network: Some(Network {
                            name: name.clone(),
                            dns_servers: n.dns_servers.clone(),
                            ..Default::default()
                        }),
                        update_mask: mask("dns_servers"),
                        request_id: String::new(),
                    })
                });
                let delete = delete_of("network", &name);
                let changed = Changed {
                    kind: "network",
                    name: &name,
                    fixed,
                    update: update.map(|op| ("dns_servers", op)),
                    delete: (delete, (have.region.clone(), Counted::Networks, -1)),
                    drift: same,
                };
                changed.steps(&mut removals, &mut network_steps, create);
            }
        }
    }

    // Access rules.
    let mut wanted_rules = BTreeSet::new();
    for r in &desired.access_rules {
        let name = format!("{pname}/accessRules/{}", r.access_rule_id);
        wanted_rules.insert(name.clone());
        let want = rule_of(r);
        let same = applied
            .map(|a| a.access_rules.iter().any(|x| x == r))
            .unwrap_or(false);
        let create = |fields: &[&str], reason: String| Step {
            shown: step(Action::Create, "accessRule", &name, fields, &reason),
            op: Some(Op::CreateRule(CreateAccessRuleRequest {
                parent: pname.clone(),
                access_rule: Some(want.clone()),
                access_rule_id: r.access_rule_id.clone(),
                request_id: String::new(),
            })),
            counts: vec![(r.region.clone(), Counted::AccessRules, 1)],
        };
        match actual.rules.get(&name) {
            None => rule_steps.push(create(&[], why(managed.contains(&name), same, "not there"))),
            Some(have) if !managed.contains(&name) => {
                return Err(not_ours(&name, &have.managed_by))
            }
            Some(have) => {
                let mut fixed = Vec::new();
                if have.region != want.region {
                    fixed.push("region");
                }
                if have.direction != want.direction {
                    fixed.push("direction");
                }
                if have.protocol != want.protocol {
                    fixed.push("protocol");
                }
                if (have.port_range_min, have.port_range_max)
                    != (want.port_range_min, want.port_range_max)
                {
                    fixed.push("port_range");
                }
                if have.remote_cidr != want.remote_cidr {
                    fixed.push("remote_cidr");
                }
                let update = (have.description != want.description).then(|| {
                    Op::UpdateRule(UpdateAccessRuleRequest {
                        access_rule: Some(AccessRule {
                            name: name.clone(),
                            description: want.description.clone(),
                            ..Default::default()
                        }),
                        update_mask: mask("description"),
                        request_id: String::new(),
                    })
                });
                let delete = delete_of("accessRule", &name);
                let changed = Changed {
                    kind: "accessRule",
                    name: &name,
                    fixed,
                    update: update.map(|op| ("description", op)),
                    delete: (delete, (have.region.clone(), Counted::AccessRules, -1)),
                    drift: same,
                };
                changed.steps(&mut removals, &mut rule_steps, create);
            }
        }
    }

    // What the environment made and its spec no longer has: rules first,
    // then networks, members and users.
    let gone = "no longer in the spec";
    let mut dropped = Vec::new();
    for (name, have) in &actual.rules {
        if managed.contains(name) && !wanted_rules.contains(name) {
            dropped.push(Step {
                shown: step(Action::Delete, "accessRule", name, &[], gone),
                op: Some(delete_of("accessRule", name)),
                counts: vec![(have.region.clone(), Counted::AccessRules, -1)],
            });
        }
    }
    for (name, have) in &actual.networks {
        if managed.contains(name) && !wanted_networks.contains(name) {
            dropped.push(Step {
                shown: step(Action::Delete, "network", name, &[], gone),
                op: Some(delete_of("network", name)),
                counts: vec![(have.region.clone(), Counted::Networks, -1)],
            });
        }
    }
    for name in actual.members.keys() {
        if managed.contains(name) && !wanted_members.contains(name) {
            dropped.push(Step {
                shown: step(Action::Delete, "membership", name, &[], gone),
                op: Some(delete_of("membership", name)),
                counts: Vec::new(),
            });
        }
    }
    for name in managed {
        if name.contains("/users/") && !wanted_users.contains(name) {
            dropped.push(Step {
                shown: step(Action::Delete, "user", name, &[], gone),
                op: Some(delete_of("user", name)),
                counts: regions
                    .iter()
                    .map(|r| (r.clone(), Counted::Users, -1))
                    .collect(),
            });
        }
    }
    dropped.extend(removals);
    // Rules before networks among the removals too.
    dropped.sort_by_key(|s| match s.shown.kind.as_str() {
        "accessRule" => 0,
        "network" => 1,
        "membership" => 2,
        _ => 3,
    });
    let mut steps = dropped;
    steps.extend(project_steps);
    steps.extend(user_steps);
    steps.extend(member_steps);
    steps.extend(network_steps);
    steps.extend(rule_steps);
    Ok(steps)
}

/// The steps that remove everything the environment made, in the order
/// they run: rules, networks, members, the project, then the users it
/// created. What is already gone is left out.
pub(super) fn teardown(managed: &BTreeSet<String>) -> Vec<Step> {
    let rank = |name: &str| {
        if name.contains("/accessRules/") {
            0
        } else if name.contains("/networks/") {
            1
        } else if name.contains("/members/") {
            2
        } else if name.starts_with("projects/") {
            3
        } else {
            4
        }
    };
    let mut names: Vec<&String> = managed.iter().collect();
    names.sort_by_key(|n| rank(n));
    names
        .into_iter()
        .map(|name| {
            let kind = ["accessRule", "network", "membership", "project", "user"][rank(name)];
            Step {
                shown: step(
                    Action::Delete,
                    kind,
                    name,
                    &[],
                    "the environment is deleted",
                ),
                op: Some(delete_of(kind, name)),
                counts: Vec::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nordlys_proto::pb::nordlys::v1::{EnvironmentNetwork, EnvironmentProject};

    fn spec() -> EnvironmentSpec {
        EnvironmentSpec {
            project: Some(EnvironmentProject {
                project_id: "web".into(),
                display_name: "Web".into(),
                regions: vec!["sto1".into(), "osl1".into()],
                ..Default::default()
            }),
            networks: vec![EnvironmentNetwork {
                network_id: "backend".into(),
                region: "sto1".into(),
                cidr: "10.1.0.0/24".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn ready(regions: &[&str]) -> Vec<RegionStatus> {
        regions
            .iter()
            .map(|r| RegionStatus {
                region: r.to_string(),
                state: RegionState::Ready as i32,
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn a_project_cut_short_in_a_region_is_created_again_there() {
        let managed: BTreeSet<String> = ["projects/web".to_string()].into_iter().collect();
        let mut spec = spec();
        spec.networks.clear();
        let actual = Actual {
            project: Some(Project {
                name: "projects/web".into(),
                organization: "organizations/acme".into(),
                display_name: "Web".into(),
                regions: vec!["sto1".into(), "osl1".into()],
                region_status: ready(&["sto1"]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let steps = plan(&spec, None, &actual, &managed, "organizations/acme").expect("plan");
        assert_eq!(steps[0].shown.action, Action::Create as i32);
        assert_eq!(steps[0].shown.reason, "not there yet in osl1");
    }

    fn actions(steps: &[Step]) -> Vec<(i32, &str)> {
        steps
            .iter()
            .map(|s| (s.shown.action, s.shown.resource.as_str()))
            .collect()
    }

    #[test]
    fn a_new_environment_creates_the_project_before_its_network() {
        let steps = plan(
            &spec(),
            None,
            &Actual::default(),
            &BTreeSet::new(),
            "organizations/acme",
        )
        .expect("plan");
        assert_eq!(
            actions(&steps),
            [
                (Action::Create as i32, "projects/web"),
                (Action::Create as i32, "projects/web/networks/backend")
            ]
        );
        assert_eq!(steps[0].counts.len(), 2, "a project in each region");
    }

    #[test]
    fn what_exists_as_asked_is_unchanged_and_a_new_cidr_replaces_the_network() {
        let managed: BTreeSet<String> = ["projects/web", "projects/web/networks/backend"]
            .into_iter()
            .map(String::from)
            .collect();
        let mut actual = Actual {
            project: Some(Project {
                name: "projects/web".into(),
                organization: "organizations/acme".into(),
                display_name: "Web".into(),
                regions: vec!["osl1".into(), "sto1".into()],
                region_status: ready(&["osl1", "sto1"]),
                ..Default::default()
            }),
            ..Default::default()
        };
        actual.networks.insert(
            "projects/web/networks/backend".into(),
            Network {
                name: "projects/web/networks/backend".into(),
                region: "sto1".into(),
                cidr: "10.1.0.0/24".into(),
                gateway_ip: "10.1.0.1".into(),
                ..Default::default()
            },
        );
        let same = plan(
            &spec(),
            Some(&spec()),
            &actual,
            &managed,
            "organizations/acme",
        )
        .expect("plan");
        assert!(same
            .iter()
            .all(|s| s.shown.action == Action::Unchanged as i32));
        let mut changed = spec();
        changed.networks[0].cidr = "10.2.0.0/24".into();
        let steps = plan(
            &changed,
            Some(&spec()),
            &actual,
            &managed,
            "organizations/acme",
        )
        .expect("plan");
        assert_eq!(
            actions(&steps),
            [
                (Action::Delete as i32, "projects/web/networks/backend"),
                (Action::Unchanged as i32, "projects/web"),
                (Action::Create as i32, "projects/web/networks/backend"),
            ]
        );
        assert_eq!(steps[0].shown.fields, ["cidr", "gateway_ip"]);
    }

    #[test]
    fn a_managed_network_deleted_outside_is_drift_and_a_stranger_is_refused() {
        let managed: BTreeSet<String> = ["projects/web", "projects/web/networks/backend"]
            .into_iter()
            .map(String::from)
            .collect();
        let actual = Actual {
            project: Some(Project {
                name: "projects/web".into(),
                organization: "organizations/acme".into(),
                display_name: "Web".into(),
                regions: vec!["sto1".into(), "osl1".into()],
                region_status: ready(&["sto1", "osl1"]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let steps = plan(
            &spec(),
            Some(&spec()),
            &actual,
            &managed,
            "organizations/acme",
        )
        .expect("plan");
        assert_eq!(steps[1].shown.reason, "changed outside the environment");
        let err = plan(
            &spec(),
            None,
            &actual,
            &BTreeSet::new(),
            "organizations/acme",
        )
        .expect_err("not ours");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    }

    #[test]
    fn teardown_removes_children_before_the_project_and_users_last() {
        let managed: BTreeSet<String> = [
            "organizations/acme/users/ada",
            "projects/web",
            "projects/web/accessRules/ssh",
            "projects/web/members/ada",
            "projects/web/networks/backend",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let order: Vec<String> = teardown(&managed)
            .into_iter()
            .map(|s| s.shown.resource)
            .collect();
        assert_eq!(
            order,
            [
                "projects/web/accessRules/ssh",
                "projects/web/networks/backend",
                "projects/web/members/ada",
                "projects/web",
                "organizations/acme/users/ada"
            ]
        );
    }

    fn quota(tier: &str, pending: Option<&str>) -> Quota {
        Quota {
            name: "organizations/acme/quotas/sto1".into(),
            tier: tier.into(),
            tiers: vec!["small".into(), "medium".into(), "large".into()],
            pending_tier_change: pending.map(|t| nordlys_proto::pb::nordlys::v1::TierChange {
                tier: t.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_tier_is_raised_only_when_below_the_one_needed() {
        let org = "organizations/acme";
        assert!(tier("", &quota("small", None), org, false)
            .expect("none")
            .is_none());
        for have in ["medium", "large"] {
            let same = tier("medium", &quota(have, None), org, false)
                .expect("planned")
                .expect("a step");
            assert_eq!(same.shown.action, Action::Unchanged as i32, "{have}");
            assert!(same.op.is_none());
        }
        let raise = tier("large", &quota("small", None), org, false)
            .expect("planned")
            .expect("a step");
        assert_eq!(raise.shown.action, Action::Update as i32);
        assert_eq!(raise.shown.resource, org);
        assert!(raise.counts.is_empty(), "a tier counts against no quota");
        assert!(matches!(
            raise.op,
            Some(Op::RaiseTier { set: false, ref request, .. }) if request.tier == "large"
        ));
        let by_operator = tier("large", &quota("small", None), org, true)
            .expect("planned")
            .expect("a step");
        assert!(matches!(
            by_operator.op,
            Some(Op::RaiseTier { set: true, ref quota, .. }) if quota == "organizations/acme/quotas/sto1"
        ));
        let waiting = tier("large", &quota("small", Some("large")), org, false)
            .expect("planned")
            .expect("a step");
        assert!(
            waiting.shown.reason.contains("waiting"),
            "{:?}",
            waiting.shown
        );
    }

    #[test]
    fn another_organizations_project_is_refused() {
        let mut actual = Actual {
            project: Some(Project {
                name: "projects/web".into(),
                organization: "organizations/other".into(),
                display_name: "Web".into(),
                regions: vec!["sto1".into(), "osl1".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let managed: BTreeSet<String> = ["projects/web".to_string()].into();
        let refused = plan(&spec(), None, &actual, &managed, "organizations/acme")
            .expect_err("another organization's");
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(
            refused.message().contains("organizations/other"),
            "{refused:?}"
        );
        if let Some(p) = actual.project.as_mut() {
            p.organization = "organizations/acme".into();
        }
        plan(&spec(), None, &actual, &managed, "organizations/acme").expect("its own");
    }

    #[test]
    fn an_unknown_tier_names_the_field() {
        let org = "organizations/acme";
        let unknown = tier("huge", &quota("small", None), org, false).expect_err("unknown");
        assert_eq!(unknown.code(), tonic::Code::InvalidArgument);
        assert!(
            unknown.message().contains("small, medium, large"),
            "{unknown:?}"
        );
        let mut none = quota("", None);
        none.tiers.clear();
        let unconfigured = tier("small", &none, org, false).expect_err("no tiers");
        assert!(
            unconfigured.message().contains("no quota tiers"),
            "{unconfigured:?}"
        );
    }
}
