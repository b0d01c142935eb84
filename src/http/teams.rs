//! `/team/*`: LiteLLM's team management API. Proxy admins manage every
//! team; an organization's admins its teams; a team's admins its members,
//! models and keys.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::admin::*;
use super::keys::key_json;
use super::roles::{caller, is_org_admin, may_manage_team, Caller};
use super::WorkerState;
use crate::error::GatewayError;
use crate::shared::Invalidation;
use crate::store::{now_ms, MemberRow, Store, TeamRow, UserRow};

pub fn team_json(row: &TeamRow, members: &[MemberRow]) -> Value {
    json!({
        "team_id": row.team_id,
        "team_alias": row.team_alias,
        "organization_id": row.organization_id,
        "models": json_text(&row.models, json!([])),
        "spend": row.spend,
        "max_budget": row.max_budget,
        "soft_budget": row.soft_budget,
        "budget_duration": row.budget_duration,
        "budget_reset_at": iso(row.budget_reset_at),
        "rpm_limit": row.rpm_limit,
        "tpm_limit": row.tpm_limit,
        "max_parallel_requests": row.max_parallel_requests,
        "metadata": crate::observe::keyed::mask_secrets(json_text(&row.metadata, json!({}))),
        "blocked": row.blocked,
        "members_with_roles": members
            .iter()
            .map(|m| json!({"user_id": m.user_id, "role": m.role}))
            .collect::<Vec<_>>(),
        "admins": members.iter().filter(|m| m.role == "admin").map(|m| m.user_id.clone()).collect::<Vec<_>>(),
        "members": members.iter().map(|m| m.user_id.clone()).collect::<Vec<_>>(),
        "litellm_model_table": {"model_aliases": json_text(&row.model_aliases, json!({}))},
        "created_at": iso(Some(row.created_at)),
        "updated_at": iso(Some(row.updated_at)),
    })
}

/// A member as LiteLLM's requests name one: by id, by email, or both.
#[derive(Debug, Clone, Deserialize)]
struct Member {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    user_email: Option<String>,
    #[serde(default = "user_role")]
    role: String,
}

fn user_role() -> String {
    "user".into()
}

fn check_role(role: &str) -> Result<(), GatewayError> {
    if role == "admin" || role == "user" {
        Ok(())
    } else {
        Err(bad_request(
            "member role must be `admin` or `user`",
            Some("role"),
        ))
    }
}

/// The user a member names: by id (created if new, with the email if one
/// was given), else by email (looked up, or created with a new id), as
/// LiteLLM does.
pub(super) async fn resolve_user(
    store: &Store,
    user_id: Option<&str>,
    user_email: Option<&str>,
    now: i64,
) -> Result<String, GatewayError> {
    check_member(user_id, user_email)?;
    match (user_id, user_email) {
        (Some(id), email) => {
            ensure_user(store, id, email, None, now).await?;
            Ok(id.to_string())
        }
        (None, Some(email)) => {
            if let Some(u) = store.user_by_email(email).await.map_err(store_error)? {
                return Ok(u.user_id);
            }
            let id = uuid::Uuid::new_v4().to_string();
            ensure_user(store, &id, Some(email), None, now).await?;
            Ok(id)
        }
        (None, None) => Err(no_member()),
    }
}

/// What `resolve_user` refuses, checked before anything is written: a
/// request that names a bad member must not leave users behind.
pub(super) fn check_member(
    user_id: Option<&str>,
    user_email: Option<&str>,
) -> Result<(), GatewayError> {
    if let Some(e) = user_email {
        check_name("user_email", e)?;
    }
    if let Some(id) = user_id {
        check_name("user_id", id)?;
    }
    if user_id.is_none() && user_email.is_none() {
        return Err(no_member());
    }
    Ok(())
}

fn already_in_team(user_id: &str, existing: &[MemberRow]) -> GatewayError {
    bad_request(
        format!(
            "User={user_id} already in team. Existing members={:?}",
            existing.iter().map(|e| &e.user_id).collect::<Vec<_>>()
        ),
        Some("member"),
    )
}

fn no_member() -> GatewayError {
    management_error(
        422,
        "validation_error",
        "Either user_id or user_email must be provided",
        Some("member"),
    )
}

#[derive(Debug, Default, Deserialize)]
struct TeamFields {
    #[serde(default)]
    team_id: Option<String>,
    /// `/team/new` only.
    #[serde(default)]
    members_with_roles: Vec<Member>,
    #[serde(default, deserialize_with = "double_option")]
    team_alias: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    organization_id: Option<Option<String>>,
    #[serde(default)]
    models: Option<Vec<String>>,
    /// Public name → model group, for every key of the team.
    #[serde(default)]
    model_aliases: Option<HashMap<String, String>>,
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
}

impl TeamFields {
    /// Fields a team admin may not change on their own team: what it may
    /// spend and call, where it belongs, and whether it is blocked.
    fn touches_limits(&self) -> bool {
        self.organization_id.is_some()
            || self.models.is_some()
            || self.max_budget.is_some()
            || self.soft_budget.is_some()
            || self.budget_duration.is_some()
            || self.rpm_limit.is_some()
            || self.tpm_limit.is_some()
            || self.max_parallel_requests.is_some()
            || self.blocked.is_some()
            || self.spend.is_some()
    }

    fn apply(&self, row: &mut TeamRow, now: i64) -> Result<(), GatewayError> {
        if let Some(Some(a)) = &self.team_alias {
            check_name("team_alias", a)?;
        }
        if let Some(m) = &self.models {
            check_names("models", m)?;
        }
        if let Some(a) = &self.model_aliases {
            check_names("model_aliases", a.keys().chain(a.values()))?;
            row.model_aliases = json!(a).to_string();
        }
        if let Some(a) = &self.team_alias {
            row.team_alias = a.clone();
        }
        if let Some(o) = &self.organization_id {
            row.organization_id = o.clone();
        }
        if let Some(m) = &self.models {
            row.models = json!(m).to_string();
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

/// A team inside an organization stays inside it: its models among the
/// organization's, its budget and limits no larger (LiteLLM's checks).
async fn check_within_org(store: &Store, row: &TeamRow) -> Result<(), GatewayError> {
    let Some(org_id) = &row.organization_id else {
        return Ok(());
    };
    let org = store
        .get_org(org_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            bad_request(
                format!("Organization not found, passed organization_id={org_id}"),
                Some("organization_id"),
            )
        })?;
    let org_models: Vec<String> = serde_json::from_str(&org.models).unwrap_or_default();
    let team_models: Vec<String> = serde_json::from_str(&row.models).unwrap_or_default();
    if !org_models.is_empty() {
        if team_models.is_empty() {
            // A team with no list of its own gets the organization's.
        } else if let Some(m) = team_models
            .iter()
            .find(|m| !crate::access::list_allows(&org_models, m))
        {
            return Err(bad_request(
                format!("Model not in organization's allowed models. Model={m}, Organization allowed models={org_models:?}"),
                Some("models"),
            ));
        }
    }
    for (field, team, org) in [
        ("max_budget", row.max_budget, org.max_budget),
        ("soft_budget", row.soft_budget, org.soft_budget),
    ] {
        if let (Some(t), Some(o)) = (team, org) {
            if t > o {
                return Err(bad_request(
                    format!("Team {field} ({t}) cannot exceed the organization's {field} ({o})"),
                    Some(field),
                ));
            }
        }
    }
    for (field, team, org) in [
        ("tpm_limit", row.tpm_limit, org.tpm_limit),
        ("rpm_limit", row.rpm_limit, org.rpm_limit),
    ] {
        if let (Some(t), Some(o)) = (team, org) {
            if t > o {
                return Err(bad_request(
                    format!("Team {field} ({t}) cannot exceed the organization's {field} ({o})"),
                    Some(field),
                ));
            }
        }
    }
    Ok(())
}

/// Creates the user if it does not exist (LiteLLM's default role), with
/// `email` and `role` when given.
pub async fn ensure_user(
    store: &Store,
    user_id: &str,
    email: Option<&str>,
    role: Option<&str>,
    now: i64,
) -> Result<(), GatewayError> {
    if store
        .get_user(user_id)
        .await
        .map_err(store_error)?
        .is_none()
    {
        let mut row = UserRow::blank(user_id.to_string(), now);
        row.user_email = email.map(str::to_string);
        if let Some(r) = role {
            row.user_role = Some(r.to_string());
        }
        match store.insert_user(&row).await {
            Ok(()) | Err(crate::store::StoreError::Duplicate(_)) => {}
            Err(e) => return Err(store_error(e)),
        }
    }
    Ok(())
}

pub async fn new(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let body: TeamFields = json_body(&st, &req, payload).await?;
    if !caller.is_admin() {
        // Organization admins create teams in their organization.
        let org = body.organization_id.clone().flatten();
        let allowed = match &org {
            Some(o) => is_org_admin(&st, o, caller.user_id()).await?,
            None => false,
        };
        if !allowed {
            return Err(caller.admin_only(req.path()));
        }
    }
    let now = now_ms();
    let team_id = body
        .team_id
        .clone()
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    check_name("team_id", &team_id)?;
    let duplicate = || {
        bad_request(
            format!("Team id = {team_id} already exists. Please use a different team id."),
            Some("team_id"),
        )
    };
    let store = store(&st)?;
    if store
        .get_team(&team_id)
        .await
        .map_err(store_error)?
        .is_some()
    {
        return Err(duplicate());
    }
    let mut row = TeamRow {
        team_id: team_id.clone(),
        team_alias: None,
        models: "[]".into(),
        spend: 0.0,
        max_budget: None,
        budget_duration: None,
        budget_reset_at: None,
        rpm_limit: None,
        tpm_limit: None,
        max_parallel_requests: None,
        metadata: "{}".into(),
        blocked: false,
        created_at: now,
        updated_at: now,
        soft_budget: None,
        organization_id: None,
        model_aliases: "{}".into(),
    };
    body.apply(&mut row, now)?;
    row.spend = body.spend.unwrap_or(0.0);
    check_within_org(store, &row).await?;
    for m in &body.members_with_roles {
        check_role(&m.role)?;
        check_member(m.user_id.as_deref(), m.user_email.as_deref())?;
    }
    let mut members: Vec<MemberRow> = Vec::new();
    for m in &body.members_with_roles {
        let user_id =
            resolve_user(store, m.user_id.as_deref(), m.user_email.as_deref(), now).await?;
        if !members.iter().any(|x| x.user_id == user_id) {
            members.push(MemberRow {
                team_id: team_id.clone(),
                user_id,
                role: m.role.clone(),
                created_at: now,
            });
        }
    }
    // The creator administers the team (the master key as LiteLLM's
    // `default_user_id`).
    if let Some(me) = caller.user_id() {
        if !members.iter().any(|x| x.user_id == me) {
            let role = caller.key.is_master.then_some("proxy_admin");
            ensure_user(store, me, None, role, now).await?;
            members.push(MemberRow {
                team_id: team_id.clone(),
                user_id: me.to_string(),
                role: "admin".into(),
                created_at: now,
            });
        }
    }
    store
        .insert_team(&row, &members)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Duplicate(_) => duplicate(),
            other => store_error(other),
        })?;
    Ok(HttpResponse::Ok().json(team_json(&row, &members)))
}

async fn load_team(store: &Store, team_id: &str) -> Result<TeamRow, GatewayError> {
    check_name("team_id", team_id)?;
    store
        .get_team(team_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            not_found(
                format!("Team not found, passed team_id={team_id}"),
                "team_id",
            )
        })
}

/// Loads a team the caller administers (proxy admin, an admin of the team
/// or of its organization), else LiteLLM's 403.
pub(super) async fn load_managed(
    st: &WorkerState,
    caller: &Caller,
    team_id: &str,
    route: &str,
) -> Result<TeamRow, GatewayError> {
    let row = load_team(store(st)?, team_id).await?;
    if may_manage_team(st, caller, &row.team_id, row.organization_id.as_deref()).await? {
        Ok(row)
    } else {
        Err(forbidden(format!(
            "Call not allowed. User not proxy admin OR team admin. route={route}, team_id={team_id}"
        )))
    }
}

/// Proxy admin, or an admin of the team's organization.
async fn may_administer(
    st: &WorkerState,
    caller: &Caller,
    row: &TeamRow,
) -> Result<bool, GatewayError> {
    if caller.is_admin() {
        return Ok(true);
    }
    match &row.organization_id {
        Some(o) => is_org_admin(st, o, caller.user_id()).await,
        None => Ok(false),
    }
}

#[derive(Deserialize)]
pub struct TeamQuery {
    team_id: Option<String>,
}

/// Proxy admins and viewers read any team; a key reads its own team, a
/// user the teams they belong to.
pub async fn info(
    req: HttpRequest,
    query: web::Query<TeamQuery>,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let team_id = query
        .into_inner()
        .team_id
        .or_else(|| caller.key.team_id.clone())
        .ok_or_else(|| {
            management_error(
                422,
                "validation_error",
                "Malformed request. No team id passed in.",
                Some("team_id"),
            )
        })?;
    let store = store(&st)?;
    let row = load_team(store, &team_id).await?;
    let members = store.members(&team_id).await.map_err(store_error)?;
    let allowed = caller.reads_all()
        || caller.key.team_id.as_deref() == Some(team_id.as_str())
        || caller
            .user_id()
            .is_some_and(|me| members.iter().any(|m| m.user_id == me))
        || may_administer(&st, &caller, &row).await?;
    if !allowed {
        return Err(forbidden(format!(
            "User={} not authorized to access this team={team_id}",
            caller.user_id().unwrap_or("unknown")
        )));
    }
    let keys = store.keys_of_team(&team_id).await.map_err(store_error)?;
    Ok(HttpResponse::Ok().json(json!({
        "team_id": team_id,
        "team_info": team_json(&row, &members),
        "keys": keys.iter().map(key_json).collect::<Vec<_>>(),
        "team_memberships": members.iter().map(|m| json!({"user_id": m.user_id, "team_id": m.team_id, "role": m.role})).collect::<Vec<_>>(),
    })))
}

pub(super) async fn team_changed(
    st: &WorkerState,
    store: &Store,
    team_id: &str,
) -> Result<(), GatewayError> {
    let hashes = store
        .keys_of_team(team_id)
        .await
        .map_err(store_error)?
        .into_iter()
        .map(|k| k.token)
        .collect();
    changed(st, Invalidation::Team(team_id.to_string()), hashes).await;
    Ok(())
}

/// Team admins may rename their team, change its metadata and model
/// aliases; its limits, models and organization are for proxy admins and
/// the organization's admins.
pub async fn update(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let body: TeamFields = json_body(&st, &req, payload).await?;
    let team_id = body.team_id.clone().ok_or_else(|| {
        management_error(
            422,
            "validation_error",
            "`team_id` is required",
            Some("team_id"),
        )
    })?;
    let store = store(&st)?;
    let mut row = edit_row(async || {
        let mut row = load_managed(&st, &caller, &team_id, req.path()).await?;
        let read_at = row.updated_at;
        if body.touches_limits() && !may_administer(&st, &caller, &row).await? {
            return Err(forbidden(
                "Team admins may change a team's alias, metadata and model aliases; its models, budgets, limits, organization and blocked state are for proxy admins and organization admins.",
            )
            .into());
        }
        if let Some(Some(org)) = &body.organization_id {
            if !caller.is_admin() && !is_org_admin(&st, org, caller.user_id()).await? {
                return Err(caller.admin_only(req.path()).into());
            }
        }
        body.apply(&mut row, now_ms())?;
        check_within_org(store, &row).await?;
        if !store
            .update_team(&row, body.spend, read_at)
            .await
            .map_err(write_error)?
        {
            return Err(not_found(
                format!("Team not found, passed team_id={team_id}"),
                "team_id",
            )
            .into());
        }
        Ok(row)
    })
    .await?;
    if let Some(s) = body.spend {
        row.spend = s;
    }
    team_changed(&st, store, &row.team_id).await?;
    let members = store.members(&row.team_id).await.map_err(store_error)?;
    Ok(HttpResponse::Ok().json(json!({"team_id": row.team_id, "data": team_json(&row, &members)})))
}

#[derive(Deserialize)]
struct DeleteTeams {
    team_ids: Vec<String>,
}

pub async fn delete(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let body: DeleteTeams = json_body(&st, &req, payload).await?;
    let store = store(&st)?;
    for id in &body.team_ids {
        let row = load_team(store, id).await?;
        if !may_administer(&st, &caller, &row).await? {
            return Err(caller.admin_only(req.path()));
        }
    }
    let tokens = store
        .delete_teams(&body.team_ids)
        .await
        .map_err(store_error)?;
    for id in &body.team_ids {
        changed(&st, Invalidation::Team(id.clone()), tokens.clone()).await;
    }
    Ok(HttpResponse::Ok().json(json!({ "deleted_teams": body.team_ids })))
}

#[derive(Deserialize)]
pub struct TeamListQuery {
    user_id: Option<String>,
    organization_id: Option<String>,
}

/// Admins list every team; others only the teams they belong to, and must
/// say so (`user_id` = themselves), as LiteLLM requires.
pub async fn list(
    req: HttpRequest,
    query: web::Query<TeamListQuery>,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let q = query.into_inner();
    check_opt_name("user_id", &q.user_id)?;
    check_opt_name("organization_id", &q.organization_id)?;
    if !caller.reads_all() && (q.user_id.is_none() || q.user_id.as_deref() != caller.user_id()) {
        return Err(management_error(
            401,
            "auth_error",
            format!(
                "Only admin users can query all teams/other teams. Your user role={}",
                caller.role.as_str()
            ),
            Some("None"),
        ));
    }
    let store = store(&st)?;
    let org = q.organization_id.as_deref().map(|o| match o {
        "default_organization" => None,
        o => Some(o),
    });
    let rows = store
        .list_teams(q.user_id.as_deref(), org)
        .await
        .map_err(store_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let members = store.members(&r.team_id).await.map_err(store_error)?;
        out.push(team_json(r, &members));
    }
    Ok(HttpResponse::Ok().json(out))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Member),
    Many(Vec<Member>),
}

#[derive(Deserialize)]
struct MemberAdd {
    team_id: String,
    member: OneOrMany,
    /// LiteLLM's per-member budget inside the team: accepted, not enforced.
    #[serde(default)]
    #[allow(dead_code)]
    max_budget_in_team: Option<f64>,
}

pub async fn member_add(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let body: MemberAdd = json_body(&st, &req, payload).await?;
    let store = store(&st)?;
    let members = match body.member {
        OneOrMany::One(m) => vec![m],
        OneOrMany::Many(v) => v,
    };
    let row = load_team(store, &body.team_id).await?;
    // Team admins add anyone; any user may add themself, as a plain
    // member, to a team the config lists as available.
    let me = (!caller.key.is_master)
        .then_some(caller.key.user_id.as_deref())
        .flatten();
    let self_join = me.is_some()
        && st.gw.config.auth.available_teams.contains(&row.team_id)
        && members
            .iter()
            .all(|m| m.role == "user" && m.user_id.as_deref() == me);
    if !self_join
        && !may_manage_team(&st, &caller, &row.team_id, row.organization_id.as_deref()).await?
    {
        return Err(forbidden(format!(
            "Call not allowed. User not proxy admin OR team admin. route={}, team_id={}",
            req.path(),
            row.team_id
        )));
    }
    let existing = store.members(&row.team_id).await.map_err(store_error)?;
    let now = now_ms();
    for m in &members {
        check_role(&m.role)?;
        check_member(m.user_id.as_deref(), m.user_email.as_deref())?;
        if let Some(id) = m.user_id.as_deref() {
            if existing.iter().any(|e| e.user_id == id) {
                return Err(already_in_team(id, &existing));
            }
        }
    }
    let mut resolved = Vec::with_capacity(members.len());
    for m in &members {
        let user_id =
            resolve_user(store, m.user_id.as_deref(), m.user_email.as_deref(), now).await?;
        if existing.iter().any(|e| e.user_id == user_id) {
            return Err(already_in_team(&user_id, &existing));
        }
        resolved.push((user_id, m.role.clone()));
    }
    let mut updated_users = Vec::new();
    for (user_id, role) in &resolved {
        store
            .add_member(&MemberRow {
                team_id: row.team_id.clone(),
                user_id: user_id.clone(),
                role: role.clone(),
                created_at: now,
            })
            .await
            .map_err(store_error)?;
        if let Some(u) = store.get_user(user_id).await.map_err(store_error)? {
            updated_users.push(super::users::user_json(&u));
        }
    }
    let all = store.members(&row.team_id).await.map_err(store_error)?;
    let mut out = team_json(&row, &all);
    if let Value::Object(m) = &mut out {
        m.insert("updated_users".into(), json!(updated_users));
    }
    Ok(HttpResponse::Ok().json(out))
}

/// A member named in a delete or update: by id or by email.
#[derive(Deserialize)]
struct MemberRef {
    team_id: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    user_email: Option<String>,
    /// `/team/member_update` only.
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    max_budget_in_team: Option<f64>,
}

impl MemberRef {
    /// The member's user id (an email is looked up; unknown → 400).
    async fn user_id(&self, store: &Store) -> Result<String, GatewayError> {
        existing_user(
            store,
            self.user_id.as_deref(),
            self.user_email.as_deref(),
            "User not found in team",
        )
        .await
    }
}

/// An existing user named by id or by email; `unknown` answers (400) an
/// email nobody has.
pub(super) async fn existing_user(
    store: &Store,
    user_id: Option<&str>,
    user_email: Option<&str>,
    unknown: &str,
) -> Result<String, GatewayError> {
    match (user_id, user_email) {
        (Some(id), _) => {
            check_name("user_id", id)?;
            Ok(id.to_string())
        }
        (None, Some(email)) => {
            check_name("user_email", email)?;
            store
                .user_by_email(email)
                .await
                .map_err(store_error)?
                .map(|u| u.user_id)
                .ok_or_else(|| bad_request(unknown, Some("user_email")))
        }
        (None, None) => Err(management_error(
            422,
            "validation_error",
            "Either user_id or user_email must be provided",
            Some("user_id"),
        )),
    }
}

pub async fn member_delete(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let body: MemberRef = json_body(&st, &req, payload).await?;
    let store = store(&st)?;
    let row = load_managed(&st, &caller, &body.team_id, req.path()).await?;
    let user_id = body.user_id(store).await?;
    if !store
        .remove_member(&body.team_id, &user_id)
        .await
        .map_err(store_error)?
    {
        return Err(bad_request("User not found in team", Some("user_id")));
    }
    let all = store.members(&row.team_id).await.map_err(store_error)?;
    Ok(HttpResponse::Ok().json(team_json(&row, &all)))
}

pub async fn member_update(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let body: MemberRef = json_body(&st, &req, payload).await?;
    let store = store(&st)?;
    let row = load_managed(&st, &caller, &body.team_id, req.path()).await?;
    let user_id = body.user_id(store).await?;
    let role = body.role.clone().unwrap_or_else(user_role);
    check_role(&role)?;
    if !store
        .set_member_role(&row.team_id, &user_id, &role)
        .await
        .map_err(store_error)?
    {
        return Err(bad_request("User not found in team", Some("user_id")));
    }
    Ok(HttpResponse::Ok().json(json!({
        "team_id": row.team_id,
        "user_id": user_id,
        "user_email": body.user_email,
        "role": role,
        "max_budget_in_team": body.max_budget_in_team,
    })))
}

/// The teams any user may join themself (`auth.available_teams`).
pub async fn available(
    req: HttpRequest,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    caller(&st, &req).await?;
    let store = store(&st)?;
    let mut out = Vec::new();
    for id in &st.gw.config.auth.available_teams {
        if let Some(t) = store.get_team(id).await.map_err(store_error)? {
            let members = store.members(id).await.map_err(store_error)?;
            out.push(team_json(&t, &members));
        }
    }
    Ok(HttpResponse::Ok().json(out))
}

#[derive(Deserialize)]
struct TeamModels {
    team_id: String,
    models: Vec<String>,
}

async fn change_models(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
    add: bool,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let body: TeamModels = json_body(&st, &req, payload).await?;
    check_names("models", &body.models)?;
    let store = store(&st)?;
    let row = edit_row(async || {
        let mut row = load_managed(&st, &caller, &body.team_id, req.path()).await?;
        let read_at = row.updated_at;
        let mut models: Vec<String> = serde_json::from_str(&row.models).unwrap_or_default();
        if add {
            for m in &body.models {
                if !models.contains(m) {
                    models.push(m.clone());
                }
            }
        } else {
            models.retain(|m| !body.models.contains(m));
        }
        row.models = json!(models).to_string();
        row.updated_at = now_ms();
        check_within_org(store, &row).await?;
        store
            .update_team(&row, None, read_at)
            .await
            .map_err(write_error)?;
        Ok(row)
    })
    .await?;
    team_changed(&st, store, &row.team_id).await?;
    let members = store.members(&row.team_id).await.map_err(store_error)?;
    Ok(HttpResponse::Ok().json(team_json(&row, &members)))
}

pub async fn model_add(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    change_models(req, payload, st, true).await
}

pub async fn model_delete(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    change_models(req, payload, st, false).await
}

#[derive(Deserialize)]
struct TeamOnly {
    team_id: String,
}

async fn set_blocked(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
    blocked: bool,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let body: TeamOnly = json_body(&st, &req, payload).await?;
    let store = store(&st)?;
    let row = edit_row(async || {
        let mut row = load_team(store, &body.team_id).await?;
        if !may_administer(&st, &caller, &row).await? {
            return Err(caller.admin_only(req.path()).into());
        }
        let read_at = row.updated_at;
        row.blocked = blocked;
        row.updated_at = now_ms();
        store
            .update_team(&row, None, read_at)
            .await
            .map_err(write_error)?;
        Ok(row)
    })
    .await?;
    team_changed(&st, store, &row.team_id).await?;
    let members = store.members(&row.team_id).await.map_err(store_error)?;
    Ok(HttpResponse::Ok().json(team_json(&row, &members)))
}

pub async fn block(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    set_blocked(req, payload, st, true).await
}

pub async fn unblock(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    set_blocked(req, payload, st, false).await
}

pub fn routes(cfg: &mut super::Routes<'_>) {
    cfg.post("/team/new", new)
        .get("/team/info", info)
        .post("/team/update", update)
        .post("/team/delete", delete)
        .get("/team/list", list)
        .get("/team/available", available)
        .post("/team/member_add", member_add)
        .post("/team/member_delete", member_delete)
        .post("/team/member_update", member_update)
        .post("/team/model/add", model_add)
        .post("/team/model/delete", model_delete)
        .post("/team/block", block)
        .post("/team/unblock", unblock);
}
