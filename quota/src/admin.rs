//! Organizations, members, API keys and quota limits: the administration
//! RPCs, and Authenticate.

use nordlys_api::validate::{self, check_text, MAX_DISPLAY_NAME};
use nordlys_api::{names, page, Violations};
use nordlys_proto::pb::nordlys::quota::v1 as q;
use nordlys_proto::pb::nordlys::v1 as api;
use nordlys_transport::{Identity, Role};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tonic::{Request, Status};

use crate::auth::{self, identity, may_manage_owners, require_operator, require_role};
use crate::reservation::{Counts, Kind, QuotaDoc};
use crate::status::{not_found, permission_denied};
use crate::store::{self, Write};
use crate::{keys, now_ms, Controller};

/// An organization (`org.<org>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrgDoc {
    /// Its display name.
    pub display_name: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub create_time: OffsetDateTime,
    /// Its quota tier (empty: the configured default).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tier: String,
    /// When its tier last changed (unix milliseconds; 0: never).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tier_change_ms: i64,
    /// A tier change asked for and waiting for an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_tier: Option<crate::tiers::PendingTier>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// A role as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoredRole {
    /// Owner.
    Owner,
    /// Admin.
    Admin,
    /// Member.
    Member,
    /// Viewer.
    Viewer,
}

impl StoredRole {
    fn role(self) -> Role {
        match self {
            StoredRole::Owner => Role::Owner,
            StoredRole::Admin => Role::Admin,
            StoredRole::Member => Role::Member,
            StoredRole::Viewer => Role::Viewer,
        }
    }

    fn from_role(role: Role) -> Option<StoredRole> {
        Some(match role {
            Role::Owner => StoredRole::Owner,
            Role::Admin => StoredRole::Admin,
            Role::Member => StoredRole::Member,
            Role::Viewer => StoredRole::Viewer,
            Role::Operator => return None,
        })
    }
}

/// A member (`member.<org>.<hex principal>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberDoc {
    /// The principal, e.g. `alice@example.com`.
    pub principal: String,
    /// The role.
    pub role: StoredRole,
    /// Made anew each time the principal is added, so API keys of a removed
    /// member stay dead if the same principal is added again.
    pub uid: String,
    /// When it was added.
    #[serde(with = "time::serde::rfc3339")]
    pub create_time: OffsetDateTime,
}

/// An API key (`apikey.<keyid>`). The secret itself is never stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKeyDoc {
    /// The organization id.
    pub organization: String,
    /// The principal the key acts as.
    pub principal: String,
    /// The [`MemberDoc::uid`] of that member when the key was made.
    pub member_uid: String,
    /// Its display name.
    pub display_name: String,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub create_time: OffsetDateTime,
}

fn timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

fn org_proto(org: &str, doc: &OrgDoc) -> api::Organization {
    api::Organization {
        name: names::organization(org),
        display_name: doc.display_name.clone(),
        create_time: Some(timestamp(doc.create_time)),
    }
}

fn member_proto(org: &str, doc: &MemberDoc) -> api::Member {
    api::Member {
        name: names::member(org, &doc.principal),
        role: auth::to_proto(doc.role.role()) as i32,
        create_time: Some(timestamp(doc.create_time)),
    }
}

fn api_key_proto(key: &str, doc: &ApiKeyDoc) -> api::ApiKey {
    api::ApiKey {
        name: names::api_key(&doc.organization, key),
        member: names::member(&doc.organization, &doc.principal),
        display_name: doc.display_name.clone(),
        create_time: Some(timestamp(doc.create_time)),
    }
}

/// `ResourceCounts` from counts.
pub(crate) fn counts_proto(c: &Counts) -> api::ResourceCounts {
    api::ResourceCounts {
        projects: c.projects,
        users: c.users,
        networks: c.networks,
        access_rules: c.access_rules,
    }
}

/// Counts from `ResourceCounts`.
pub(crate) fn counts_from(c: &api::ResourceCounts) -> Counts {
    Counts {
        projects: c.projects,
        users: c.users,
        networks: c.networks,
        access_rules: c.access_rules,
    }
}

/// Parses a name into its ids, recording a violation on `field` when it
/// does not fit (so every problem of a request is reported at once).
fn parse_name<'a>(
    v: &mut Violations,
    name: &'a str,
    collections: &[&str],
    field: &str,
) -> Vec<&'a str> {
    match names::parse(name, collections) {
        Some(ids) => ids,
        None => {
            let shape = collections
                .iter()
                .map(|c| format!("{c}/{{id}}"))
                .collect::<Vec<_>>()
                .join("/");
            v.add(
                field,
                format!("must be a resource name of the form {shape}"),
            );
            Vec::new()
        }
    }
}

fn unauthenticated() -> Status {
    // Never say which part was wrong: that would help guessing.
    Status::unauthenticated("invalid API key")
}

impl Controller {
    pub(crate) async fn org_exists(&self, org: &str) -> Result<OrgDoc, Status> {
        self.store
            .get::<OrgDoc>(&store::org_key(org))
            .await?
            .map(|v| v.value)
            .ok_or_else(|| not_found(&names::organization(org)))
    }

    pub(crate) fn quota_proto(
        &self,
        org: &str,
        region: &str,
        doc: &QuotaDoc,
        now: i64,
    ) -> api::Quota {
        api::Quota {
            name: names::quota(org, region),
            limits: Some(counts_proto(
                &doc.limits.effective(&self.config.default_limits),
            )),
            usage: Some(counts_proto(&doc.usage)),
            reserved: Some(counts_proto(&doc.reserved(now))),
            ..Default::default()
        }
    }

    pub(crate) async fn authenticate_key(
        &self,
        request: Request<q::AuthenticateRequest>,
    ) -> Result<q::Principal, Status> {
        let presented = request.into_inner().secret;
        let (key_id, secret) = keys::parse(&presented).ok_or_else(unauthenticated)?;
        let key = self
            .store
            .get::<ApiKeyDoc>(&store::api_key_key(key_id))
            .await?
            .ok_or_else(unauthenticated)?
            .value;
        if !keys::verify(secret, &key.secret_sha256) {
            return Err(unauthenticated());
        }
        // The role is read now, so a changed role takes effect at once.
        let member = self
            .store
            .get::<MemberDoc>(&store::member_key(&key.organization, &key.principal))
            .await?
            .map(|v| v.value)
            .filter(|m| m.uid == key.member_uid)
            .ok_or_else(unauthenticated)?;
        Ok(q::Principal {
            organization: names::organization(&key.organization),
            member: names::member(&key.organization, &member.principal),
            role: auth::to_proto(member.role.role()) as i32,
            api_key: names::api_key(&key.organization, key_id),
        })
    }

    pub(crate) async fn create_org(
        &self,
        request: Request<api::CreateOrganizationRequest>,
    ) -> Result<api::Organization, Status> {
        let caller = identity(&request)?;
        require_operator(&caller, "create organizations")?;
        let r = request.into_inner();
        let mut v = Violations::new();
        validate::check_id(&mut v, "organization_id", &r.organization_id);
        let org = r.organization.unwrap_or_default();
        check_text(
            &mut v,
            "organization.display_name",
            &org.display_name,
            MAX_DISPLAY_NAME,
            false,
        );
        v.into_result()?;
        let doc = OrgDoc {
            display_name: org.display_name,
            create_time: OffsetDateTime::now_utc(),
            tier: String::new(),
            tier_change_ms: 0,
            pending_tier: None,
        };
        let id = r.organization_id;
        self.store
            .modify(&store::org_key(&id), |current: Option<OrgDoc>| {
                if current.is_some() {
                    return Err(Status::already_exists(format!(
                        "{} already exists",
                        names::organization(&id)
                    )));
                }
                Ok((Write::Put(doc.clone()), ()))
            })
            .await?;
        tracing::info!(organization = %id, "organization created");
        Ok(org_proto(&id, &doc))
    }

    pub(crate) async fn get_org(
        &self,
        request: Request<api::GetOrganizationRequest>,
    ) -> Result<api::Organization, Status> {
        let caller = identity(&request)?;
        let name = request.into_inner().name;
        let ids = names::parse_field(&name, &["organizations"], "name")?;
        let org = ids[0];
        require_role(&caller, org, Role::Viewer, &format!("read {name}"))?;
        let doc = self.org_exists(org).await?;
        Ok(org_proto(org, &doc))
    }

    pub(crate) async fn list_orgs(
        &self,
        request: Request<api::ListOrganizationsRequest>,
    ) -> Result<api::ListOrganizationsResponse, Status> {
        let caller = identity(&request)?;
        let r = request.into_inner();
        let size = page::size(r.page_size)?;
        // The caller is part of the query: a token of one caller is not
        // valid for another, who sees a different list.
        let fingerprint = page::fingerprint(&["ListOrganizations", &caller.organization]);
        let after = page::decode(&r.page_token, &fingerprint)?;
        let mut orgs: Vec<(String, OrgDoc)> = if caller.role == Role::Operator {
            self.store
                .list::<OrgDoc>(store::ORG_PREFIX)
                .await?
                .into_iter()
                .filter_map(|(k, d)| Some((k.strip_prefix(store::ORG_PREFIX)?.to_string(), d)))
                .collect()
        } else {
            let org = caller_org(&caller).to_string();
            match self.store.get::<OrgDoc>(&store::org_key(&org)).await? {
                Some(doc) => vec![(org, doc.value)],
                None => Vec::new(),
            }
        };
        orgs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut page_items: Vec<api::Organization> = orgs
            .iter()
            .map(|(id, doc)| org_proto(id, doc))
            .filter(|o| after.is_empty() || o.name > after)
            .take(size + 1)
            .collect();
        let next_page_token = if page_items.len() > size {
            page_items.truncate(size);
            page_items
                .last()
                .map(|o| page::encode(&o.name, &fingerprint))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(api::ListOrganizationsResponse {
            organizations: page_items,
            next_page_token,
        })
    }

    pub(crate) async fn put_member(
        &self,
        request: Request<api::CreateMemberRequest>,
    ) -> Result<api::Member, Status> {
        let caller = identity(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let ids = parse_name(&mut v, &r.parent, &["organizations"], "parent");
        v.check(
            validate::is_principal(&r.member_id),
            "member_id",
            "must be 1 to 128 lowercase letters, digits, '.', '_', '@' or '-', starting with a letter or digit",
        );
        let role = match r.member.as_ref() {
            None => {
                v.add("member", "is required");
                None
            }
            Some(m) => {
                let role = auth::from_proto(m.role);
                if role.is_none() {
                    v.add("member.role", "must be OWNER, ADMIN, MEMBER or VIEWER");
                }
                role
            }
        };
        v.into_result()?;
        let (Some(org), Some(role)) = (ids.first().copied(), role.and_then(StoredRole::from_role))
        else {
            return Err(Status::internal("validation let a bad request through"));
        };
        require_role(
            &caller,
            org,
            Role::Admin,
            &format!("manage members of {}", r.parent),
        )?;
        if role == StoredRole::Owner && !may_manage_owners(&caller) {
            return Err(permission_denied("make owners (only owners may)"));
        }
        self.org_exists(org).await?;
        let principal = r.member_id;
        let now = OffsetDateTime::now_utc();
        let fresh_uid = nordlys_api::ids::random_hex(32);
        let doc = self
            .store
            .modify(
                &store::member_key(org, &principal),
                |current: Option<MemberDoc>| {
                    let doc = match current {
                        Some(existing) => {
                            if existing.role == StoredRole::Owner && !may_manage_owners(&caller) {
                                return Err(permission_denied(
                                    "change an owner's role (only owners may)",
                                ));
                            }
                            MemberDoc { role, ..existing }
                        }
                        None => MemberDoc {
                            principal: principal.clone(),
                            role,
                            uid: fresh_uid.clone(),
                            create_time: now,
                        },
                    };
                    Ok((Write::Put(doc.clone()), doc))
                },
            )
            .await?;
        tracing::info!(organization = %org, member = %principal, role = ?role, "member set");
        Ok(member_proto(org, &doc))
    }

    pub(crate) async fn get_members(
        &self,
        request: Request<api::ListMembersRequest>,
    ) -> Result<api::ListMembersResponse, Status> {
        let caller = identity(&request)?;
        let parent = request.into_inner().parent;
        let ids = names::parse_field(&parent, &["organizations"], "parent")?;
        let org = ids[0];
        require_role(&caller, org, Role::Viewer, &format!("read {parent}"))?;
        self.org_exists(org).await?;
        let mut members: Vec<api::Member> = self
            .store
            .list::<MemberDoc>(&store::member_prefix(org))
            .await?
            .iter()
            .map(|(_, doc)| member_proto(org, doc))
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(api::ListMembersResponse { members })
    }

    pub(crate) async fn remove_member(
        &self,
        request: Request<api::DeleteMemberRequest>,
    ) -> Result<api::DeleteMemberResponse, Status> {
        let caller = identity(&request)?;
        let name = request.into_inner().name;
        let ids = names::parse_field(&name, &["organizations", "members"], "name")?;
        let (org, principal) = (ids[0], ids[1]);
        require_role(
            &caller,
            org,
            Role::Admin,
            &format!("manage members of {}", names::organization(org)),
        )?;
        self.store
            .modify(
                &store::member_key(org, principal),
                |current: Option<MemberDoc>| match current {
                    None => Err(not_found(&name)),
                    Some(m) if m.role == StoredRole::Owner && !may_manage_owners(&caller) => {
                        Err(permission_denied("remove owners (only owners may)"))
                    }
                    Some(_) => Ok((Write::Delete, ())),
                },
            )
            .await?;
        tracing::info!(organization = %org, member = %principal, "member removed");
        // The member's keys stopped working with the member (Authenticate
        // needs the member); deleting them now is housekeeping, so a failure
        // here is logged rather than failing a delete that already happened.
        match self.store.list::<ApiKeyDoc>(store::API_KEY_PREFIX).await {
            Ok(all) => {
                for (key, doc) in all {
                    if doc.organization == org && doc.principal == principal {
                        let deleted = self
                            .store
                            .modify(&key, |_: Option<ApiKeyDoc>| {
                                Ok::<_, Status>((Write::Delete, ()))
                            })
                            .await;
                        if let Err(e) = deleted {
                            tracing::warn!(key = %key, error = %e, "could not delete a removed member's key");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list a removed member's keys"),
        }
        Ok(api::DeleteMemberResponse {})
    }

    pub(crate) async fn make_api_key(
        &self,
        request: Request<api::CreateApiKeyRequest>,
    ) -> Result<api::CreateApiKeyResponse, Status> {
        let caller = identity(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let ids = parse_name(&mut v, &r.parent, &["organizations"], "parent");
        let key = r.api_key.unwrap_or_default();
        let member_ids = parse_name(
            &mut v,
            &key.member,
            &["organizations", "members"],
            "api_key.member",
        );
        if let (Some(org), Some(member_org)) = (ids.first(), member_ids.first()) {
            v.check(
                org == member_org,
                "api_key.member",
                format!("must be a member of {}", r.parent),
            );
        }
        check_text(
            &mut v,
            "api_key.display_name",
            &key.display_name,
            MAX_DISPLAY_NAME,
            false,
        );
        v.into_result()?;
        let (Some(org), Some(principal)) = (ids.first().copied(), member_ids.get(1).copied())
        else {
            return Err(Status::internal("validation let a bad request through"));
        };
        require_role(
            &caller,
            org,
            Role::Admin,
            &format!("manage API keys of {}", r.parent),
        )?;
        let member = self
            .store
            .get::<MemberDoc>(&store::member_key(org, principal))
            .await?
            .ok_or_else(|| not_found(&key.member))?
            .value;
        // A key acts with its member's powers: only those who may make owners
        // may mint a key that acts as one.
        if member.role == StoredRole::Owner && !may_manage_owners(&caller) {
            return Err(permission_denied(
                "create keys for owners (only owners may)",
            ));
        }
        let new = keys::generate()?;
        let doc = ApiKeyDoc {
            organization: org.to_string(),
            principal: principal.to_string(),
            member_uid: member.uid,
            display_name: key.display_name,
            secret_sha256: new.hash.clone(),
            create_time: OffsetDateTime::now_utc(),
        };
        self.store
            .modify(
                &store::api_key_key(&new.id),
                |current: Option<ApiKeyDoc>| {
                    if current.is_some() {
                        // 80 random bits colliding: not worth a retry path.
                        return Err(Status::aborted("key id collision; retry"));
                    }
                    Ok((Write::Put(doc.clone()), ()))
                },
            )
            .await?;
        tracing::info!(organization = %org, member = %principal, key = %new.id, "API key created");
        Ok(api::CreateApiKeyResponse {
            api_key: Some(api_key_proto(&new.id, &doc)),
            secret: new.secret,
        })
    }

    pub(crate) async fn get_api_keys(
        &self,
        request: Request<api::ListApiKeysRequest>,
    ) -> Result<api::ListApiKeysResponse, Status> {
        let caller = identity(&request)?;
        let parent = request.into_inner().parent;
        let ids = names::parse_field(&parent, &["organizations"], "parent")?;
        let org = ids[0];
        require_role(
            &caller,
            org,
            Role::Admin,
            &format!("manage API keys of {parent}"),
        )?;
        self.org_exists(org).await?;
        let mut api_keys: Vec<api::ApiKey> = self
            .store
            .list::<ApiKeyDoc>(store::API_KEY_PREFIX)
            .await?
            .iter()
            .filter(|(_, doc)| doc.organization == org)
            .filter_map(|(k, doc)| Some(api_key_proto(k.strip_prefix(store::API_KEY_PREFIX)?, doc)))
            .collect();
        api_keys.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(api::ListApiKeysResponse { api_keys })
    }

    pub(crate) async fn remove_api_key(
        &self,
        request: Request<api::DeleteApiKeyRequest>,
    ) -> Result<api::DeleteApiKeyResponse, Status> {
        let caller = identity(&request)?;
        let name = request.into_inner().name;
        let ids = names::parse_field(&name, &["organizations", "apiKeys"], "name")?;
        let (org, key) = (ids[0], ids[1]);
        require_role(
            &caller,
            org,
            Role::Admin,
            &format!("manage API keys of {}", names::organization(org)),
        )?;
        self.store
            .modify(&store::api_key_key(key), |current: Option<ApiKeyDoc>| {
                match current {
                    Some(doc) if doc.organization == org => Ok((Write::Delete, ())),
                    // A key of another organization is "not found" here: the
                    // caller is entitled to this organization only.
                    _ => Err(not_found(&name)),
                }
            })
            .await?;
        tracing::info!(organization = %org, key = %key, "API key deleted");
        Ok(api::DeleteApiKeyResponse {})
    }

    pub(crate) async fn read_quota(
        &self,
        request: Request<api::GetQuotaRequest>,
    ) -> Result<api::Quota, Status> {
        let caller = identity(&request)?;
        let name = request.into_inner().name;
        let ids = names::parse_field(&name, &["organizations", "quotas"], "name")?;
        let (org, region) = (ids[0], ids[1]);
        require_role(&caller, org, Role::Viewer, &format!("read {name}"))?;
        let org_doc = self.org_exists(org).await?;
        // A region never used has the default limits and nothing in use.
        let doc = self
            .store
            .get::<QuotaDoc>(&store::quota_key(org, region))
            .await?
            .map(|v| v.value)
            .unwrap_or_default();
        let mut quota = self.quota_proto(org, region, &doc, now_ms());
        self.show_tier(&mut quota, org, &org_doc);
        Ok(quota)
    }

    pub(crate) async fn read_quotas(
        &self,
        request: Request<api::ListQuotasRequest>,
    ) -> Result<api::ListQuotasResponse, Status> {
        let caller = identity(&request)?;
        let parent = request.into_inner().parent;
        let ids = names::parse_field(&parent, &["organizations"], "parent")?;
        let org = ids[0];
        require_role(&caller, org, Role::Viewer, &format!("read {parent}"))?;
        let org_doc = self.org_exists(org).await?;
        let prefix = store::quota_prefix(org);
        let now = now_ms();
        let mut quotas: Vec<api::Quota> = self
            .store
            .list::<QuotaDoc>(&prefix)
            .await?
            .iter()
            .filter_map(|(k, doc)| Some(self.quota_proto(org, k.strip_prefix(&prefix)?, doc, now)))
            .collect();
        quotas.sort_by(|a, b| a.name.cmp(&b.name));
        for quota in &mut quotas {
            self.show_tier(quota, org, &org_doc);
        }
        Ok(api::ListQuotasResponse { quotas })
    }

    /// UpdateQuota. The mask names `limits` (all four) or `limits.<kind>`;
    /// an empty mask means all four. A kind in the mask is set from
    /// `quota.limits`; when `quota.limits` is absent, the kinds in the mask
    /// go back to the configured defaults.
    pub(crate) async fn set_limits(
        &self,
        request: Request<api::UpdateQuotaRequest>,
    ) -> Result<api::Quota, Status> {
        let caller = identity(&request)?;
        require_operator(&caller, "set quota limits")?;
        let r = request.into_inner();
        if r.update_mask
            .as_ref()
            .is_some_and(|m| m.paths.iter().any(|p| p == "tier"))
        {
            return self.set_tier(r).await;
        }
        let mut v = Violations::new();
        let quota = r.quota.unwrap_or_default();
        let ids = parse_name(
            &mut v,
            &quota.name,
            &["organizations", "quotas"],
            "quota.name",
        );
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let mut kinds: Vec<Kind> = Vec::new();
        if paths.is_empty() {
            kinds.extend(Kind::ALL);
        }
        for path in &paths {
            match path.as_str() {
                "limits" => kinds.extend(Kind::ALL),
                p => match p.strip_prefix("limits.").and_then(Kind::parse) {
                    Some(k) => kinds.push(k),
                    None => v.add(
                        "update_mask",
                        format!(
                            "unknown path {p:?}: use limits, limits.projects, limits.users, limits.networks, limits.access_rules or tier"
                        ),
                    ),
                },
            }
        }
        kinds.sort();
        kinds.dedup();
        let limits = quota.limits.as_ref().map(counts_from);
        if let Some(l) = &limits {
            for k in &kinds {
                v.check(
                    l.get(*k) >= 0,
                    &format!("quota.limits.{}", k.as_str()),
                    "must not be negative",
                );
            }
        }
        v.into_result()?;
        let (Some(org), Some(region)) = (ids.first().copied(), ids.get(1).copied()) else {
            return Err(Status::internal("validation let a bad request through"));
        };
        let org_doc = self.org_exists(org).await?;
        let now = now_ms();
        let doc = self
            .store
            .modify(
                &store::quota_key(org, region),
                |current: Option<QuotaDoc>| {
                    let mut doc = current.unwrap_or_default();
                    doc.prune(now);
                    for k in &kinds {
                        doc.limits.set(*k, limits.map(|l| l.get(*k)));
                    }
                    Ok::<_, Status>((Write::Put(doc.clone()), doc))
                },
            )
            .await?;
        tracing::info!(organization = %org, region = %region, limits = ?doc.limits, "limits set");
        let mut quota = self.quota_proto(org, region, &doc, now);
        self.show_tier(&mut quota, org, &org_doc);
        Ok(quota)
    }
}

/// The organization id of a caller's identity (empty for operators).
fn caller_org(caller: &Identity) -> &str {
    caller
        .organization
        .strip_prefix("organizations/")
        .unwrap_or_default()
}
