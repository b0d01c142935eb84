//! `/key/*`: LiteLLM's virtual-key management API.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::admin::*;
use super::roles::{caller, is_team_admin, Caller};
use super::WorkerState;
use crate::actors::auth::hash_hex;
use crate::error::GatewayError;
use crate::shared::Invalidation;
use crate::store::{now_ms, KeyFilter, KeyRow};

/// `sk-` + 22 URL-safe characters from 16 CSPRNG bytes, as LiteLLM makes them.
pub fn new_key() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "sk-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Longest key a caller may choose.
pub const MAX_KEY_CHARS: usize = 256;

/// Could `token` be a key of ours? Every stored key starts `sk-`, is 8 to
/// `MAX_KEY_CHARS` printable ASCII characters with no spaces: anything else
/// is refused before any lookup (a flood of random tokens then costs the
/// database nothing).
pub fn could_be_virtual_key(token: &str) -> bool {
    token.starts_with("sk-")
        && (8..=MAX_KEY_CHARS).contains(&token.len())
        && token.bytes().all(|b| b.is_ascii_graphic())
}

fn check_custom_key(field: &'static str, key: &str) -> Result<(), GatewayError> {
    if could_be_virtual_key(key) {
        Ok(())
    } else {
        Err(bad_request(
            format!("Invalid {field} format: virtual keys start with 'sk-' and are 8 to {MAX_KEY_CHARS} printable ASCII characters without spaces."),
            Some(field),
        ))
    }
}

fn key_name(raw: &str) -> String {
    let tail: String = raw
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("sk-...{tail}")
}

/// Fields shared by generate, update and regenerate. In updates, a field
/// not sent is left alone; one sent as `null` is cleared.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct KeyFields {
    /// The key to act on (update, regenerate) or a custom key (generate).
    #[serde(default)]
    pub key: Option<String>,
    /// Regenerate only: the new secret to use instead of a generated one.
    #[serde(default)]
    pub new_key: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    pub key_alias: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub duration: Option<Option<String>>,
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub aliases: Option<HashMap<String, String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub max_budget: Option<Option<f64>>,
    #[serde(default, deserialize_with = "double_option")]
    pub soft_budget: Option<Option<f64>>,
    #[serde(default, deserialize_with = "double_option")]
    pub budget_duration: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub rpm_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "double_option")]
    pub tpm_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "double_option")]
    pub max_parallel_requests: Option<Option<i64>>,
    #[serde(default, deserialize_with = "double_option")]
    pub model_rpm_limit: Option<Option<HashMap<String, i64>>>,
    #[serde(default, deserialize_with = "double_option")]
    pub model_tpm_limit: Option<Option<HashMap<String, i64>>>,
    /// LiteLLM's `{"model": {"budget_limit": 1.0, "time_period": "30d"}}`
    /// (`max_budget` for `budget_limit`, or a plain number, also taken).
    #[serde(default, deserialize_with = "double_option")]
    pub model_max_budget: Option<Option<Map<String, Value>>>,
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "double_option")]
    pub user_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub team_id: Option<Option<String>>,
    #[serde(default)]
    pub blocked: Option<bool>,
    #[serde(default)]
    pub spend: Option<f64>,
    /// Routes the key may call (paths, `prefix*`, or LiteLLM's
    /// `llm_api_routes`, `info_routes`, `management_routes`).
    #[serde(default)]
    pub allowed_routes: Option<Vec<String>>,
    /// LiteLLM's shorthand for `allowed_routes`: `llm_api`, `management`,
    /// `read_only` or `default`.
    #[serde(default)]
    pub key_type: Option<String>,
}

impl KeyFields {
    /// What a caller who is not a proxy admin may do with these fields on
    /// `row` (their own key, or one of a team they administer): keys for
    /// themselves only, in teams they belong to, and never their spend.
    async fn check_self_service(
        &mut self,
        st: &WorkerState,
        caller: &Caller,
        creating: bool,
    ) -> Result<(), GatewayError> {
        if caller.is_admin() {
            return Ok(());
        }
        let me = caller.user_id().unwrap_or_default().to_string();
        match &self.user_id {
            None if creating => self.user_id = Some(Some(me.clone())),
            None => {}
            Some(Some(u)) if *u == me => {}
            Some(u) => {
                return Err(forbidden(format!(
                    "User can only create keys for themselves. Got user_id={}, Your ID={me}",
                    u.as_deref().unwrap_or("None")
                )))
            }
        }
        if self.spend.is_some() {
            return Err(forbidden("Only proxy admins can set a key's spend."));
        }
        if let Some(Some(team)) = &self.team_id {
            let members = store(st)?.members(team).await.map_err(store_error)?;
            if !members.iter().any(|m| m.user_id == me) {
                return Err(bad_request(
                    format!("User={me} not assigned to team={team}"),
                    Some("team_id"),
                ));
            }
        }
        Ok(())
    }

    /// Validates and writes the sent fields onto `row`. Returns the spend
    /// to set, if one was sent (spend is written separately).
    async fn apply(
        self,
        st: &WorkerState,
        row: &mut KeyRow,
        now: i64,
    ) -> Result<Option<f64>, GatewayError> {
        let store = store(st)?;
        if let Some(Some(a)) = &self.key_alias {
            check_name("key_alias", a)?;
        }
        if let Some(Some(u)) = &self.user_id {
            check_name("user_id", u)?;
        }
        if let Some(Some(t)) = &self.team_id {
            check_name("team_id", t)?;
        }
        if let Some(m) = &self.models {
            check_names("models", m)?;
        }
        if let Some(a) = &self.aliases {
            check_names("aliases", a.keys().chain(a.values()))?;
        }
        for (field, limits) in [
            ("model_rpm_limit", &self.model_rpm_limit),
            ("model_tpm_limit", &self.model_tpm_limit),
        ] {
            if let Some(Some(m)) = limits {
                check_names(field, m.keys())?;
            }
        }
        if let Some(alias) = self.key_alias {
            if let Some(a) = &alias {
                if store
                    .alias_taken(a, Some(&row.token))
                    .await
                    .map_err(store_error)?
                {
                    return Err(bad_request(
                        format!("Key with alias '{a}' already exists. Unique key aliases across all keys are required."),
                        Some("key_alias"),
                    ));
                }
            }
            row.key_alias = alias;
        }
        if let Some(d) = self.duration {
            row.expires = match d.as_deref().map(str::trim) {
                None | Some("-1") | Some("") => None,
                Some(s) => Some(now.saturating_add(parse_duration("duration", s)?)),
            };
        }
        if let Some(m) = self.models {
            row.models = json!(m).to_string();
        }
        if let Some(a) = self.aliases {
            row.aliases = json!(a).to_string();
        }
        apply_budget!(self, row, now)?;
        if let Some(v) = &self.model_max_budget {
            row.model_max_budget = match v {
                Some(m) => {
                    check_names("model_max_budget", m.keys())?;
                    for (model, spec) in m {
                        if crate::access::model_budget(spec).is_none() {
                            return Err(bad_request(
                                format!("Invalid model_max_budget for {model}: expected {{\"budget_limit\": <USD>, \"time_period\": \"30d\"}}"),
                                Some("model_max_budget"),
                            ));
                        }
                    }
                    Some(Value::Object(m.clone()).to_string())
                }
                None => None,
            };
        }
        if let Some(v) = self.model_rpm_limit {
            row.model_rpm_limit = v.map(|m| json!(m).to_string());
        }
        if let Some(v) = self.model_tpm_limit {
            row.model_tpm_limit = v.map(|m| json!(m).to_string());
        }
        if let Some(m) = &self.metadata {
            row.metadata = metadata_text(m)?;
        }
        if let Some(u) = self.user_id {
            row.user_id = u;
        }
        if let Some(t) = self.team_id {
            if let Some(team) = &t {
                if store.get_team(team).await.map_err(store_error)?.is_none() {
                    return Err(bad_request(
                        format!("Team not found, passed team_id={team}"),
                        Some("team_id"),
                    ));
                }
            }
            row.team_id = t;
        }
        if let Some(b) = self.blocked {
            row.blocked = b;
        }
        let routes = match self.key_type.as_deref() {
            None | Some("default") => self.allowed_routes,
            Some("llm_api") => Some(vec!["llm_api_routes".into()]),
            Some("management") => Some(vec!["management_routes".into()]),
            Some("read_only") => Some(vec!["info_routes".into()]),
            Some(other) => {
                return Err(bad_request(
                    format!("Invalid key_type `{other}`: expected llm_api, management, read_only or default"),
                    Some("key_type"),
                ))
            }
        };
        if let Some(r) = routes {
            check_names("allowed_routes", &r)?;
            row.allowed_routes = json!(r).to_string();
        }
        check_non_negative("spend", self.spend)?;
        row.updated_at = now;
        Ok(self.spend)
    }
}

fn blank_row(raw_key: &str, now: i64) -> KeyRow {
    KeyRow {
        token: hash_hex(raw_key),
        key_name: key_name(raw_key),
        key_alias: None,
        user_id: None,
        team_id: None,
        models: "[]".into(),
        aliases: "{}".into(),
        spend: 0.0,
        max_budget: None,
        budget_duration: None,
        budget_reset_at: None,
        expires: None,
        rpm_limit: None,
        tpm_limit: None,
        max_parallel_requests: None,
        model_rpm_limit: None,
        model_tpm_limit: None,
        metadata: "{}".into(),
        blocked: false,
        created_at: now,
        updated_at: now,
        soft_budget: None,
        model_max_budget: None,
        allowed_routes: "[]".into(),
    }
}

/// A key row in LiteLLM's field names (never the key itself).
pub fn key_json(row: &KeyRow) -> Value {
    json!({
        "token": row.token,
        "key_name": row.key_name,
        "key_alias": row.key_alias,
        "spend": row.spend,
        "max_budget": row.max_budget,
        "expires": iso(row.expires),
        "models": json_text(&row.models, json!([])),
        "aliases": json_text(&row.aliases, json!({})),
        "user_id": row.user_id,
        "team_id": row.team_id,
        "max_parallel_requests": row.max_parallel_requests,
        "tpm_limit": row.tpm_limit,
        "rpm_limit": row.rpm_limit,
        "model_rpm_limit": json_opt(&row.model_rpm_limit),
        "model_tpm_limit": json_opt(&row.model_tpm_limit),
        "budget_duration": row.budget_duration,
        "budget_reset_at": iso(row.budget_reset_at),
        "soft_budget": row.soft_budget,
        "model_max_budget": json_opt(&row.model_max_budget),
        "metadata": crate::observe::keyed::mask_secrets(json_text(&row.metadata, json!({}))),
        "blocked": row.blocked,
        "allowed_routes": json_text(&row.allowed_routes, json!([])),
        "created_at": iso(Some(row.created_at)),
        "updated_at": iso(Some(row.updated_at)),
    })
}

/// The answer to generate/regenerate: the row plus, this once, the key.
fn issued_json(raw_key: &str, row: &KeyRow) -> Value {
    let mut v = key_json(row);
    if let Value::Object(m) = &mut v {
        m.insert("key".into(), json!(raw_key));
        m.insert("token_id".into(), json!(row.token));
        m.insert("duration".into(), Value::Null);
    }
    v
}

/// Creates a key row from a generate request; shared with `/user/new`.
pub async fn create_key(
    st: &WorkerState,
    custom_key: Option<String>,
    fields: KeyFields,
) -> Result<(String, KeyRow), GatewayError> {
    let raw = match custom_key {
        Some(k) => {
            check_custom_key("key", &k)?;
            k
        }
        None => new_key(),
    };
    let now = now_ms();
    let mut row = blank_row(&raw, now);
    let spend = fields.apply(st, &mut row, now).await?;
    row.spend = spend.unwrap_or(0.0);
    let store = store(st)?;
    store.insert_key(&row).await.map_err(|e| match e {
        crate::store::StoreError::Duplicate(_) => {
            bad_request("This key (or its alias) already exists.", Some("key"))
        }
        other => store_error(other),
    })?;
    // A key that was looked up (and remembered as unknown) just now must work.
    changed(
        st,
        Invalidation::Key(row.token.clone()),
        vec![row.token.clone()],
    )
    .await;
    Ok((raw, row))
}

pub async fn generate(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let mut body: KeyFields = json_body(&st, &req, payload).await?;
    body.check_self_service(&st, &caller, true).await?;
    let custom = body.key.take();
    let (raw, row) = create_key(&st, custom, body).await?;
    Ok(HttpResponse::Ok().json(issued_json(&raw, &row)))
}

async fn load_key(st: &WorkerState, key: &str) -> Result<KeyRow, GatewayError> {
    store(st)?
        .get_key(&token_of(key))
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found("Key not found in database", "key"))
}

/// May `caller` change `row`? Proxy admins any key; others their own keys
/// and the keys of teams they administer.
async fn may_manage(st: &WorkerState, caller: &Caller, row: &KeyRow) -> Result<bool, GatewayError> {
    if caller.is_admin() || caller.owns_key(row) {
        return Ok(true);
    }
    match &row.team_id {
        Some(team) => is_team_admin(st, team, caller.user_id()).await,
        None => Ok(false),
    }
}

/// Loads a key the caller must be allowed to manage.
async fn load_managed(
    st: &WorkerState,
    caller: &Caller,
    key: &str,
) -> Result<KeyRow, GatewayError> {
    let row = load_key(st, key).await?;
    if may_manage(st, caller, &row).await? {
        Ok(row)
    } else {
        Err(not_managed(caller, &row))
    }
}

fn not_managed(caller: &Caller, row: &KeyRow) -> GatewayError {
    forbidden(format!(
        "User={} is not allowed to manage key={}. Only the key's owner, an admin of its team, or a proxy admin may.",
        caller.user_id().unwrap_or("unknown"),
        row.key_name
    ))
}

pub async fn update(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let mut body: KeyFields = json_body(&st, &req, payload).await?;
    let key = body.key.clone().ok_or_else(|| {
        management_error(422, "validation_error", "`key` is required", Some("key"))
    })?;
    load_managed(&st, &caller, &key).await?;
    body.check_self_service(&st, &caller, false).await?;
    let store = store(&st)?;
    let row = edit_row(async || {
        let mut row = load_managed(&st, &caller, &key).await?;
        let read_at = row.updated_at;
        let spend = body.clone().apply(&st, &mut row, now_ms()).await?;
        if !store
            .update_key(&row.token, &row, spend, read_at)
            .await
            .map_err(write_error)?
        {
            return Err(not_found("Key not found in database", "key").into());
        }
        if let Some(s) = spend {
            row.spend = s;
        }
        Ok(row)
    })
    .await?;
    changed(
        &st,
        Invalidation::Key(row.token.clone()),
        vec![row.token.clone()],
    )
    .await;
    let mut v = key_json(&row);
    if let Value::Object(m) = &mut v {
        m.insert("key".into(), json!(key));
    }
    Ok(HttpResponse::Ok().json(v))
}

#[derive(Deserialize)]
struct DeleteRequest {
    #[serde(default)]
    keys: Option<Vec<String>>,
    #[serde(default)]
    key_aliases: Option<Vec<String>>,
}

pub async fn delete(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let body: DeleteRequest = json_body(&st, &req, payload).await?;
    let store = store(&st)?;
    if let Some(aliases) = &body.key_aliases {
        check_names("key_aliases", aliases)?;
    }
    let (echo, tokens) = match (body.keys, body.key_aliases) {
        (Some(keys), _) if !keys.is_empty() => {
            let tokens: Vec<String> = keys.iter().map(|k| token_of(k)).collect();
            (keys, tokens)
        }
        (_, Some(aliases)) if !aliases.is_empty() => {
            let tokens = store.tokens_by_alias(&aliases).await.map_err(store_error)?;
            (aliases, tokens)
        }
        _ => {
            return Err(management_error(
                422,
                "validation_error",
                "At least one of 'keys' or 'key_aliases' must be provided.",
                Some("keys"),
            ))
        }
    };
    if !caller.is_admin() {
        for t in &tokens {
            if let Some(row) = store.get_key(t).await.map_err(store_error)? {
                if !may_manage(&st, &caller, &row).await? {
                    return Err(not_managed(&caller, &row));
                }
            }
        }
    }
    let deleted = store.delete_keys(&tokens).await.map_err(store_error)?;
    if deleted == 0 {
        return Err(not_found("No keys found", "keys"));
    }
    for t in &tokens {
        changed(&st, Invalidation::Key(t.clone()), vec![t.clone()]).await;
    }
    Ok(HttpResponse::Ok().json(json!({ "deleted_keys": echo })))
}

#[derive(Deserialize)]
pub struct KeyQuery {
    key: Option<String>,
}

/// Proxy admins and viewers read any key; others their own keys and those
/// of teams they administer. Existence is checked first, as LiteLLM does.
pub async fn info(
    req: HttpRequest,
    query: web::Query<KeyQuery>,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let asked = query.into_inner().key;
    let token = match &asked {
        Some(k) => token_of(k),
        None => caller.key.id.clone(),
    };
    let row = store(&st)?
        .get_key(&token)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found("Key not found in database", "key"))?;
    if !caller.reads_all() && !may_manage(&st, &caller, &row).await? {
        return Err(forbidden("You are not allowed to access this key's info."));
    }
    let mut info = key_json(&row);
    if let Value::Object(m) = &mut info {
        m.remove("token");
    }
    Ok(HttpResponse::Ok().json(json!({
        "key": asked.unwrap_or(row.token),
        "info": info,
    })))
}

/// The caller's own key's health: usable or not, and why (LiteLLM's
/// `/key/health`, which reports on the key that calls it).
pub async fn health(
    req: HttpRequest,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let key = super::authenticate(&st, &req).await?;
    let problem = match key.check_active(now_ms()) {
        Err(e) => Some(e.to_string()),
        Ok(()) => match key.max_budget {
            Some(max) if !key.is_master && key.spend >= max => Some(format!(
                "Budget has been exceeded! Current cost: {}, Max budget: {max}",
                key.spend
            )),
            _ => None,
        },
    };
    // Key-based logging goes to Langfuse; the host says which project.
    let callbacks: Vec<Value> = key
        .logging
        .iter()
        .map(|l| json!({"callback": "langfuse", "host": l.host, "status": "configured"}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "key": if problem.is_none() { "healthy" } else { "unhealthy" },
        "details": problem,
        "logging_callbacks": if callbacks.is_empty() { Value::Null } else { json!(callbacks) },
    })))
}

#[derive(Deserialize)]
pub struct ListQuery {
    page: Option<i64>,
    size: Option<i64>,
    user_id: Option<String>,
    team_id: Option<String>,
    key_alias: Option<String>,
    #[serde(default)]
    return_full_object: bool,
}

pub async fn list(
    req: HttpRequest,
    query: web::Query<ListQuery>,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let mut q = query.into_inner();
    if !caller.reads_all() {
        // Internal users list their own keys (LiteLLM scopes the list to
        // the caller); asking for someone else's is refused.
        let me = caller.user_id().map(str::to_string);
        if q.user_id.is_some() && q.user_id != me {
            return Err(forbidden("Only proxy admins may list other users' keys."));
        }
        match me {
            Some(me) => q.user_id = Some(me),
            None => {
                let own = load_key(&st, &caller.key.id).await?;
                let keys = if q.return_full_object {
                    vec![key_json(&own)]
                } else {
                    vec![json!(own.token)]
                };
                return Ok(HttpResponse::Ok().json(json!({
                    "keys": keys, "total_count": 1, "current_page": 1, "total_pages": 1,
                })));
            }
        }
    }
    let (page, size) = page_bounds(q.page, q.size, 10)?;
    check_opt_name("user_id", &q.user_id)?;
    check_opt_name("team_id", &q.team_id)?;
    check_opt_name("key_alias", &q.key_alias)?;
    let filter = KeyFilter {
        user_id: q.user_id,
        team_id: q.team_id,
        key_alias: q.key_alias,
    };
    let (rows, total) = store(&st)?
        .list_keys(&filter, page, size)
        .await
        .map_err(store_error)?;
    let keys: Vec<Value> = if q.return_full_object {
        rows.iter().map(key_json).collect()
    } else {
        rows.iter().map(|r| json!(r.token)).collect()
    };
    Ok(HttpResponse::Ok().json(json!({
        "keys": keys,
        "total_count": total,
        "current_page": page,
        "total_pages": (total + size - 1) / size,
    })))
}

#[derive(Deserialize)]
struct KeyOnly {
    key: String,
}

async fn set_blocked(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
    blocked: bool,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let body: KeyOnly = json_body(&st, &req, payload).await?;
    let store = store(&st)?;
    let row = edit_row(async || {
        let mut row = load_managed(&st, &caller, &body.key).await?;
        let read_at = row.updated_at;
        row.blocked = blocked;
        row.updated_at = now_ms();
        store
            .update_key(&row.token, &row, None, read_at)
            .await
            .map_err(write_error)?;
        Ok(row)
    })
    .await?;
    changed(
        &st,
        Invalidation::Key(row.token.clone()),
        vec![row.token.clone()],
    )
    .await;
    Ok(HttpResponse::Ok().json(key_json(&row)))
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

/// Issues a new secret for an existing key: same row (spend, limits,
/// owner), new hash; the old secret stops working at once.
pub async fn regenerate(
    req: HttpRequest,
    path: Option<web::Path<String>>,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = caller(&st, &req).await?;
    let mut body: KeyFields = json_body(&st, &req, payload).await?;
    let old = path
        .map(|p| p.into_inner())
        .or(body.key.take())
        .ok_or_else(|| bad_request("No key passed in.", Some("key")))?;
    load_managed(&st, &caller, &old).await?;
    body.check_self_service(&st, &caller, false).await?;
    let raw = match body.new_key.take() {
        Some(k) => {
            check_custom_key("new_key", &k)?;
            k
        }
        None => new_key(),
    };
    let store = store(&st)?;
    let (old_token, row) = edit_row(async || {
        let mut row = load_managed(&st, &caller, &old).await?;
        let (old_token, read_at) = (row.token.clone(), row.updated_at);
        let spend = body.clone().apply(&st, &mut row, now_ms()).await?;
        row.token = hash_hex(&raw);
        row.key_name = key_name(&raw);
        // Fields, new secret and spend land together or not at all.
        if !store
            .update_key(&old_token, &row, spend, read_at)
            .await
            .map_err(write_error)?
        {
            return Err(not_found(format!("Key {old} not found."), "key").into());
        }
        if let Some(s) = spend {
            row.spend = s;
        }
        Ok((old_token, row))
    })
    .await?;
    changed(&st, Invalidation::Key(old_token.clone()), vec![old_token]).await;
    Ok(HttpResponse::Ok().json(issued_json(&raw, &row)))
}

pub async fn regenerate_body(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    regenerate(req, None, payload, st).await
}

pub async fn regenerate_path(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    regenerate(req, Some(path), payload, st).await
}

pub fn routes(cfg: &mut super::Routes<'_>) {
    cfg.post("/key/generate", generate)
        .post("/key/update", update)
        .post("/key/delete", delete)
        .get("/key/info", info)
        .get("/key/list", list)
        .post("/key/health", health)
        .get("/key/health", health)
        .post("/key/block", block)
        .post("/key/unblock", unblock)
        .post("/key/regenerate", regenerate_body)
        .post("/key/{key}/regenerate", regenerate_path);
}
