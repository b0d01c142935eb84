//! `/user/*`: LiteLLM's internal-user management API.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::admin::*;
use super::keys::{create_key, key_json, KeyFields};
use super::roles::{caller, Role};
use super::WorkerState;
use crate::error::GatewayError;
use crate::shared::Invalidation;
use crate::store::{now_ms, UserFilter, UserRow};

pub fn user_json(row: &UserRow) -> Value {
    json!({
        "user_id": row.user_id,
        "user_email": row.user_email,
        "user_alias": row.user_alias,
        "user_role": row.user_role,
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
        "created_at": iso(Some(row.created_at)),
        "updated_at": iso(Some(row.updated_at)),
    })
}

/// User fields; in updates, absent means unchanged and `null` clears.
#[derive(Debug, Default, Deserialize)]
struct UserFields {
    #[serde(default)]
    user_id: Option<String>,
    /// `/user/new` only: also issue a key (default true).
    #[serde(default)]
    auto_create_key: Option<bool>,
    #[serde(default)]
    key_alias: Option<String>,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    team_id: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    user_email: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    user_alias: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    user_role: Option<Option<String>>,
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
    spend: Option<f64>,
}

impl UserFields {
    /// Fields a user may not change on themself: role, budget, limits,
    /// models, spend (LiteLLM refuses the role with this wording).
    fn self_update_refusal(&self) -> Option<GatewayError> {
        if self.user_role.is_some() {
            return Some(forbidden("Only proxy admins can modify user roles."));
        }
        let limits = self.models.is_some()
            || self.max_budget.is_some()
            || self.soft_budget.is_some()
            || self.budget_duration.is_some()
            || self.rpm_limit.is_some()
            || self.tpm_limit.is_some()
            || self.max_parallel_requests.is_some()
            || self.spend.is_some();
        limits.then(|| {
            forbidden("Only proxy admins can change a user's models, budget, limits or spend.")
        })
    }
}

const ROLES: [&str; 5] = Role::SETTABLE;

impl UserFields {
    async fn apply(
        &self,
        st: &WorkerState,
        row: &mut UserRow,
        now: i64,
    ) -> Result<(), GatewayError> {
        if let Some(Some(a)) = &self.user_alias {
            check_name("user_alias", a)?;
        }
        if let Some(m) = &self.models {
            check_names("models", m)?;
        }
        check_opt_name("team_id", &self.team_id)?;
        check_opt_name("key_alias", &self.key_alias)?;
        if let Some(email) = &self.user_email {
            if let Some(e) = email {
                check_name("user_email", e)?;
                if store(st)?
                    .user_email_taken(e, Some(&row.user_id))
                    .await
                    .map_err(store_error)?
                {
                    return Err(management_error(
                        409,
                        "bad_request_error",
                        format!("User with email {e} already exists"),
                        Some("user_email"),
                    ));
                }
            }
            row.user_email = email.clone();
        }
        if let Some(a) = &self.user_alias {
            row.user_alias = a.clone();
        }
        if let Some(r) = &self.user_role {
            if let Some(role) = r {
                if !ROLES.contains(&role.as_str()) {
                    return Err(bad_request(
                        format!("user_role must be one of {ROLES:?}"),
                        Some("user_role"),
                    ));
                }
            }
            row.user_role = r.clone();
        }
        if let Some(m) = &self.models {
            row.models = json!(m).to_string();
        }
        apply_budget!(self, row, now)?;
        if let Some(m) = &self.metadata {
            row.metadata = metadata_text(m)?;
        }
        check_non_negative("spend", self.spend)?;
        row.updated_at = now;
        Ok(())
    }
}

pub async fn new(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    require_admin(&st, &req).await?;
    let body: UserFields = json_body(&st, &req, payload).await?;
    let now = now_ms();
    let user_id = body
        .user_id
        .clone()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    check_name("user_id", &user_id)?;
    let store = store(&st)?;
    if store
        .get_user(&user_id)
        .await
        .map_err(store_error)?
        .is_some()
    {
        return Err(management_error(
            409,
            "bad_request_error",
            format!("User with id {user_id} already exists"),
            Some("user_id"),
        ));
    }
    let mut row = UserRow::blank(user_id.clone(), now);
    body.apply(&st, &mut row, now).await?;
    row.spend = body.spend.unwrap_or(0.0);
    store.insert_user(&row).await.map_err(|e| match e {
        crate::store::StoreError::Duplicate(_) => management_error(
            409,
            "bad_request_error",
            format!("User with id {user_id} already exists"),
            Some("user_id"),
        ),
        other => store_error(other),
    })?;
    let mut out = user_json(&row);
    let (key, key_name, expires) = if body.auto_create_key.unwrap_or(true) {
        let fields = KeyFields {
            key_alias: body.key_alias.clone().map(Some),
            duration: body.duration.clone().map(Some),
            models: body.models.clone(),
            user_id: Some(Some(user_id.clone())),
            team_id: body.team_id.clone().map(Some),
            ..Default::default()
        };
        let (raw, key_row) = create_key(&st, None, fields).await?;
        (json!(raw), json!(key_row.key_name), iso(key_row.expires))
    } else {
        (json!(""), Value::Null, Value::Null)
    };
    if let Value::Object(m) = &mut out {
        m.insert("key".into(), key);
        m.insert("key_name".into(), key_name);
        m.insert("expires".into(), expires);
        m.insert("key_alias".into(), json!(body.key_alias));
        m.insert(
            "teams".into(),
            json!(body.team_id.into_iter().collect::<Vec<_>>()),
        );
        m.insert("token".into(), Value::Null);
    }
    changed(&st, Invalidation::User(user_id), vec![]).await;
    Ok(HttpResponse::Ok().json(out))
}

#[derive(Deserialize)]
pub struct UserQuery {
    user_id: Option<String>,
}

/// Proxy admins and viewers read any user; others only themselves.
pub async fn info(
    req: HttpRequest,
    query: web::Query<UserQuery>,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let own = (!caller.key.is_master)
        .then(|| caller.key.user_id.clone())
        .flatten();
    let user_id = match (query.into_inner().user_id, &own) {
        (Some(u), _) => u,
        (None, Some(own)) => own.clone(),
        (None, None) => return Err(bad_request("user_id is required", Some("user_id"))),
    };
    check_name("user_id", &user_id)?;
    if !caller.reads_all() && own.as_deref() != Some(user_id.as_str()) {
        return Err(forbidden(format!(
            "key not allowed to access this user's info. user_id={user_id}, key's user_id={}",
            own.as_deref().unwrap_or("None")
        )));
    }
    let store = store(&st)?;
    let row = store
        .get_user(&user_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(format!("User {user_id} not found"), "user_id"))?;
    let keys = store.keys_of_user(&user_id).await.map_err(store_error)?;
    let memberships = store.memberships_of(&user_id).await.map_err(store_error)?;
    let mut teams = Vec::new();
    for m in &memberships {
        if let Some(t) = store.get_team(&m.team_id).await.map_err(store_error)? {
            teams.push(super::teams::team_json(&t, &[]));
        }
    }
    let mut user_info = user_json(&row);
    if let Value::Object(m) = &mut user_info {
        m.insert(
            "teams".into(),
            json!(memberships
                .iter()
                .map(|m| m.team_id.clone())
                .collect::<Vec<_>>()),
        );
    }
    Ok(HttpResponse::Ok().json(json!({
        "user_id": user_id,
        "user_info": user_info,
        "keys": keys.iter().map(key_json).collect::<Vec<_>>(),
        "teams": teams,
    })))
}

/// Like LiteLLM, updating an unknown `user_id` creates that user.
pub async fn update(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let body: UserFields = json_body(&st, &req, payload).await?;
    let store = store(&st)?;
    // By id, or by email (LiteLLM's UpdateUserRequest takes either).
    let user_id = match (&body.user_id, &body.user_email) {
        (Some(id), _) => id.clone(),
        (None, Some(Some(email))) => match store.user_by_email(email).await.map_err(store_error)? {
            Some(u) => u.user_id,
            None => uuid::Uuid::new_v4().to_string(),
        },
        _ => {
            return Err(management_error(
                422,
                "validation_error",
                "Either user id or user email must be provided",
                Some("user_id"),
            ))
        }
    };
    check_name("user_id", &user_id)?;
    if !caller.is_admin() {
        if caller.key.user_id.as_deref() != Some(user_id.as_str()) {
            return Err(forbidden(
                "User does not have permission to update this user. Only PROXY_ADMIN can update other users.",
            ));
        }
        if let Some(e) = body.self_update_refusal() {
            return Err(e);
        }
    }
    let row = edit_row(async || {
        let now = now_ms();
        let existing = store.get_user(&user_id).await.map_err(store_error)?;
        let read_at = existing.as_ref().map(|u| u.updated_at);
        let mut row = existing.unwrap_or_else(|| UserRow::blank(user_id.clone(), now));
        body.apply(&st, &mut row, now).await?;
        match read_at {
            None => {
                row.spend = body.spend.unwrap_or(0.0);
                store.insert_user(&row).await.map_err(store_error)?;
            }
            Some(read_at) => {
                store
                    .update_user(&row, body.spend, read_at)
                    .await
                    .map_err(write_error)?;
                if let Some(s) = body.spend {
                    row.spend = s;
                }
            }
        }
        Ok(row)
    })
    .await?;
    let hashes = store
        .keys_of_user(&row.user_id)
        .await
        .map_err(store_error)?
        .into_iter()
        .map(|k| k.token)
        .collect();
    changed(&st, Invalidation::User(row.user_id.clone()), hashes).await;
    Ok(HttpResponse::Ok().json(json!({ "user_id": row.user_id, "data": user_json(&row) })))
}

#[derive(Deserialize)]
struct DeleteUsers {
    user_ids: Vec<String>,
}

/// Deletes users with their keys and memberships; answers the count, as LiteLLM does.
pub async fn delete(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    require_admin(&st, &req).await?;
    let body: DeleteUsers = json_body(&st, &req, payload).await?;
    check_names("user_ids", &body.user_ids)?;
    let store = store(&st)?;
    for id in &body.user_ids {
        if store.get_user(id).await.map_err(store_error)?.is_none() {
            return Err(not_found(
                format!("User not found, passed user_id={id}"),
                "user_ids",
            ));
        }
    }
    let (n, tokens) = store
        .delete_users(&body.user_ids)
        .await
        .map_err(store_error)?;
    for id in &body.user_ids {
        changed(&st, Invalidation::User(id.clone()), tokens.clone()).await;
    }
    Ok(HttpResponse::Ok().json(n))
}

#[derive(Deserialize)]
pub struct UserList {
    page: Option<i64>,
    page_size: Option<i64>,
    role: Option<String>,
    /// Comma-separated ids.
    user_ids: Option<String>,
    user_email: Option<String>,
    team: Option<String>,
    sort_by: Option<String>,
    sort_order: Option<String>,
}

/// Proxy admins and viewers list every user; an organization admin the
/// members of the organizations they administer; others are refused.
pub async fn list(
    req: HttpRequest,
    query: web::Query<UserList>,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let q = query.into_inner();
    let (page, size) = page_bounds(q.page, q.page_size, 25)?;
    let store = store(&st)?;
    let mut user_ids: Option<Vec<String>> = q.user_ids.as_deref().map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    });
    if !caller.reads_all() {
        let mut visible: Vec<String> = Vec::new();
        if let Some(me) = caller.key.user_id.as_deref() {
            for m in store.org_memberships_of(me).await.map_err(store_error)? {
                if m.user_role == "org_admin" {
                    visible.extend(
                        store
                            .org_members(&m.organization_id)
                            .await
                            .map_err(store_error)?
                            .into_iter()
                            .map(|m| m.user_id),
                    );
                }
            }
        }
        if visible.is_empty() {
            return Err(forbidden(
                "Only proxy admins and organization admins can list users.",
            ));
        }
        user_ids = Some(match user_ids {
            Some(asked) => asked.into_iter().filter(|u| visible.contains(u)).collect(),
            None => visible,
        });
    }
    if let Some(ids) = &user_ids {
        check_names("user_ids", ids)?;
    }
    check_opt_name("user_email", &q.user_email)?;
    check_opt_name("team", &q.team)?;
    if let Some(r) = &q.role {
        if Role::parse(r).is_none() {
            return Err(bad_request(
                format!("role must be one of {ROLES:?}"),
                Some("role"),
            ));
        }
    }
    if let Some(s) = &q.sort_by {
        const SORTABLE: [&str; 6] = [
            "user_id",
            "user_email",
            "created_at",
            "spend",
            "user_alias",
            "user_role",
        ];
        if !SORTABLE.contains(&s.as_str()) {
            return Err(bad_request(
                format!("sort_by must be one of {SORTABLE:?}"),
                Some("sort_by"),
            ));
        }
    }
    let sort_desc = match q.sort_order.as_deref() {
        None | Some("asc") => q.sort_by.is_none(),
        Some("desc") => true,
        Some(_) => {
            return Err(bad_request(
                "sort_order must be asc or desc",
                Some("sort_order"),
            ))
        }
    };
    let filter = UserFilter {
        role: q.role,
        user_ids,
        email_contains: q.user_email,
        team: q.team,
        sort_by: q.sort_by,
        sort_desc,
    };
    let (rows, total) = store
        .list_users(&filter, page, size)
        .await
        .map_err(store_error)?;
    let ids: Vec<String> = rows.iter().map(|r| r.user_id.clone()).collect();
    let counts = store.key_counts_by_user(&ids).await.map_err(store_error)?;
    let users: Vec<Value> = rows
        .iter()
        .zip(counts)
        .map(|(r, (_, n))| {
            let mut v = user_json(r);
            if let Value::Object(m) = &mut v {
                m.insert("key_count".into(), json!(n));
            }
            v
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "users": users,
        "total": total,
        "page": page,
        "page_size": size,
        "total_pages": (total + size - 1) / size,
    })))
}

pub fn routes(cfg: &mut super::Routes<'_>) {
    cfg.post("/user/new", new)
        .get("/user/info", info)
        .post("/user/update", update)
        .post("/user/delete", delete)
        .get("/user/list", list);
}
