//! LiteLLM's team-based logging API: a team sends its requests' logs to
//! its own Langfuse project (`POST /team/{id}/callback`), reads what is
//! set (`GET`, credentials masked), removes one callback
//! (`DELETE /team/{id}/callback/{name}`) or turns its logging off
//! (`POST /team/{id}/disable_logging`). The settings live in the team's
//! `metadata.logging`, as LiteLLM stores them, and take effect on every
//! replica through the team's cache invalidation. Proxy admins, the
//! team's admins and its organization's admins may call these.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::admin::*;
use super::roles::caller;
use super::teams::{load_managed, team_changed, team_json};
use super::WorkerState;
use crate::error::GatewayError;
use crate::observe::keyed::{self, Events, LOGGING_DISABLED};
use crate::store::now_ms;
use crate::store::TeamRow;

#[derive(Deserialize)]
struct AddCallback {
    callback_name: String,
    #[serde(default = "success")]
    callback_type: String,
    callback_vars: Map<String, Value>,
}

fn success() -> String {
    "success".into()
}

fn metadata(row: &TeamRow) -> Map<String, Value> {
    serde_json::from_str(&row.metadata).unwrap_or_default()
}

fn entries(meta: &Map<String, Value>) -> Vec<Value> {
    match meta.get("logging") {
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    }
}

/// What a team's metadata says is in effect, in LiteLLM's answer shape.
fn in_effect(team_id: &str, meta: &Map<String, Value>) -> Value {
    let mut success = Vec::new();
    let mut failure = Vec::new();
    let mut vars = Map::new();
    for e in entries(meta) {
        let Some(name) = e.get("callback_name").and_then(Value::as_str) else {
            continue;
        };
        let on = Events::of_entry(&e);
        if on.takes(true) && !success.contains(&name.to_string()) {
            success.push(name.to_string());
        }
        if on.takes(false) && !failure.contains(&name.to_string()) {
            failure.push(name.to_string());
        }
        if let Some(Value::Object(v)) = e.get("callback_vars") {
            vars.extend(v.clone());
        }
    }
    keyed::mask_vars(&mut vars);
    json!({
        "team_id": team_id,
        "success_callbacks": success,
        "failure_callbacks": failure,
        "callback_vars": vars,
        "logging_disabled": meta.get(LOGGING_DISABLED) == Some(&Value::Bool(true)),
    })
}

/// Changes the metadata of the team named in the path, if the caller may
/// manage it: read, `edit`, written back (again from a fresh read if
/// another write came in between).
async fn edit_metadata(
    st: &WorkerState,
    req: &HttpRequest,
    team_id: &str,
    mut edit: impl FnMut(&mut Map<String, Value>) -> Result<(), GatewayError>,
) -> Result<TeamRow, GatewayError> {
    let caller = caller(st, req).await?;
    let store = store(st)?;
    let row = edit_row(async || {
        let mut row = load_managed(st, &caller, team_id, req.path()).await?;
        let read_at = row.updated_at;
        let mut meta = metadata(&row);
        edit(&mut meta)?;
        row.metadata = Value::Object(meta).to_string();
        row.updated_at = now_ms();
        store
            .update_team(&row, None, read_at)
            .await
            .map_err(write_error)?;
        Ok(row)
    })
    .await?;
    team_changed(st, store, &row.team_id).await?;
    Ok(row)
}

pub async fn add(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let team_id = path.into_inner();
    // Who is asking comes before what they sent.
    let caller = caller(&st, &req).await?;
    load_managed(&st, &caller, &team_id, req.path()).await?;
    let body: AddCallback = json_body(&st, &req, payload).await?;
    if !keyed::is_langfuse(&body.callback_name) {
        return Err(bad_request(
            format!(
                "callback_name = {} is not supported for team logging; supported: langfuse, langfuse_otel",
                body.callback_name
            ),
            Some("callback_name"),
        ));
    }
    if Events::parse(&body.callback_type).is_none() {
        return Err(bad_request(
            "callback_type must be one of success, failure, success_and_failure",
            Some("callback_type"),
        ));
    }
    let has = |k: &str| {
        body.callback_vars
            .get(k)
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
    };
    if !has("langfuse_public_key") || !(has("langfuse_secret_key") || has("langfuse_secret")) {
        return Err(bad_request(
            "callback_vars needs langfuse_public_key and langfuse_secret_key",
            Some("callback_vars"),
        ));
    }
    if let Some(host) = body.callback_vars.get("langfuse_host") {
        let ok = host
            .as_str()
            .and_then(|h| url::Url::parse(h).ok())
            .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !ok {
            return Err(bad_request(
                "langfuse_host must be an http(s) URL",
                Some("callback_vars"),
            ));
        }
    }
    let row = edit_metadata(&st, &req, &team_id, |meta| {
        let mut list = entries(meta);
        let exists = list.iter().any(|e| {
            e.get("callback_name").and_then(Value::as_str) == Some(body.callback_name.as_str())
                && e.get("callback_type").and_then(Value::as_str)
                    == Some(body.callback_type.as_str())
        });
        if exists {
            return Err(bad_request(
                format!(
                    "callback_name = {} already exists in team_callback_settings, for team_id = {team_id} and event = {}",
                    body.callback_name, body.callback_type
                ),
                Some("callback_name"),
            ));
        }
        list.push(json!({
            "callback_name": body.callback_name,
            "callback_type": body.callback_type,
            "callback_vars": body.callback_vars,
        }));
        meta.insert("logging".into(), Value::Array(list));
        // Adding a callback turns the team's logging back on.
        meta.remove(LOGGING_DISABLED);
        Ok(())
    })
    .await?;
    let members = store(&st)?
        .members(&row.team_id)
        .await
        .map_err(store_error)?;
    Ok(HttpResponse::Ok().json(json!({"status": "success", "data": team_json(&row, &members)})))
}

pub async fn get(
    req: HttpRequest,
    path: web::Path<String>,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let team_id = path.into_inner();
    let caller = caller(&st, &req).await?;
    let row = load_managed(&st, &caller, &team_id, req.path()).await?;
    Ok(HttpResponse::Ok().json(json!({
        "status": "success",
        "data": in_effect(&row.team_id, &metadata(&row)),
    })))
}

pub async fn delete(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let (team_id, name) = path.into_inner();
    let row = edit_metadata(&st, &req, &team_id, |meta| {
        let list = entries(meta);
        let before = list.len();
        let kept: Vec<Value> = list
            .into_iter()
            .filter(|e| e.get("callback_name").and_then(Value::as_str) != Some(name.as_str()))
            .collect();
        if kept.len() == before {
            return Err(not_found(
                format!("callback_name = {name} is not registered for team_id = {team_id}."),
                "callback_name",
            ));
        }
        meta.insert("logging".into(), Value::Array(kept));
        Ok(())
    })
    .await?;
    let effect = in_effect(&row.team_id, &metadata(&row));
    Ok(HttpResponse::Ok().json(json!({
        "status": "success",
        "message": format!("Callback {name} removed for team {team_id}"),
        "data": {
            "team_id": row.team_id,
            "success_callbacks": effect["success_callbacks"],
            "failure_callbacks": effect["failure_callbacks"],
        },
    })))
}

pub async fn disable_logging(
    req: HttpRequest,
    path: web::Path<String>,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let team_id = path.into_inner();
    let row = edit_metadata(&st, &req, &team_id, |meta| {
        meta.insert("logging".into(), json!([]));
        if let Some(Value::Object(cs)) = meta.get_mut("callback_settings") {
            cs.insert("success_callback".into(), json!([]));
            cs.insert("failure_callback".into(), json!([]));
        }
        meta.insert(LOGGING_DISABLED.into(), Value::Bool(true));
        Ok(())
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "status": "success",
        "message": format!("Logging disabled for team {}", row.team_id),
        "data": {
            "team_id": row.team_id,
            "success_callbacks": [],
            "failure_callbacks": [],
        },
    })))
}

pub fn routes(cfg: &mut super::Routes<'_>) {
    cfg.post("/team/{team_id}/callback", add)
        .get("/team/{team_id}/callback", get)
        .delete("/team/{team_id}/callback/{callback_name}", delete)
        .post("/team/{team_id}/disable_logging", disable_logging);
}
