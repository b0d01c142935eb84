//! `/model/new`, `/model/update` (also `PATCH /model/{id}/update`),
//! `/model/delete`: deployments managed at run time, LiteLLM's shapes.
//! Master key only. Stored in the database with provider secrets sealed;
//! serving on this replica when the call returns, on every other within
//! about a second (Redis), or at their next periodic check without Redis.
//! Models from the config file are not changed here: they belong to it.

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::admin::*;
use super::WorkerState;
use crate::actors::models::Reload;
use crate::error::GatewayError;
use crate::model_list::{self, Sealer};
use crate::shared::Invalidation;
use crate::store::models::ProxyModelRow;
use crate::store::now_ms;

#[derive(Debug, Deserialize)]
struct NewModel {
    model_name: String,
    litellm_params: Map<String, Value>,
    #[serde(default)]
    model_info: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct UpdateModel {
    model_name: Option<String>,
    #[serde(default)]
    litellm_params: Map<String, Value>,
    #[serde(default)]
    model_info: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct DeleteModel {
    id: String,
}

fn sealer(st: &WorkerState) -> Result<Sealer, GatewayError> {
    crate::actors::models::sealer(&st.gw.config).ok_or_else(|| {
        bad_request(
            "models cannot be stored without a master key or storage.salt_key to encrypt their secrets",
            None,
        )
    })
}

/// A model as LiteLLM answers it: secrets never included.
fn model_json(row: &ProxyModelRow, ignored: &[String]) -> Value {
    let params: Map<String, Value> = serde_json::from_str(&row.litellm_params).unwrap_or_default();
    let mut info: Map<String, Value> = serde_json::from_str(&row.model_info).unwrap_or_default();
    info.insert("id".into(), json!(row.model_id));
    info.insert("db_model".into(), json!(true));
    let mut out = json!({
        "model_id": row.model_id,
        "model_name": row.model_name,
        "litellm_params": model_list::redacted(&params),
        "model_info": info,
    });
    if !ignored.is_empty() {
        out["ignored_params"] = json!(ignored);
    }
    out
}

/// Checks a model as it would be served: same rules as the config's.
fn validate(row: &ProxyModelRow, sealer: &Sealer) -> Result<Vec<String>, GatewayError> {
    check_name("model_name", &row.model_name)?;
    model_list::read_stored(
        &row.model_id,
        &row.model_name,
        &row.litellm_params,
        &row.model_info,
        row.revision,
        sealer,
    )
    .map(|r| r.ignored)
    .map_err(|e| bad_request(e.to_string(), Some("litellm_params")))
}

/// The config file's deployments are its own.
fn refuse_config_model(st: &WorkerState, id: &str) -> Result<(), GatewayError> {
    let in_config = st
        .gw
        .config
        .models
        .values()
        .flat_map(|g| g.deployments.iter())
        .any(|d| d.id.as_deref() == Some(id));
    if in_config {
        return Err(bad_request(
            format!("model {id} is defined in the config file; change it there"),
            Some("id"),
        ));
    }
    Ok(())
}

/// Serves the change here, then tells the other replicas.
async fn publish(st: &WorkerState) -> Result<(), GatewayError> {
    st.gw
        .models
        .send(Reload)
        .await
        .map_err(|_| GatewayError::Unavailable("the models service is restarting".into()))?
        .map_err(|e| GatewayError::Unavailable(format!("database: {e}")))?;
    changed(st, Invalidation::Models, Vec::new()).await;
    Ok(())
}

pub async fn new_model(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> HttpResponse {
    let run = async {
        require_admin(&st, &req).await?;
        let body: NewModel = json_body(&st, &req, payload).await?;
        let store = store(&st)?;
        let sealer = sealer(&st)?;
        let NewModel {
            model_name,
            mut litellm_params,
            mut model_info,
        } = body;
        let id = match model_info.get("id").and_then(Value::as_str) {
            Some(id) => {
                check_name("model_info.id", id)?;
                id.to_string()
            }
            None => uuid::Uuid::new_v4().to_string(),
        };
        refuse_config_model(&st, &id)?;
        model_info.remove("id");
        model_list::seal_secrets(&mut litellm_params, &sealer);
        let now = now_ms();
        let row = ProxyModelRow {
            model_id: id,
            model_name,
            litellm_params: Value::Object(litellm_params).to_string(),
            model_info: Value::Object(model_info).to_string(),
            revision: 1,
            created_at: now,
            updated_at: now,
        };
        let ignored = validate(&row, &sealer)?;
        store.insert_proxy_model(&row).await.map_err(store_error)?;
        publish(&st).await?;
        tracing::info!(model_id = %row.model_id, model = %row.model_name, "model added");
        Ok::<_, GatewayError>(HttpResponse::Ok().json(model_json(&row, &ignored)))
    };
    run.await.unwrap_or_else(|e| e.error_response())
}

pub async fn update_model(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> HttpResponse {
    update(req, payload, st, None).await
}

/// `PATCH /model/{model_id}/update`, LiteLLM's newer form.
pub async fn patch_model(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> HttpResponse {
    update(req, payload, st, Some(path.into_inner())).await
}

/// Merges the given fields into the stored model (a `null` removes one).
async fn update(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
    id: Option<String>,
) -> HttpResponse {
    let run = async {
        require_admin(&st, &req).await?;
        let body: UpdateModel = json_body(&st, &req, payload).await?;
        let id = match id.or_else(|| {
            body.model_info
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
        }) {
            Some(id) => id,
            None => return Err(bad_request("model_info.id is required", Some("id"))),
        };
        refuse_config_model(&st, &id)?;
        let store = store(&st)?;
        let sealer = sealer(&st)?;
        let Some(mut row) = store.get_proxy_model(&id).await.map_err(store_error)? else {
            return Err(not_found(
                format!("Model with id={id} not found in db"),
                "id",
            ));
        };
        let merge = |stored: &str, given: Map<String, Value>| {
            let mut now: Map<String, Value> = serde_json::from_str(stored).unwrap_or_default();
            for (k, v) in given {
                if v.is_null() {
                    now.remove(&k);
                } else {
                    now.insert(k, v);
                }
            }
            now
        };
        let mut params = merge(&row.litellm_params, body.litellm_params);
        model_list::seal_secrets(&mut params, &sealer);
        let mut info = merge(&row.model_info, body.model_info);
        info.remove("id");
        if let Some(name) = body.model_name {
            row.model_name = name;
        }
        row.litellm_params = Value::Object(params).to_string();
        row.model_info = Value::Object(info).to_string();
        row.revision += 1;
        row.updated_at = now_ms();
        let ignored = validate(&row, &sealer)?;
        if !store.update_proxy_model(&row).await.map_err(store_error)? {
            return Err(not_found(
                format!("Model with id={id} not found in db"),
                "id",
            ));
        }
        publish(&st).await?;
        tracing::info!(model_id = %row.model_id, model = %row.model_name, revision = row.revision, "model updated");
        Ok(HttpResponse::Ok().json(model_json(&row, &ignored)))
    };
    run.await.unwrap_or_else(|e| e.error_response())
}

pub async fn delete_model(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> HttpResponse {
    let run = async {
        require_admin(&st, &req).await?;
        let body: DeleteModel = json_body(&st, &req, payload).await?;
        refuse_config_model(&st, &body.id)?;
        let store = store(&st)?;
        if !store
            .delete_proxy_model(&body.id)
            .await
            .map_err(store_error)?
        {
            return Err(not_found(
                format!("Model with id={} not found in db", body.id),
                "id",
            ));
        }
        publish(&st).await?;
        tracing::info!(model_id = %body.id, "model deleted");
        Ok(HttpResponse::Ok().json(json!({
            "message": format!("Model: {} deleted successfully", body.id)
        })))
    };
    run.await.unwrap_or_else(|e| e.error_response())
}
