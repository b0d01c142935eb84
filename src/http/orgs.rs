//! `/organization/*`: LiteLLM's organizations. Teams belong to at most one;
//! its model list narrows theirs and its budget caps all of them together
//! (its spend is its teams' spend). Proxy admins create and delete them;
//! an organization's `org_admin` members manage its members and settings.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::admin::*;
use super::roles::{caller, is_org_admin, Caller};
use super::teams::{check_member, existing_user, resolve_user, team_json};
use super::WorkerState;
use crate::error::GatewayError;
use crate::shared::Invalidation;
use crate::store::{now_ms, OrgMemberRow, OrgRow, Store};

const ORG_ROLES: [&str; 3] = ["org_admin", "internal_user", "internal_user_viewer"];

fn org_json(row: &OrgRow, members: &[OrgMemberRow], teams: &[Value]) -> Value {
    json!({
        "organization_id": row.organization_id,
        "organization_alias": row.organization_alias,
        "budget_id": row.budget_id,
        "models": json_text(&row.models, json!([])),
        "spend": row.spend,
        "model_spend": {},
        "metadata": json_text(&row.metadata, json!({})),
        "blocked": row.blocked,
        "litellm_budget_table": {
            "budget_id": row.budget_id,
            "max_budget": row.max_budget,
            "soft_budget": row.soft_budget,
            "budget_duration": row.budget_duration,
            "budget_reset_at": iso(row.budget_reset_at),
            "tpm_limit": row.tpm_limit,
            "rpm_limit": row.rpm_limit,
            "max_parallel_requests": row.max_parallel_requests,
        },
        "members": members.iter().map(|m| json!({
            "organization_id": m.organization_id,
            "user_id": m.user_id,
            "user_role": m.user_role,
            "spend": 0.0,
            "budget_id": Value::Null,
            "created_at": iso(Some(m.created_at)),
        })).collect::<Vec<_>>(),
        "teams": teams,
        "created_at": iso(Some(row.created_at)),
        "updated_at": iso(Some(row.updated_at)),
    })
}

#[derive(Debug, Clone, Deserialize)]
struct OrgMember {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    user_email: Option<String>,
    #[serde(default = "member_role")]
    role: String,
}

fn member_role() -> String {
    "internal_user".into()
}

fn check_org_role(role: &str) -> Result<(), GatewayError> {
    if ORG_ROLES.contains(&role) {
        Ok(())
    } else {
        Err(bad_request(
            format!("organization member role must be one of {ORG_ROLES:?}"),
            Some("role"),
        ))
    }
}

#[derive(Debug, Default, Deserialize)]
struct OrgFields {
    #[serde(default)]
    organization_id: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    organization_alias: Option<Option<String>>,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default, deserialize_with = "double_option")]
    budget_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    max_budget: Option<Option<f64>>,
    #[serde(default, deserialize_with = "double_option")]
    soft_budget: Option<Option<f64>>,
    #[serde(default, deserialize_with = "double_option")]
    budget_duration: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    rpm_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "double_option")]
    tpm_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "double_option")]
    max_parallel_requests: Option<Option<i64>>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    blocked: Option<bool>,
    #[serde(default)]
    spend: Option<f64>,
    /// `/organization/new` only.
    #[serde(default)]
    members: Vec<OrgMember>,
}

impl OrgFields {
    async fn apply(&self, store: &Store, row: &mut OrgRow, now: i64) -> Result<(), GatewayError> {
        if let Some(Some(a)) = &self.organization_alias {
            check_name("organization_alias", a)?;
        }
        if let Some(a) = &self.organization_alias {
            row.organization_alias = a.clone();
        }
        if let Some(m) = &self.models {
            check_names("models", m)?;
            row.models = json!(m).to_string();
        }
        if let Some(b) = &self.budget_id {
            if let Some(id) = b {
                let budget = store
                    .get_budget(id)
                    .await
                    .map_err(store_error)?
                    .ok_or_else(|| {
                        bad_request(
                            format!("Budget not found, passed budget_id={id}"),
                            Some("budget_id"),
                        )
                    })?;
                // The budget's period drives the organization's resets
                // unless it has its own.
                if row.budget_duration.is_none() && self.budget_duration.is_none() {
                    row.budget_duration = budget.budget_duration.clone();
                    row.budget_reset_at = budget
                        .budget_duration
                        .as_deref()
                        .and_then(|d| crate::access::next_reset(d, now));
                }
            }
            row.budget_id = b.clone();
        }
        apply_budget!(self, row, now)?;
        if let Some(m) = &self.metadata {
            row.metadata = metadata_text(m)?;
        }
        if let Some(b) = self.blocked {
            row.blocked = b;
        }
        check_non_negative("spend", self.spend)?;
        row.updated_at = now;
        Ok(())
    }
}

async fn load_org(store: &Store, id: &str) -> Result<OrgRow, GatewayError> {
    check_name("organization_id", id)?;
    store
        .get_org(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            not_found(
                format!("Organization not found, passed organization_id={id}"),
                "organization_id",
            )
        })
}

/// Proxy admin, or an `org_admin` of this organization.
async fn may_manage_org(
    st: &WorkerState,
    caller: &Caller,
    org: &str,
) -> Result<bool, GatewayError> {
    Ok(caller.is_admin() || is_org_admin(st, org, caller.user_id()).await?)
}

fn refused(caller: &Caller, org: &str, route: &str) -> GatewayError {
    forbidden(format!(
        "User={} is not a proxy admin or an admin of organization={org}. route={route}",
        caller.user_id().unwrap_or("unknown")
    ))
}

/// What a change to an organization makes stale: the cached keys of its
/// teams, on every replica.
async fn org_changed(st: &WorkerState, store: &Store, id: &str) -> Result<(), GatewayError> {
    let hashes = store.keys_of_org(id).await.map_err(store_error)?;
    changed(st, Invalidation::Org(id.to_string()), hashes).await;
    Ok(())
}

async fn full_json(store: &Store, row: &OrgRow) -> Result<Value, GatewayError> {
    let members = store
        .org_members(&row.organization_id)
        .await
        .map_err(store_error)?;
    let teams: Vec<Value> = store
        .teams_of_org(&row.organization_id)
        .await
        .map_err(store_error)?
        .iter()
        .map(|t| team_json(t, &[]))
        .collect();
    Ok(org_json(row, &members, &teams))
}

pub async fn new(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    caller.require_admin(req.path())?;
    let body: OrgFields = json_body(&st, &req, payload).await?;
    let store = store(&st)?;
    let now = now_ms();
    let id = body
        .organization_id
        .clone()
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    check_name("organization_id", &id)?;
    let duplicate = || {
        bad_request(
            format!(
                "Organization id = {id} already exists. Please use a different organization id."
            ),
            Some("organization_id"),
        )
    };
    if store.get_org(&id).await.map_err(store_error)?.is_some() {
        return Err(duplicate());
    }
    let mut row = OrgRow {
        organization_id: id.clone(),
        organization_alias: None,
        models: "[]".into(),
        spend: 0.0,
        max_budget: None,
        soft_budget: None,
        budget_duration: None,
        budget_reset_at: None,
        rpm_limit: None,
        tpm_limit: None,
        max_parallel_requests: None,
        budget_id: None,
        metadata: "{}".into(),
        blocked: false,
        created_at: now,
        updated_at: now,
    };
    body.apply(store, &mut row, now).await?;
    row.spend = body.spend.unwrap_or(0.0);
    for m in &body.members {
        check_org_role(&m.role)?;
        check_member(m.user_id.as_deref(), m.user_email.as_deref())?;
    }
    let mut members: Vec<OrgMemberRow> = Vec::new();
    for m in &body.members {
        let user_id =
            resolve_user(store, m.user_id.as_deref(), m.user_email.as_deref(), now).await?;
        if !members.iter().any(|x| x.user_id == user_id) {
            members.push(OrgMemberRow {
                organization_id: id.clone(),
                user_id,
                user_role: m.role.clone(),
                created_at: now,
            });
        }
    }
    store
        .insert_org(&row, &members)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Duplicate(_) => duplicate(),
            other => store_error(other),
        })?;
    Ok(HttpResponse::Ok().json(org_json(&row, &members, &[])))
}

pub async fn update(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let body: OrgFields = json_body(&st, &req, payload).await?;
    let id = body.organization_id.clone().ok_or_else(|| {
        management_error(
            422,
            "validation_error",
            "`organization_id` is required",
            Some("organization_id"),
        )
    })?;
    let store = store(&st)?;
    let row = edit_row(async || {
        let mut row = load_org(store, &id).await?;
        if !may_manage_org(&st, &caller, &id).await? {
            return Err(refused(&caller, &id, req.path()).into());
        }
        let read_at = row.updated_at;
        body.apply(store, &mut row, now_ms()).await?;
        store
            .update_org(&row, body.spend, read_at)
            .await
            .map_err(write_error)?;
        if let Some(s) = body.spend {
            row.spend = s;
        }
        Ok(row)
    })
    .await?;
    org_changed(&st, store, &id).await?;
    Ok(HttpResponse::Ok().json(full_json(store, &row).await?))
}

#[derive(Deserialize)]
struct OrgIds {
    organization_ids: Vec<String>,
}

pub async fn delete(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    caller.require_admin(req.path())?;
    let body: OrgIds = json_body(&st, &req, payload).await?;
    let store = store(&st)?;
    let mut deleted = Vec::new();
    for id in &body.organization_ids {
        let row = load_org(store, id).await?;
        deleted.push(row);
    }
    let mut stale = Vec::new();
    for id in &body.organization_ids {
        stale.push((
            id.clone(),
            store.keys_of_org(id).await.map_err(store_error)?,
        ));
    }
    store
        .delete_orgs(&body.organization_ids)
        .await
        .map_err(store_error)?;
    for (id, hashes) in stale {
        changed(&st, Invalidation::Org(id), hashes).await;
    }
    Ok(HttpResponse::Ok().json(
        deleted
            .iter()
            .map(|r| org_json(r, &[], &[]))
            .collect::<Vec<_>>(),
    ))
}

#[derive(Deserialize)]
pub struct OrgQuery {
    organization_id: Option<String>,
}

/// Proxy admins and viewers read any organization; members their own.
pub async fn info(
    req: HttpRequest,
    query: web::Query<OrgQuery>,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let id = query.into_inner().organization_id.ok_or_else(|| {
        management_error(
            422,
            "validation_error",
            "organization_id is required",
            Some("organization_id"),
        )
    })?;
    let store = store(&st)?;
    let row = load_org(store, &id).await?;
    if !caller.reads_all() {
        let me = caller.user_id().unwrap_or_default();
        let member = store
            .org_members(&id)
            .await
            .map_err(store_error)?
            .iter()
            .any(|m| m.user_id == me);
        if !member {
            return Err(refused(&caller, &id, req.path()));
        }
    }
    Ok(HttpResponse::Ok().json(full_json(store, &row).await?))
}

/// Every organization for proxy admins and viewers; the caller's own for
/// everyone else.
pub async fn list(
    req: HttpRequest,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let store = store(&st)?;
    let rows = if caller.reads_all() {
        store.list_orgs(None).await
    } else {
        store
            .list_orgs(Some(caller.user_id().unwrap_or_default()))
            .await
    }
    .map_err(store_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(full_json(store, r).await?);
    }
    Ok(HttpResponse::Ok().json(out))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(OrgMember),
    Many(Vec<OrgMember>),
}

#[derive(Deserialize)]
struct MemberAdd {
    organization_id: String,
    member: OneOrMany,
    #[serde(default)]
    #[allow(dead_code)]
    max_budget_in_organization: Option<f64>,
}

pub async fn member_add(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let body: MemberAdd = json_body(&st, &req, payload).await?;
    let store = store(&st)?;
    let org = load_org(store, &body.organization_id).await?;
    if !may_manage_org(&st, &caller, &org.organization_id).await? {
        return Err(refused(&caller, &org.organization_id, req.path()));
    }
    let members = match body.member {
        OneOrMany::One(m) => vec![m],
        OneOrMany::Many(v) => v,
    };
    let now = now_ms();
    for m in &members {
        check_org_role(&m.role)?;
        check_member(m.user_id.as_deref(), m.user_email.as_deref())?;
        // Only proxy admins make org admins.
        if m.role == "org_admin" && !caller.is_admin() {
            return Err(forbidden("Only proxy admins can add organization admins."));
        }
    }
    let mut added = Vec::new();
    for m in &members {
        let user_id =
            resolve_user(store, m.user_id.as_deref(), m.user_email.as_deref(), now).await?;
        let row = OrgMemberRow {
            organization_id: org.organization_id.clone(),
            user_id: user_id.clone(),
            user_role: m.role.clone(),
            created_at: now,
        };
        store.upsert_org_member(&row).await.map_err(store_error)?;
        added.push(row);
    }
    Ok(HttpResponse::Ok().json(json!({
        "organization_id": org.organization_id,
        "updated_organization_memberships": added.iter().map(|m| json!({
            "organization_id": m.organization_id,
            "user_id": m.user_id,
            "user_role": m.user_role,
        })).collect::<Vec<_>>(),
        "updated_users": added.iter().map(|m| json!({"user_id": m.user_id})).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
struct MemberRef {
    organization_id: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    user_email: Option<String>,
    /// `member_update` only.
    #[serde(default)]
    role: Option<String>,
}

async fn member_ref(
    st: &WorkerState,
    req: &HttpRequest,
    body: &MemberRef,
) -> Result<(Caller, String), GatewayError> {
    let caller = caller(st, req).await?;
    let store = store(st)?;
    load_org(store, &body.organization_id).await?;
    if !may_manage_org(st, &caller, &body.organization_id).await? {
        return Err(refused(&caller, &body.organization_id, req.path()));
    }
    let user_id = existing_user(
        store,
        body.user_id.as_deref(),
        body.user_email.as_deref(),
        &format!(
            "User not found, passed user_email={}",
            body.user_email.as_deref().unwrap_or_default()
        ),
    )
    .await?;
    Ok((caller, user_id))
}

pub async fn member_update(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let body: MemberRef = json_body(&st, &req, payload).await?;
    let (caller, user_id) = member_ref(&st, &req, &body).await?;
    let role = body.role.clone().unwrap_or_else(member_role);
    check_org_role(&role)?;
    if role == "org_admin" && !caller.is_admin() {
        return Err(forbidden("Only proxy admins can add organization admins."));
    }
    let store = store(&st)?;
    let is_member = store
        .org_members(&body.organization_id)
        .await
        .map_err(store_error)?
        .iter()
        .any(|m| m.user_id == user_id);
    if !is_member {
        return Err(bad_request(
            format!(
                "User={user_id} is not a member of organization={}",
                body.organization_id
            ),
            Some("user_id"),
        ));
    }
    let row = OrgMemberRow {
        organization_id: body.organization_id.clone(),
        user_id: user_id.clone(),
        user_role: role.clone(),
        created_at: now_ms(),
    };
    store.upsert_org_member(&row).await.map_err(store_error)?;
    Ok(HttpResponse::Ok().json(json!({
        "organization_id": body.organization_id,
        "user_id": user_id,
        "user_role": role,
    })))
}

pub async fn member_delete(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let body: MemberRef = json_body(&st, &req, payload).await?;
    let (_, user_id) = member_ref(&st, &req, &body).await?;
    if !store(&st)?
        .remove_org_member(&body.organization_id, &user_id)
        .await
        .map_err(store_error)?
    {
        return Err(bad_request(
            format!(
                "User={user_id} is not a member of organization={}",
                body.organization_id
            ),
            Some("user_id"),
        ));
    }
    Ok(HttpResponse::Ok().json(json!({
        "organization_id": body.organization_id,
        "user_id": user_id,
        "deleted": true,
    })))
}

pub fn routes(cfg: &mut super::Routes<'_>) {
    cfg.post("/organization/new", new)
        .post("/organization/update", update)
        .patch("/organization/update", update)
        .post("/organization/delete", delete)
        .delete("/organization/delete", delete)
        .get("/organization/info", info)
        .get("/organization/list", list)
        .post("/organization/member_add", member_add)
        .post("/organization/member_update", member_update)
        .patch("/organization/member_update", member_update)
        .post("/organization/member_delete", member_delete)
        .delete("/organization/member_delete", member_delete);
}
