//! Moving a project between regions: UpdateProject with `regions` in its
//! mask. A region added gets the project, under that region's projects
//! quota, with its memberships (and the organization's quota tier, which the
//! region applies to every project it creates); a region left out loses the
//! project, with what it holds there.
//!
//! The order makes every step safe to repeat, so a retry with the same
//! request id finishes what a crash or a lost answer cut short:
//! 1. refuse before changing anything: a region that does not answer, a
//!    region left out that still holds networks or access rules (unless
//!    `force`), a new region over its quota (reserved now, so nothing can
//!    take the room meanwhile);
//! 2. update the regions that have the project (the etag is checked there,
//!    and a region that already applied this request id answers as it is);
//! 3. create it in the new regions, as the update left it, and copy its
//!    memberships there;
//! 4. delete it in the regions left out.

use nordlys_api::{ids, names};
use nordlys_proto::pb::nordlys::regiond::v1::{DeleteResponse, ListRequest};
use nordlys_proto::pb::nordlys::v1::{
    region_status::State, AccessRule, CreateMembershipRequest, CreateProjectRequest,
    DeleteMembershipRequest, DeleteProjectRequest, GetProjectRequest, ListAccessRulesResponse,
    ListMembershipsResponse, ListNetworksResponse, Membership, Network, Project,
    UpdateProjectRequest,
};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::projects::not_found_as;
use super::{first_success, Api, Fanout, Kind, Settlement};
use crate::call::Call;
use crate::scatter::Listed;

/// Whether two placements hold the same regions, in any order.
fn same_regions(a: &[String], b: &[String]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort();
    b.sort();
    a == b
}

/// The `type` of the precondition violation naming what a region left out
/// still holds.
const REGION_NOT_EMPTY: &str = "REGION_NOT_EMPTY";
/// Names listed in that refusal at most; the count says the rest.
const NAMED_AT_MOST: usize = 20;
/// Page size when reading a project's children and memberships.
const PAGE: i32 = 100;

impl Api {
    /// Applies `req` (already checked, its mask spelled out and naming
    /// `regions`, its request id set) and answers the project as it is
    /// after it.
    pub(super) async fn update_placement(
        &self,
        call: &Call,
        req: UpdateProjectRequest,
    ) -> Result<Project, Status> {
        let wanted = req
            .project
            .as_ref()
            .map(|p| p.regions.clone())
            .unwrap_or_default();
        let name = req
            .project
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let request_id = req.request_id.clone();

        // 1. Where it is, and whether the change may go ahead.
        let (current, unreachable): (Project, _) = self
            .gather_one(call, "GetProject", GetProjectRequest { name: name.clone() })
            .await
            .map_err(|s| not_found_as(s, &name))?;
        if !unreachable.is_empty() {
            return Err(Status::unavailable(format!(
                "{name}'s regions cannot change while {} does not answer; retry",
                unreachable.join(", ")
            )));
        }
        let org = current.organization.clone();
        let present: Vec<String> = current
            .region_status
            .iter()
            .filter(|s| s.state == State::Ready as i32)
            .map(|s| s.region.clone())
            .collect();
        let added: Vec<String> = wanted
            .iter()
            .filter(|r| !present.contains(r))
            .cloned()
            .collect();
        let removed: Vec<String> = present
            .iter()
            .filter(|r| !wanted.contains(r))
            .cloned()
            .collect();
        if !removed.is_empty() && !req.force {
            self.refuse_unless_empty(call, &name, &org, &removed)
                .await?;
        }
        // Stable for a retried update, so the project is created (and
        // counted) once in each new region.
        let placing_id = ids::reservation(&org, &name, &request_id);
        let fanout = Fanout {
            method: "CreateProject",
            undo: "DeleteProject",
            organization: &org,
            resource: &name,
            request_id: &placing_id,
            placement: &added,
            kind: Some(Kind::Projects),
        };
        let reservation = if added.is_empty() {
            None
        } else {
            Some(self.reserve(call, &fanout).await?.0)
        };

        // 2. The regions that have it.
        let updated = self
            .change_everywhere::<_, Project>(call, "UpdateProject", req.clone(), &request_id)
            .await
            .map_err(|s| not_found_as(s, &name));
        let updated = match updated {
            // A replay of this request id after a new region refused it
            // (its regions were put back), or another update in between:
            // going on would place the project apart from its record.
            Ok((updated, _)) if !same_regions(&updated.regions, &wanted) => {
                Err(Status::aborted(format!(
                    "{name}'s regions changed meanwhile; read it and retry with a new request id"
                )))
            }
            Ok((updated, _)) => Ok(updated),
            Err(status) => Err(status),
        };
        let updated = match updated {
            Ok(updated) => updated,
            Err(status) => {
                if let Some(reservation) = &reservation {
                    self.settle(call, reservation, &org, Settlement::Release(added.clone()))
                        .await;
                }
                return Err(status);
            }
        };

        // 3. The new regions: the project as the update left it.
        if !added.is_empty() {
            let mut placed = updated.clone();
            placed.region_status.clear();
            placed.etag.clear();
            let project_id = names::parse(&name, &["projects"])
                .and_then(|ids| ids.first().map(|id| id.to_string()))
                .unwrap_or_default();
            let create = CreateProjectRequest {
                project: Some(placed),
                project_id,
                request_id: placing_id.clone(),
            };
            let answers = self
                .create_in_regions::<_, Project, _>(call, fanout, create, |name| {
                    DeleteProjectRequest {
                        name,
                        ..Default::default()
                    }
                })
                .await;
            let answers = match answers {
                Ok(answers) => answers,
                // A region refused: the others undid theirs, so nothing
                // holds the project where the record is being put back.
                Err(refusal) => {
                    self.restore_placement(call, &current, &request_id).await;
                    return Err(refusal);
                }
            };
            let made: Vec<String> = answers
                .iter()
                .filter(|(_, a)| a.is_ok())
                .map(|(r, _)| r.clone())
                .collect();
            if made.is_empty() {
                // Not answered: the region may still make it, and this
                // update retried finishes the move.
                return first_success(answers).map(|(p, _)| p);
            }
            self.copy_memberships(call, &org, &name, &present, &made, &request_id)
                .await?;
        }

        // 4. The regions left out.
        for region in &removed {
            let req = DeleteProjectRequest {
                name: name.clone(),
                ..Default::default()
            };
            let outgoing = call.outgoing(req, None)?;
            match self
                .state
                .regions
                .call::<_, DeleteResponse>(region, "DeleteProject", outgoing)
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => return Err(s),
            }
        }

        let (mut project, unreachable): (Project, _) = self
            .gather_one(call, "GetProject", GetProjectRequest { name: name.clone() })
            .await
            .map_err(|s| not_found_as(s, &name))?;
        super::projects::complete_statuses(&mut project, &unreachable);
        Ok(project)
    }

    /// FAILED_PRECONDITION naming the networks and access rules `project`
    /// has in `regions`, when it has any.
    async fn refuse_unless_empty(
        &self,
        call: &Call,
        project: &str,
        org: &str,
        regions: &[String],
    ) -> Result<(), Status> {
        let mut held: Vec<String> = Vec::new();
        let mut total = 0usize;
        for region in regions {
            let networks: Vec<Network> = self
                .all_children(
                    call,
                    "ListNetworks",
                    project,
                    org,
                    region,
                    |r: ListNetworksResponse| r.networks,
                )
                .await?;
            let rules: Vec<AccessRule> = self
                .all_children(
                    call,
                    "ListAccessRules",
                    project,
                    org,
                    region,
                    |r: ListAccessRulesResponse| r.access_rules,
                )
                .await?;
            let names = networks
                .iter()
                .map(|n| n.name.clone())
                .chain(rules.iter().map(|r| r.name.clone()));
            for name in names {
                total += 1;
                if held.len() < NAMED_AT_MOST {
                    held.push(format!("{name} in {region}"));
                }
            }
        }
        if total == 0 {
            return Ok(());
        }
        let more = if total > held.len() {
            format!(" and {} more", total - held.len())
        } else {
            String::new()
        };
        let message = format!(
            "project.regions leaves out {}, where {project} still holds {}{more}: delete them first, or set force to delete them with the project there",
            regions.join(", "),
            held.join(", ")
        );
        let mut details = ErrorDetails::new();
        for region in regions {
            details.add_precondition_failure_violation(
                REGION_NOT_EMPTY,
                format!("regions/{region}"),
                message.clone(),
            );
        }
        Err(Status::with_error_details(
            Code::FailedPrecondition,
            message,
            details,
        ))
    }

    /// Every child of `project` that `method` lists in `region`, page
    /// after page, each under the call's own deadline (not the shorter one
    /// a public list gives each region: an answer is needed, not a page).
    async fn all_children<Resp, T>(
        &self,
        call: &Call,
        method: &str,
        project: &str,
        org: &str,
        region: &str,
        items: fn(Resp) -> Vec<T>,
    ) -> Result<Vec<T>, Status>
    where
        Resp: prost::Message + Default + 'static,
        T: Listed,
    {
        let mut out: Vec<T> = Vec::new();
        loop {
            let req = ListRequest {
                parent: project.to_string(),
                organization: org.to_string(),
                after: out.last().map(|t| t.name().to_string()).unwrap_or_default(),
                limit: PAGE,
            };
            let outgoing = call.outgoing(req, None)?;
            let page = self
                .state
                .regions
                .call::<ListRequest, Resp>(region, method, outgoing)
                .await
                .map(items)?;
            let full = page.len() >= PAGE as usize;
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }

    /// Grants in `added` every role `project` has in `present` (placing the
    /// users there first, as a grant does).
    async fn copy_memberships(
        &self,
        call: &Call,
        org: &str,
        project: &str,
        present: &[String],
        added: &[String],
        request_id: &str,
    ) -> Result<(), Status> {
        let Some(source) = present.first() else {
            return Ok(());
        };
        let memberships: Vec<Membership> = self
            .all_children(
                call,
                "ListMemberships",
                project,
                org,
                source,
                |r: ListMembershipsResponse| r.memberships,
            )
            .await?;
        for membership in memberships {
            let granting_id = ids::reservation(org, &membership.name, request_id);
            self.place_user(call, org, &membership.user, added, &granting_id)
                .await?;
            let mut copy = membership.clone();
            copy.region_status.clear();
            copy.etag.clear();
            let name = copy.name.clone();
            let req = CreateMembershipRequest {
                parent: project.to_string(),
                membership: Some(copy),
                request_id: granting_id.clone(),
            };
            let answers = self
                .create_in_regions::<_, Membership, _>(
                    call,
                    Fanout {
                        method: "CreateMembership",
                        undo: "DeleteMembership",
                        organization: org,
                        resource: &name,
                        request_id: &granting_id,
                        placement: added,
                        kind: None,
                    },
                    req,
                    |name| DeleteMembershipRequest {
                        name,
                        ..Default::default()
                    },
                )
                .await?;
            first_success(answers)?;
        }
        Ok(())
    }

    /// Puts back the placement (and the fields) an update changed, after a
    /// new region refused the project. Logged when it fails: the regions
    /// then list a region without the project, which GetProject shows as
    /// FAILED there, and the same update retried finishes the move.
    async fn restore_placement(&self, call: &Call, before: &Project, request_id: &str) {
        let mut project = before.clone();
        project.region_status.clear();
        project.etag.clear();
        let req = UpdateProjectRequest {
            project: Some(project),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![
                    "display_name".into(),
                    "description".into(),
                    "regions".into(),
                ],
            }),
            request_id: format!("undo-{}", ids::reservation("", &before.name, request_id)),
            force: false,
        };
        let undo_id = req.request_id.clone();
        if let Err(e) = self
            .change_everywhere::<_, Project>(call, "UpdateProject", req, &undo_id)
            .await
        {
            tracing::error!(project = %before.name, error = %e, "could not put back a project's regions after a new region refused it");
        }
    }
}
