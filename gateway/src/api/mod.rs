//! The public services. One `Api` value implements every `nordlys.v1`
//! service; each file holds one service. The shared shapes of a call
//! (fan-out create under quota, gather one, list across regions, delete
//! everywhere) live here so the resources only say what differs.

mod access_rules;
mod dispatch;
mod environments;
mod events;
mod memberships;
mod networks;
mod organizations;
mod placement;
mod projects;
mod quotas;
mod regions;
mod users;

use std::sync::Arc;
use std::time::Duration;

use nordlys_api::{names, page, Violations};
use nordlys_proto::pb::nordlys::quota::v1::{
    CommitRequest, CommitResponse, RegionCounts, ReleaseRequest, ReleaseResponse, ReserveRequest,
    ReserveResponse,
};
use nordlys_proto::pb::nordlys::regiond::v1::{DeleteResponse, ListRequest};
use nordlys_proto::pb::nordlys::v1::{RegionStatus, ResourceCounts};
use nordlys_transport::{Identity, Role};
use prost::Message;
use tonic::{Code, Status};

use crate::call::Call;
use crate::events::Change;
use crate::scatter::{
    is_unreachable, merge_pages, region_status, scatter, sort_by_region, Listed, Page,
};
use crate::state::State;

pub(crate) use environments::EnvironmentStore;

/// Implements every public service over the shared [`State`].
#[derive(Debug, Clone)]
pub(crate) struct Api {
    state: Arc<State>,
}

/// A kind of resource that counts against quota.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Projects,
    Users,
    Networks,
    AccessRules,
}

impl Kind {
    fn one(self) -> ResourceCounts {
        let mut c = ResourceCounts::default();
        match self {
            Kind::Projects => c.projects = 1,
            Kind::Users => c.users = 1,
            Kind::Networks => c.networks = 1,
            Kind::AccessRules => c.access_rules = 1,
        }
        c
    }
}

/// What a fanned-out create is about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fanout<'a> {
    /// The regiond create method.
    pub(crate) method: &'a str,
    /// The regiond delete method that undoes it.
    pub(crate) undo: &'a str,
    /// The owning organization, whose quota is charged.
    pub(crate) organization: &'a str,
    /// The resource name.
    pub(crate) resource: &'a str,
    /// The caller's idempotency key (may be empty).
    pub(crate) request_id: &'a str,
    /// The regions to create it in.
    pub(crate) placement: &'a [String],
    /// What it counts against, if anything.
    pub(crate) kind: Option<Kind>,
}

/// What becomes of a create's reservation once the regions answered.
#[derive(Debug, Clone)]
enum Settlement {
    /// These regions made it: count it there.
    Commit(Vec<RegionCounts>),
    /// These regions hold nothing: give their part back.
    Release(Vec<String>),
}

/// How long an uncommitted reservation lives: longer than any call.
const RESERVATION_TTL_SECONDS: u32 = 120;

impl Api {
    pub(crate) fn new(state: Arc<State>) -> Api {
        Api { state }
    }

    /// Sets `resource`'s `managed_by` from the environments' markers (and
    /// clears whatever a region kept there). Project ids are global, so a
    /// mark left on a name another organization has since taken must not
    /// show there: a mark counts only for a resource of the environment's
    /// organization (the resource's own, else the caller's; an operator's
    /// read of a network or rule, which carries none, trusts the mark).
    fn mark<T: Listed>(&self, call: &Call, resource: &mut T) {
        let environment = self
            .state
            .environments
            .markers()
            .managed_by(resource.name())
            .filter(|env| {
                let organization = resource.organization().or_else(|| {
                    (call.caller.role != Role::Operator)
                        .then_some(call.caller.organization.as_str())
                });
                organization.is_none_or(|org| names::organization_of(env) == Some(org))
            })
            .unwrap_or_default();
        resource.set_managed_by(environment);
    }

    /// `resource`, [`Api::mark`]ed.
    fn marked<T: Listed>(&self, call: &Call, mut resource: T) -> T {
        self.mark(call, &mut resource);
        resource
    }

    /// The organization a create or list is for: the one named in `given`
    /// (operators must name one), else the caller's own. Naming another
    /// organization is PERMISSION_DENIED for everyone but operators.
    fn resolve_org(&self, call: &Call, given: &str, field: &str) -> Result<String, Status> {
        let caller: &Identity = &call.caller;
        if given.is_empty() {
            if caller.role == Role::Operator {
                return Err(nordlys_api::invalid(
                    field,
                    "operators must name the organization",
                ));
            }
            return Ok(caller.organization.clone());
        }
        names::parse_field(given, &["organizations"], field)?;
        if !caller.can_see(given) {
            let status = Status::permission_denied(format!("the caller may not act in {given}"));
            self.state.events.refused(call, given, &status);
            return Err(status);
        }
        Ok(given.to_string())
    }

    /// PERMISSION_DENIED, recorded as an event, unless the caller may
    /// change resources; `subject` names what it tried to change.
    fn require_write(&self, call: &Call, subject: &str) -> Result<(), Status> {
        crate::auth::require_write(&call.caller).inspect_err(|status| {
            self.state.events.refused(call, subject, status);
        })
    }

    /// Records `change` made by `call`.
    fn changed(&self, call: &Call, change: Change) {
        self.state.events.changed(call, change);
    }

    /// The organization owning the resource `name` names, for the event of
    /// a delete: the caller's own, the organization in the name, or (an
    /// operator deleting under a project) the project's, looked up. `None`
    /// when the lookup fails: the delete will fail the same way.
    async fn owner_of(&self, call: &Call, name: &str) -> Option<String> {
        if call.caller.role != Role::Operator {
            return Some(call.caller.organization.clone());
        }
        let mut parts = name.split('/');
        match (parts.next(), parts.next()) {
            (Some("organizations"), Some(org)) => Some(names::organization(org)),
            (Some("projects"), Some(project)) => {
                self.project_org(call, &names::project(project)).await.ok()
            }
            _ => None,
        }
    }

    /// Forwards a change to the quota service and records it, or records
    /// its refusal. `target` names what is changed; `change` makes the
    /// event from the answer.
    async fn forward_change<Req, Resp>(
        &self,
        call: &Call,
        method: &str,
        target: &str,
        req: Req,
        change: impl FnOnce(&Resp) -> Change,
    ) -> Result<tonic::Response<Resp>, Status>
    where
        Req: prost::Message + 'static,
        Resp: prost::Message + Default + 'static,
    {
        match self.state.quota.call::<Req, Resp>(method, call, req).await {
            Ok(answer) => {
                self.changed(call, change(&answer));
                Ok(tonic::Response::new(answer))
            }
            Err(status) => {
                self.state.events.refused(call, target, &status);
                Err(status)
            }
        }
    }

    /// Forwards a call to the quota service and records its refusal like
    /// the gateway's own, about `target`; what an answer changed, if
    /// anything, the caller records.
    async fn forward_call<Req, Resp>(
        &self,
        call: &Call,
        method: &str,
        target: &str,
        req: Req,
    ) -> Result<Resp, Status>
    where
        Req: prost::Message + 'static,
        Resp: prost::Message + Default + 'static,
    {
        self.state
            .quota
            .call::<Req, Resp>(method, call, req)
            .await
            .inspect_err(|status| self.state.events.refused(call, target, status))
    }

    /// Checks that each well-formed region of an update's new placement is
    /// known here; the update's own field checks (nordlys_api::update) have
    /// said the rest (at least one, each a region id, none twice).
    fn check_known(&self, v: &mut Violations, field: &str, regions: &[String]) {
        for (i, region) in regions.iter().enumerate() {
            if nordlys_api::validate::is_region(region) {
                self.state.check_region(v, &format!("{field}[{i}]"), region);
            }
        }
    }

    /// Checks a placement: at least one region, each known, none twice.
    fn check_placement(&self, v: &mut Violations, field: &str, regions: &[String]) {
        if regions.is_empty() {
            v.add(field, "at least one region is required");
        }
        if regions.len() > 16 {
            v.add(field, "at most 16 regions");
        }
        for (i, region) in regions.iter().enumerate() {
            let f = format!("{field}[{i}]");
            self.state.check_region(v, &f, region);
            if regions[..i].contains(region) {
                v.add(f, format!("region {region:?} is listed twice"));
            }
        }
    }

    /// Creates one resource in every region of `spec.placement`, under
    /// quota: reserve in all regions first (all or nothing), then call the
    /// regions at once. When a region refuses (bad input, a failed
    /// precondition, a conflict), the regions that created it undo it with
    /// `undo`, and the refusal is the answer: no half-created resource. A
    /// region that does not answer only marks its own status. Then the
    /// regions that succeeded are committed and the rest released. The
    /// reservation id derives from the request id, so a repeated create
    /// never counts twice.
    async fn create_in_regions<Req, Resp, Undo>(
        &self,
        call: &Call,
        spec: Fanout<'_>,
        req: Req,
        undo: fn(String) -> Undo,
    ) -> Result<Vec<(String, Result<Resp, Status>)>, Status>
    where
        Req: Message + Clone + 'static,
        Resp: Message + Default + 'static,
        Undo: Message + Clone + Default + 'static,
    {
        let organization = spec.organization;
        let (reservation, tier) = self.reserve(call, &spec).await?;
        let answers = scatter(spec.placement, |region| {
            let outgoing = call
                .outgoing_with_id(req.clone(), spec.request_id)
                .map(|o| o.with_tier(&tier));
            async move {
                self.state
                    .regions
                    .call::<Req, Resp>(&region, spec.method, outgoing?)
                    .await
            }
        })
        .await;
        let done: Vec<String> = answers
            .iter()
            .filter(|(_, a)| a.is_ok())
            .map(|(r, _)| r.clone())
            .collect();
        let refusal = answers.iter().find_map(|(_, a)| match a {
            Err(s) if !is_unreachable(s) => Some(s.clone()),
            _ => None,
        });
        if let Some(refusal) = refusal {
            let undone = self
                .undo(
                    call,
                    spec.undo,
                    &done,
                    undo(spec.resource.to_string()),
                    spec.request_id,
                )
                .await;
            if spec.kind.is_some() {
                // Only the regions known to hold nothing give their part
                // back now: those that refused, and those whose undo went
                // through. A region that did not answer (or whose undo did
                // not) may still hold the resource; its daemon commits or
                // releases its part once it knows, and it lapses otherwise.
                let mut release: Vec<String> = answers
                    .iter()
                    .filter(|(_, a)| matches!(a, Err(s) if !is_unreachable(s)))
                    .map(|(r, _)| r.clone())
                    .collect();
                release.extend(undone);
                self.settle(
                    call,
                    &reservation,
                    organization,
                    Settlement::Release(release),
                )
                .await;
            }
            return Err(refusal);
        }
        if let Some(kind) = spec.kind {
            let created = done
                .into_iter()
                .map(|region| RegionCounts {
                    region,
                    counts: Some(kind.one()),
                })
                .collect();
            self.settle(
                call,
                &reservation,
                organization,
                Settlement::Commit(created),
            )
            .await;
        }
        Ok(answers)
    }

    /// Reserves what `spec` creates (nothing when it counts against no
    /// quota) and returns the reservation id, with the organization's quota
    /// tier. The id derives from the request id, so reserving again for the
    /// same create changes nothing.
    async fn reserve(&self, call: &Call, spec: &Fanout<'_>) -> Result<(String, String), Status> {
        let reservation =
            nordlys_api::ids::reservation(spec.organization, spec.resource, spec.request_id);
        if let Some(kind) = spec.kind {
            let items = spec
                .placement
                .iter()
                .map(|region| RegionCounts {
                    region: region.clone(),
                    counts: Some(kind.one()),
                })
                .collect();
            let reserved: ReserveResponse = self
                .state
                .quota
                .call(
                    "Reserve",
                    call,
                    ReserveRequest {
                        reservation_id: reservation.clone(),
                        organization: spec.organization.to_string(),
                        items,
                        ttl_seconds: RESERVATION_TTL_SECONDS,
                    },
                )
                .await?;
            return Ok((reservation, reserved.tier));
        }
        Ok((reservation, String::new()))
    }

    /// Deletes what a refused create made in `regions`. The delete carries
    /// the create's request id: the regions take it for the undo of that
    /// create, give back nothing (nothing was committed) and forget the
    /// request id, so a retry can create.
    async fn undo<Undo: Message + Clone + Default + 'static>(
        &self,
        call: &Call,
        method: &str,
        regions: &[String],
        req: Undo,
        request_id: &str,
    ) -> Vec<String> {
        let mut undone = Vec::new();
        for (region, answer) in scatter(regions, |region| {
            let outgoing = call.outgoing_with_id(req.clone(), request_id);
            async move {
                self.state
                    .regions
                    .call::<Undo, DeleteResponse>(&region, method, outgoing?)
                    .await
            }
        })
        .await
        {
            match answer {
                Ok(_) => undone.push(region),
                Err(s) if s.code() == Code::NotFound => undone.push(region),
                Err(e) => {
                    tracing::error!(%region, method, error = %e, "could not undo a refused create")
                }
            }
        }
        undone
    }

    /// Commits a reservation for the regions that made the resource, or,
    /// with none, releases it. The commit names what each region created,
    /// so it counts even when the reservation lapsed meanwhile, and it
    /// leaves the reservation's other regions alone: a region that did not
    /// answer may still make it, and its daemon commits or releases its part
    /// once it knows. When the quota service cannot be reached the commit
    /// goes on in the background for a minute; after that the regions'
    /// daemons settle it (each keeps a durable note of its creates).
    async fn settle(
        &self,
        call: &Call,
        reservation: &str,
        organization: &str,
        settlement: Settlement,
    ) {
        if matches!(&settlement, Settlement::Release(regions) if regions.is_empty()) {
            return;
        }
        let quota = self.state.quota.clone();
        let call = call.clone();
        let (reservation, organization) = (reservation.to_string(), organization.to_string());
        let settle_once = move |call: Call| {
            let (quota, reservation, organization, settlement) = (
                quota.clone(),
                reservation.clone(),
                organization.clone(),
                settlement.clone(),
            );
            async move {
                match settlement {
                    Settlement::Release(regions) => {
                        let req = ReleaseRequest {
                            reservation_id: reservation,
                            organization,
                            regions,
                        };
                        quota
                            .call::<_, ReleaseResponse>("Release", &call, req)
                            .await
                            .map(|_| ())
                    }
                    Settlement::Commit(created) => {
                        let req = CommitRequest {
                            reservation_id: reservation,
                            organization,
                            regions: created.iter().map(|c| c.region.clone()).collect(),
                            created,
                        };
                        quota
                            .call::<_, CommitResponse>("Commit", &call, req)
                            .await
                            .map(|_| ())
                    }
                }
            }
        };
        let Err(first) = settle_once(call.clone()).await else {
            return;
        };
        tracing::warn!(error = %first, "could not settle a reservation; retrying in the background");
        // The retries stay in the call's trace.
        let (span, context) = nordlys_telemetry::follow_on("settle reservation");
        let retrying = async move {
            let mut delay = Duration::from_millis(100);
            let give_up = std::time::Instant::now() + Duration::from_secs(60);
            while std::time::Instant::now() < give_up {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                let retry = call.renewed(Duration::from_secs(5));
                match settle_once(retry).await {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(error = %e, "settling a reservation failed again"),
                }
            }
            tracing::error!("reservation left unsettled; it lapses after its TTL");
        };
        tokio::spawn(nordlys_telemetry::instrument(retrying, span, context));
    }

    /// Sends `req` to every known region at once; each region's answer.
    async fn ask_every_region<Req, Resp>(
        &self,
        call: &Call,
        method: &str,
        req: Req,
        request_id: &str,
    ) -> Vec<(String, Result<Resp, Status>)>
    where
        Req: Message + Clone + 'static,
        Resp: Message + Default + 'static,
    {
        let regions = self.state.discovery.known();
        scatter(&regions, |region| {
            let outgoing = call.outgoing_with_id(req.clone(), request_id);
            async move {
                self.state
                    .regions
                    .call::<Req, Resp>(&region, method, outgoing?)
                    .await
            }
        })
        .await
    }

    /// Asks every known region for one resource and merges what they have.
    /// NOT_FOUND when no region has it; UNAVAILABLE when none has it but
    /// some did not answer.
    async fn gather_one<Req, Resp>(
        &self,
        call: &Call,
        method: &str,
        req: Req,
    ) -> Result<(Resp, Vec<String>), Status>
    where
        Req: Message + Clone + 'static,
        Resp: Message + Default + 'static + Listed,
    {
        let answers = self
            .ask_every_region::<Req, Resp>(call, method, req, "")
            .await;
        let mut found: Option<Resp> = None;
        let mut unreachable = Vec::new();
        for (region, answer) in answers {
            match answer {
                Ok(item) => match found.as_mut() {
                    Some(existing) => existing.absorb(item),
                    None => found = Some(item),
                },
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) if is_unreachable(&s) => unreachable.push(region),
                Err(s) => return Err(s),
            }
        }
        match found {
            Some(mut item) => {
                self.mark(call, &mut item);
                Ok((item, unreachable))
            }
            None if unreachable.is_empty() => Err(Status::not_found("not found")),
            None => Err(Status::unavailable(format!(
                "not found in the regions that answered; unreachable: {}",
                unreachable.join(", ")
            ))),
        }
    }

    /// Lists across all known regions (or one), one merged page.
    #[allow(clippy::too_many_arguments)]
    async fn list<Resp, T>(
        &self,
        call: &Call,
        method: &str,
        parent: &str,
        organization: &str,
        only_region: Option<&str>,
        page_size: i32,
        page_token: &str,
        items: fn(Resp) -> Vec<T>,
    ) -> Result<(Page<T>, String), Status>
    where
        Resp: Message + Default + 'static,
        T: Listed,
    {
        let size = page::size(page_size)?;
        let fingerprint =
            page::fingerprint(&[method, parent, organization, only_region.unwrap_or("")]);
        let after = page::decode(page_token, &fingerprint)?;
        let regions = match only_region {
            Some(r) => vec![r.to_string()],
            None => self.state.discovery.known(),
        };
        let cap = (!call.waits_for_every_region()).then(|| self.state.list_region_timeout());
        let req = ListRequest {
            parent: parent.to_string(),
            organization: organization.to_string(),
            after,
            limit: (size + 1) as i32,
        };
        let answers = scatter(&regions, |region| {
            let outgoing = call.outgoing(req.clone(), cap);
            async move {
                self.state
                    .regions
                    .call::<ListRequest, Resp>(&region, method, outgoing?)
                    .await
                    .map(items)
            }
        })
        .await;
        let mut page = merge_pages(answers, size)?;
        for item in &mut page.items {
            self.mark(call, item);
        }
        let token = page
            .next_after
            .as_deref()
            .map(|after| page::encode(after, &fingerprint))
            .unwrap_or_default();
        Ok((page, token))
    }

    /// Changes (updates or deletes) a resource in every known region that
    /// has it; the regions without it answer NOT_FOUND and are left out.
    /// The first region's answer, with a status per region where it was
    /// (or may have been); the refusal when no region made the change.
    /// `request_id`, when not empty, travels with every region's call.
    async fn change_everywhere<Req, Resp>(
        &self,
        call: &Call,
        method: &str,
        req: Req,
        request_id: &str,
    ) -> Result<(Resp, Vec<RegionStatus>), Status>
    where
        Req: Message + Clone + 'static,
        Resp: Message + Default + 'static,
    {
        let answers = self
            .ask_every_region::<Req, Resp>(call, method, req, request_id)
            .await;
        let mut statuses = Vec::new();
        let mut changed = None;
        let mut refusal = None;
        for (region, answer) in answers {
            match &answer {
                Err(s) if s.code() == Code::NotFound => continue,
                Ok(_) => {}
                Err(s) if is_unreachable(s) => {}
                Err(s) => {
                    refusal.get_or_insert_with(|| s.clone());
                }
            }
            statuses.push(region_status(&region, &answer));
            if let Ok(resp) = answer {
                changed.get_or_insert(resp);
            }
        }
        let Some(changed) = changed else {
            return Err(nowhere(refusal, &statuses));
        };
        sort_by_region(&mut statuses);
        Ok((changed, statuses))
    }

    /// Deletes a resource in every known region it exists in and reports
    /// each region where it was (or may have been). Each region gives the
    /// quota back itself, durably, so a delete whose answer is lost (or a
    /// gateway that dies) still frees it once.
    async fn delete_everywhere<Req>(
        &self,
        call: &Call,
        method: &str,
        req: Req,
    ) -> Result<Vec<RegionStatus>, Status>
    where
        Req: Message + Clone + 'static,
    {
        self.change_everywhere::<Req, DeleteResponse>(call, method, req, "")
            .await
            .map(|(_, statuses)| statuses)
    }
}

/// A request that names one resource: the Get and Delete requests.
pub(crate) trait ByName {
    /// The resource name.
    fn name(&self) -> &str;
}

macro_rules! by_name {
    ($($t:ty),*) => {$(
        impl ByName for $t {
            fn name(&self) -> &str {
                &self.name
            }
        }
    )*};
}

by_name!(
    nordlys_proto::pb::nordlys::v1::GetProjectRequest,
    nordlys_proto::pb::nordlys::v1::DeleteProjectRequest,
    nordlys_proto::pb::nordlys::v1::GetMembershipRequest,
    nordlys_proto::pb::nordlys::v1::DeleteMembershipRequest,
    nordlys_proto::pb::nordlys::v1::GetNetworkRequest,
    nordlys_proto::pb::nordlys::v1::DeleteNetworkRequest,
    nordlys_proto::pb::nordlys::v1::GetAccessRuleRequest,
    nordlys_proto::pb::nordlys::v1::DeleteAccessRuleRequest
);

impl Api {
    /// A Get: authenticates, checks the name's shape, gathers the resource
    /// from the regions. Returns it with the regions that did not answer.
    async fn get_by_name<Req, T>(
        &self,
        request: tonic::Request<Req>,
        method: &str,
        shape: &[&str],
    ) -> Result<(T, Vec<String>), Status>
    where
        Req: Message + Clone + ByName + 'static,
        T: Message + Default + Listed + 'static,
    {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        names::parse_field(req.name(), shape, "name")?;
        self.gather_one(&call, method, req.clone())
            .await
            .map_err(|s| projects::not_found_as(s, req.name()))
    }

    /// A Delete: authenticates, needs a writer, checks the name's shape,
    /// deletes in every region and gives the quota back; records a `kind`
    /// deleted event.
    async fn delete_by_name<Req>(
        &self,
        request: tonic::Request<Req>,
        method: &str,
        shape: &[&str],
        kind: &str,
    ) -> Result<Vec<RegionStatus>, Status>
    where
        Req: Message + Clone + ByName + 'static,
    {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        self.require_write(&call, req.name())?;
        names::parse_field(req.name(), shape, "name")?;
        let owner = self.owner_of(&call, req.name()).await;
        let statuses = self
            .delete_everywhere(&call, method, req.clone())
            .await
            .map_err(|s| projects::not_found_as(s, req.name()))?;
        if let Some(owner) = owner {
            self.changed(&call, Change::new(kind, "deleted", &owner, req.name()));
        }
        Ok(statuses)
    }

    /// A List of a project's children (memberships, networks, rules):
    /// authenticates, checks the parent, one merged page of all regions.
    #[allow(clippy::too_many_arguments)]
    async fn list_children<Resp, T>(
        &self,
        (metadata, extensions): (&tonic::metadata::MetadataMap, &tonic::Extensions),
        method: &str,
        parent: &str,
        page_size: i32,
        page_token: &str,
        items: fn(Resp) -> Vec<T>,
    ) -> Result<(Page<T>, String), Status>
    where
        Resp: Message + Default + 'static,
        T: Listed,
    {
        let call = self.state.begin_parts(metadata, extensions).await?;
        names::parse_field(parent, &["projects"], "parent")?;
        let organization = call.caller.organization.clone();
        self.list(
            &call,
            method,
            parent,
            &organization,
            None,
            page_size,
            page_token,
            items,
        )
        .await
    }
}

/// Why a change of a resource happened in no region: a region's refusal,
/// or NOT_FOUND, or UNAVAILABLE when the regions that did not answer
/// (`unanswered`) may hold it.
fn nowhere(refusal: Option<Status>, unanswered: &[RegionStatus]) -> Status {
    match (refusal, unanswered.is_empty()) {
        (Some(refusal), _) => refusal,
        (None, true) => Status::not_found("not found"),
        (None, false) => Status::unavailable(format!(
            "not found in the regions that answered; unreachable: {}",
            unanswered
                .iter()
                .map(|s| s.region.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// An update of one of a project's children (a network, an access rule),
/// checked by the caller: `name` names it (in `project`), `request_id` is
/// the one every region gets, `kind` and `data` make its event.
struct ChildUpdate<'a, Resp> {
    method: &'a str,
    kind: &'static str,
    project: &'a str,
    name: &'a str,
    request_id: &'a str,
    data: fn(Resp) -> nordlys_proto::pb::nordlys::v1::event::Data,
}

impl Api {
    /// Sends a child's update to every region (the one holding it answers;
    /// NOT_FOUND names it when none does) and records the change.
    async fn update_child<Req, Resp>(
        &self,
        call: &Call,
        update: ChildUpdate<'_, Resp>,
        req: Req,
    ) -> Result<Resp, Status>
    where
        Req: Message + Clone + 'static,
        Resp: Message + Default + Clone + Listed + 'static,
    {
        let org = self.project_org(call, update.project).await?;
        let (changed, _): (Resp, _) = self
            .change_everywhere(call, update.method, req, update.request_id)
            .await
            .map_err(|s| projects::not_found_as(s, update.name))?;
        self.changed(
            call,
            Change::new(update.kind, "updated", &org, update.name)
                .request_id(update.request_id)
                .data((update.data)(changed.clone())),
        );
        Ok(self.marked(call, changed))
    }
}

/// What every region of an update gets: the mask spelled out, and one
/// request id (the caller's, or a new one), so each region applies the same
/// change and a retried region changes nothing twice.
fn spelled_out(paths: &[&str], request_id: &str) -> (prost_types::FieldMask, String) {
    let mask = prost_types::FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    };
    let request_id = if request_id.is_empty() {
        format!("gw-{}", nordlys_api::ids::random_hex(32))
    } else {
        request_id.to_string()
    };
    (mask, request_id)
}

/// The answer of a create that fanned out: the first region's resource with
/// every region's status, or, when every region failed, the first failure.
/// The statuses are in region order, as gets and lists show them.
fn first_success<T>(
    answers: Vec<(String, Result<T, Status>)>,
) -> Result<(T, Vec<RegionStatus>), Status> {
    let mut statuses: Vec<RegionStatus> =
        answers.iter().map(|(r, a)| region_status(r, a)).collect();
    sort_by_region(&mut statuses);
    let mut first_error = None;
    for (_, answer) in answers {
        match answer {
            Ok(item) => return Ok((item, statuses)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| Status::internal("no region was asked")))
}

impl Api {
    /// The organization owning `project` (a `projects/{id}` name): the
    /// caller's own, or, for operators, looked up in the regions.
    async fn project_org(&self, call: &Call, project: &str) -> Result<String, Status> {
        if call.caller.role != Role::Operator {
            return Ok(call.caller.organization.clone());
        }
        let (found, _): (nordlys_proto::pb::nordlys::v1::Project, _) = self
            .gather_one(
                call,
                "GetProject",
                nordlys_proto::pb::nordlys::v1::GetProjectRequest {
                    name: project.to_string(),
                },
            )
            .await
            .map_err(|s| projects::not_found_as(s, project))?;
        Ok(found.organization)
    }
}
