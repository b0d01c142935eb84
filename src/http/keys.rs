//! `/key/*`: LiteLLM's virtual-key management API.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::admin::*;
use super::{authenticate, WorkerState};
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
#[derive(Debug, Default, Deserialize)]
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
}

impl KeyFields {
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
        "metadata": json_text(&row.metadata, json!({})),
        "blocked": row.blocked,
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
    require_master(&st, &req).await?;
    let mut body: KeyFields = json_body(&st, &req, payload).await?;
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

pub async fn update(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    require_master(&st, &req).await?;
    let body: KeyFields = json_body(&st, &req, payload).await?;
    let key = body.key.clone().ok_or_else(|| {
        management_error(422, "validation_error", "`key` is required", Some("key"))
    })?;
    let mut row = load_key(&st, &key).await?;
    let spend = body.apply(&st, &mut row, now_ms()).await?;
    let store = store(&st)?;
    if !store
        .update_key(&row.token, &row, spend)
        .await
        .map_err(store_error)?
    {
        return Err(not_found("Key not found in database", "key"));
    }
    if let Some(s) = spend {
        row.spend = s;
    }
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
    require_master(&st, &req).await?;
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

/// The master key reads any key; any other key reads only itself.
pub async fn info(
    req: HttpRequest,
    query: web::Query<KeyQuery>,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = authenticate(&st, &req).await?;
    let asked = query.into_inner().key;
    let token = match &asked {
        Some(k) => token_of(k),
        None => caller.id.clone(),
    };
    if !caller.is_master && token != caller.id {
        return Err(forbidden("You are not allowed to access this key's info."));
    }
    let row = store(&st)?
        .get_key(&token)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found("Key not found in database", "key"))?;
    let mut info = key_json(&row);
    if let Value::Object(m) = &mut info {
        m.remove("token");
    }
    Ok(HttpResponse::Ok().json(json!({
        "key": asked.unwrap_or(row.token),
        "info": info,
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
    require_master(&st, &req).await?;
    let q = query.into_inner();
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
    require_master(&st, &req).await?;
    let body: KeyOnly = json_body(&st, &req, payload).await?;
    let mut row = load_key(&st, &body.key).await?;
    row.blocked = blocked;
    row.updated_at = now_ms();
    store(&st)?
        .update_key(&row.token, &row, None)
        .await
        .map_err(store_error)?;
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
    require_master(&st, &req).await?;
    let mut body: KeyFields = json_body(&st, &req, payload).await?;
    let old = path
        .map(|p| p.into_inner())
        .or(body.key.take())
        .ok_or_else(|| bad_request("No key passed in.", Some("key")))?;
    let mut row = load_key(&st, &old).await?;
    let old_token = row.token.clone();
    let raw = match body.new_key.take() {
        Some(k) => {
            check_custom_key("new_key", &k)?;
            k
        }
        None => new_key(),
    };
    let now = now_ms();
    let spend = body.apply(&st, &mut row, now).await?;
    row.token = hash_hex(&raw);
    row.key_name = key_name(&raw);
    // Fields, new secret and spend land together or not at all.
    if !store(&st)?
        .update_key(&old_token, &row, spend)
        .await
        .map_err(store_error)?
    {
        return Err(not_found(format!("Key {old} not found."), "key"));
    }
    if let Some(s) = spend {
        row.spend = s;
    }
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

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/key/generate", web::post().to(generate))
        .route("/key/update", web::post().to(update))
        .route("/key/delete", web::post().to(delete))
        .route("/key/info", web::get().to(info))
        .route("/key/list", web::get().to(list))
        .route("/key/block", web::post().to(block))
        .route("/key/unblock", web::post().to(unblock))
        .route("/key/regenerate", web::post().to(regenerate_body))
        .route("/key/{key}/regenerate", web::post().to(regenerate_path));
}
