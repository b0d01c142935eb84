//! `/team/*`: LiteLLM's team management API.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::admin::*;
use super::keys::key_json;
use super::{authenticate, WorkerState};
use crate::error::GatewayError;
use crate::shared::Invalidation;
use crate::store::{now_ms, MemberRow, Store, TeamRow, UserRow};

pub fn team_json(row: &TeamRow, members: &[MemberRow]) -> Value {
    json!({
        "team_id": row.team_id,
        "team_alias": row.team_alias,
        "models": json_text(&row.models, json!([])),
        "spend": row.spend,
        "max_budget": row.max_budget,
        "soft_budget": row.soft_budget,
        "budget_duration": row.budget_duration,
        "budget_reset_at": iso(row.budget_reset_at),
        "rpm_limit": row.rpm_limit,
        "tpm_limit": row.tpm_limit,
        "max_parallel_requests": row.max_parallel_requests,
        "metadata": json_text(&row.metadata, json!({})),
        "blocked": row.blocked,
        "members_with_roles": members
            .iter()
            .map(|m| json!({"user_id": m.user_id, "role": m.role}))
            .collect::<Vec<_>>(),
        "admins": members.iter().filter(|m| m.role == "admin").map(|m| m.user_id.clone()).collect::<Vec<_>>(),
        "members": members.iter().map(|m| m.user_id.clone()).collect::<Vec<_>>(),
        "created_at": iso(Some(row.created_at)),
        "updated_at": iso(Some(row.updated_at)),
    })
}

#[derive(Debug, Clone, Deserialize)]
struct Member {
    user_id: String,
    #[serde(default = "user_role")]
    role: String,
}

fn user_role() -> String {
    "user".into()
}

/// A member as given: a valid user id and a known role.
fn check_member(m: &Member) -> Result<(), GatewayError> {
    check_name("user_id", &m.user_id)?;
    check_role(&m.role)
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

#[derive(Debug, Default, Deserialize)]
struct TeamFields {
    #[serde(default)]
    team_id: Option<String>,
    /// `/team/new` only.
    #[serde(default)]
    members_with_roles: Vec<Member>,
    #[serde(default, deserialize_with = "double_option")]
    team_alias: Option<Option<String>>,
    #[serde(default)]
    models: Option<Vec<String>>,
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
    fn apply(&self, row: &mut TeamRow, now: i64) -> Result<(), GatewayError> {
        if let Some(Some(a)) = &self.team_alias {
            check_name("team_alias", a)?;
        }
        if let Some(m) = &self.models {
            check_names("models", m)?;
        }
        if let Some(a) = &self.team_alias {
            row.team_alias = a.clone();
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

async fn ensure_user(store: &Store, user_id: &str, now: i64) -> Result<(), GatewayError> {
    if store
        .get_user(user_id)
        .await
        .map_err(store_error)?
        .is_none()
    {
        match store
            .insert_user(&UserRow::blank(user_id.to_string(), now))
            .await
        {
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
    require_master(&st, &req).await?;
    let body: TeamFields = json_body(&st, &req, payload).await?;
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
    };
    body.apply(&mut row, now)?;
    row.spend = body.spend.unwrap_or(0.0);
    let mut members = Vec::new();
    for m in &body.members_with_roles {
        check_member(m)?;
        ensure_user(store, &m.user_id, now).await?;
        if !members.iter().any(|x: &MemberRow| x.user_id == m.user_id) {
            members.push(MemberRow {
                team_id: team_id.clone(),
                user_id: m.user_id.clone(),
                role: m.role.clone(),
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

#[derive(Deserialize)]
pub struct TeamQuery {
    team_id: Option<String>,
}

/// The master key reads any team; a key reads only its own team.
pub async fn info(
    req: HttpRequest,
    query: web::Query<TeamQuery>,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = authenticate(&st, &req).await?;
    let team_id = query
        .into_inner()
        .team_id
        .or_else(|| caller.team_id.clone())
        .ok_or_else(|| {
            management_error(
                422,
                "validation_error",
                "Malformed request. No team id passed in.",
                Some("team_id"),
            )
        })?;
    if !caller.is_master && caller.team_id.as_deref() != Some(team_id.as_str()) {
        return Err(forbidden(format!(
            "This key is not authorized to access team={team_id}"
        )));
    }
    let store = store(&st)?;
    let row = load_team(store, &team_id).await?;
    let members = store.members(&team_id).await.map_err(store_error)?;
    let keys = store.keys_of_team(&team_id).await.map_err(store_error)?;
    Ok(HttpResponse::Ok().json(json!({
        "team_id": team_id,
        "team_info": team_json(&row, &members),
        "keys": keys.iter().map(key_json).collect::<Vec<_>>(),
        "team_memberships": members.iter().map(|m| json!({"user_id": m.user_id, "team_id": m.team_id, "role": m.role})).collect::<Vec<_>>(),
    })))
}

async fn team_changed(st: &WorkerState, store: &Store, team_id: &str) -> Result<(), GatewayError> {
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

pub async fn update(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    require_master(&st, &req).await?;
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
    let mut row = load_team(store, &team_id).await?;
    body.apply(&mut row, now_ms())?;
    if !store
        .update_team(&row, body.spend)
        .await
        .map_err(store_error)?
    {
        return Err(not_found(
            format!("Team not found, passed team_id={team_id}"),
            "team_id",
        ));
    }
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
    require_master(&st, &req).await?;
    let body: DeleteTeams = json_body(&st, &req, payload).await?;
    let store = store(&st)?;
    for id in &body.team_ids {
        load_team(store, id).await?;
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
}

pub async fn list(
    req: HttpRequest,
    query: web::Query<TeamListQuery>,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    require_master(&st, &req).await?;
    check_opt_name("user_id", &query.user_id)?;
    let store = store(&st)?;
    let rows = store
        .list_teams(query.user_id.as_deref())
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
}

pub async fn member_add(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    require_master(&st, &req).await?;
    let body: MemberAdd = json_body(&st, &req, payload).await?;
    let store = store(&st)?;
    let row = load_team(store, &body.team_id).await?;
    let members = match body.member {
        OneOrMany::One(m) => vec![m],
        OneOrMany::Many(v) => v,
    };
    let existing = store.members(&row.team_id).await.map_err(store_error)?;
    let now = now_ms();
    for m in &members {
        check_member(m)?;
        if existing.iter().any(|e| e.user_id == m.user_id) {
            return Err(bad_request(
                format!("User={} already in team.", m.user_id),
                Some("member"),
            ));
        }
    }
    let mut updated_users = Vec::new();
    for m in &members {
        ensure_user(store, &m.user_id, now).await?;
        store
            .add_member(&MemberRow {
                team_id: row.team_id.clone(),
                user_id: m.user_id.clone(),
                role: m.role.clone(),
                created_at: now,
            })
            .await
            .map_err(store_error)?;
        if let Some(u) = store.get_user(&m.user_id).await.map_err(store_error)? {
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

#[derive(Deserialize)]
struct MemberDelete {
    team_id: String,
    user_id: String,
}

pub async fn member_delete(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    require_master(&st, &req).await?;
    let body: MemberDelete = json_body(&st, &req, payload).await?;
    let store = store(&st)?;
    let row = load_team(store, &body.team_id).await?;
    check_name("user_id", &body.user_id)?;
    if !store
        .remove_member(&body.team_id, &body.user_id)
        .await
        .map_err(store_error)?
    {
        return Err(bad_request("User not found in team", Some("user_id")));
    }
    let all = store.members(&row.team_id).await.map_err(store_error)?;
    Ok(HttpResponse::Ok().json(team_json(&row, &all)))
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
    require_master(&st, &req).await?;
    let body: TeamOnly = json_body(&st, &req, payload).await?;
    let store = store(&st)?;
    let mut row = load_team(store, &body.team_id).await?;
    row.blocked = blocked;
    row.updated_at = now_ms();
    store.update_team(&row, None).await.map_err(store_error)?;
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

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/team/new", web::post().to(new))
        .route("/team/info", web::get().to(info))
        .route("/team/update", web::post().to(update))
        .route("/team/delete", web::post().to(delete))
        .route("/team/list", web::get().to(list))
        .route("/team/member_add", web::post().to(member_add))
        .route("/team/member_delete", web::post().to(member_delete))
        .route("/team/block", web::post().to(block))
        .route("/team/unblock", web::post().to(unblock));
}
