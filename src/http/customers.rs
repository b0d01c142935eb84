//! `/customer/*` (also `/end_user/*`): LiteLLM's end users — the `user` a
//! request names — with their spend, budget, block flag and allowed models.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::admin::*;
use super::WorkerState;
use crate::error::GatewayError;
use crate::shared::Invalidation;
use crate::store::{now_ms, CustomerRow};

/// A customer in LiteLLM's shape; budget fields also under
/// `litellm_budget_table`, where LiteLLM keeps them.
pub fn customer_json(c: &CustomerRow) -> Value {
    let budget = (c.max_budget.is_some() || c.soft_budget.is_some() || c.budget_duration.is_some())
        .then(|| {
            json!({
                "max_budget": c.max_budget,
                "soft_budget": c.soft_budget,
                "budget_duration": c.budget_duration,
                "budget_reset_at": iso(c.budget_reset_at),
            })
        });
    json!({
        "user_id": c.user_id,
        "alias": c.alias,
        "spend": c.spend,
        "blocked": c.blocked,
        "max_budget": c.max_budget,
        "soft_budget": c.soft_budget,
        "budget_duration": c.budget_duration,
        "budget_reset_at": iso(c.budget_reset_at),
        "allowed_models": json_text(&c.allowed_models, json!([])),
        "allowed_model_region": Value::Null,
        "default_model": Value::Null,
        "budget_id": c.budget_id,
        "metadata": json_text(&c.metadata, json!({})),
        "litellm_budget_table": budget,
    })
}

#[derive(Debug, Default, Deserialize)]
struct CustomerFields {
    user_id: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    alias: Option<Option<String>>,
    blocked: Option<bool>,
    #[serde(default, deserialize_with = "double_option")]
    max_budget: Option<Option<f64>>,
    #[serde(default, deserialize_with = "double_option")]
    soft_budget: Option<Option<f64>>,
    #[serde(default, deserialize_with = "double_option")]
    budget_duration: Option<Option<String>>,
    allowed_models: Option<Vec<String>>,
    metadata: Option<Map<String, Value>>,
    // LiteLLM fields accepted and not acted on.
    #[allow(dead_code)]
    allowed_model_region: Option<Value>,
    #[allow(dead_code)]
    default_model: Option<Value>,
    /// A budget object (`/budget/new`) whose limits apply where the
    /// customer sets none.
    #[serde(default, deserialize_with = "double_option")]
    budget_id: Option<Option<String>>,
}

impl CustomerFields {
    fn apply(&self, row: &mut CustomerRow, now: i64) -> Result<(), GatewayError> {
        if let Some(a) = &self.alias {
            check_opt_name("alias", a)?;
            row.alias = a.clone();
        }
        if let Some(b) = self.blocked {
            row.blocked = b;
        }
        for (field, v, to) in [
            ("max_budget", self.max_budget, &mut row.max_budget),
            ("soft_budget", self.soft_budget, &mut row.soft_budget),
        ] {
            if let Some(v) = v {
                check_non_negative(field, v)?;
                *to = v;
            }
        }
        if let Some(d) = &self.budget_duration {
            row.budget_reset_at = match d {
                Some(s) => {
                    parse_duration("budget_duration", s)?;
                    crate::access::next_reset(s, now)
                }
                None => None,
            };
            row.budget_duration = d.clone();
        }
        if let Some(b) = &self.budget_id {
            check_opt_name("budget_id", b)?;
            row.budget_id = b.clone();
        }
        if let Some(m) = &self.allowed_models {
            check_names("allowed_models", m)?;
            row.allowed_models = json!(m).to_string();
        }
        if let Some(m) = &self.metadata {
            row.metadata = metadata_text(m)?;
        }
        row.updated_at = now;
        Ok(())
    }
}

fn required_id(id: &Option<String>) -> Result<String, GatewayError> {
    let id = id.clone().ok_or_else(|| {
        management_error(
            422,
            "validation_error",
            "`user_id` is required",
            Some("user_id"),
        )
    })?;
    check_name("user_id", &id)?;
    Ok(id)
}

/// A linked budget must exist; its period drives the customer's resets
/// unless the customer has its own.
async fn link_budget(
    st: &WorkerState,
    row: &mut CustomerRow,
    now: i64,
) -> Result<(), GatewayError> {
    let Some(id) = &row.budget_id else {
        return Ok(());
    };
    let budget = store(st)?
        .get_budget(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            bad_request(
                format!("Budget not found, passed budget_id={id}"),
                Some("budget_id"),
            )
        })?;
    if row.budget_duration.is_none() {
        row.budget_duration = budget.budget_duration.clone();
        row.budget_reset_at = budget
            .budget_duration
            .as_deref()
            .and_then(|d| crate::access::next_reset(d, now));
    }
    Ok(())
}

async fn customer_changed(st: &WorkerState, id: &str) {
    changed(st, Invalidation::Customer(id.to_string()), vec![]).await;
}

pub async fn new(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    require_admin(&st, &req).await?;
    let body: CustomerFields = json_body(&st, &req, payload).await?;
    let id = required_id(&body.user_id)?;
    let now = now_ms();
    let mut row = CustomerRow::blank(id.clone(), now);
    body.apply(&mut row, now)?;
    link_budget(&st, &mut row, now).await?;
    let exists = || {
        bad_request(
            format!("Customer already exists, passed user_id={id}. Please pass a new user_id."),
            Some("user_id"),
        )
    };
    let store = store(&st)?;
    if store
        .get_customer(&id)
        .await
        .map_err(store_error)?
        .is_some()
    {
        return Err(exists());
    }
    store.insert_customer(&row).await.map_err(|e| match e {
        crate::store::StoreError::Duplicate(_) => exists(),
        other => store_error(other),
    })?;
    customer_changed(&st, &id).await;
    Ok(HttpResponse::Ok().json(customer_json(&row)))
}

#[derive(Deserialize)]
pub struct InfoQuery {
    end_user_id: Option<String>,
}

pub async fn info(
    req: HttpRequest,
    query: web::Query<InfoQuery>,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    require_reader(&st, &req).await?;
    let id = query.into_inner().end_user_id.ok_or_else(|| {
        management_error(
            422,
            "validation_error",
            "`end_user_id` is required",
            Some("end_user_id"),
        )
    })?;
    check_name("end_user_id", &id)?;
    let row = store(&st)?
        .get_customer(&id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            not_found(
                format!("End User Id={id} does not exist in db"),
                "end_user_id",
            )
        })?;
    Ok(HttpResponse::Ok().json(customer_json(&row)))
}

pub async fn update(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    require_admin(&st, &req).await?;
    let body: CustomerFields = json_body(&st, &req, payload).await?;
    let id = required_id(&body.user_id)?;
    let store = store(&st)?;
    let row = edit_row(async || {
        let mut row = store
            .get_customer(&id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                not_found(format!("End User Id={id} does not exist in db"), "user_id")
            })?;
        let (now, read_at) = (now_ms(), row.updated_at);
        body.apply(&mut row, now)?;
        link_budget(&st, &mut row, now).await?;
        store
            .update_customer(&row, read_at)
            .await
            .map_err(write_error)?;
        Ok(row)
    })
    .await?;
    customer_changed(&st, &id).await;
    Ok(HttpResponse::Ok().json(customer_json(&row)))
}

#[derive(Deserialize)]
struct Ids {
    user_ids: Vec<String>,
}

pub async fn delete(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    require_admin(&st, &req).await?;
    let body: Ids = json_body(&st, &req, payload).await?;
    check_names("user_ids", &body.user_ids)?;
    let store = store(&st)?;
    let mut missing = Vec::new();
    for id in &body.user_ids {
        if store.get_customer(id).await.map_err(store_error)?.is_none() {
            missing.push(id.as_str());
        }
    }
    if !missing.is_empty() {
        return Err(not_found(
            format!("End User Id(s)={} do not exist in db", missing.join(", ")),
            "user_ids",
        ));
    }
    let n = store
        .delete_customers(&body.user_ids)
        .await
        .map_err(store_error)?;
    for id in &body.user_ids {
        customer_changed(&st, id).await;
    }
    Ok(HttpResponse::Ok().json(json!({
        "deleted_customers": n,
        "message": format!("Successfully deleted customers with ids: {:?}", body.user_ids),
    })))
}

pub async fn list(
    req: HttpRequest,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    require_admin(&st, &req).await?;
    let rows = store(&st)?.list_customers().await.map_err(store_error)?;
    Ok(HttpResponse::Ok().json(rows.iter().map(customer_json).collect::<Vec<_>>()))
}

/// Sets the block flag, creating customers not seen yet (as LiteLLM does).
async fn set_blocked(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
    blocked: bool,
) -> Result<HttpResponse, GatewayError> {
    require_admin(&st, &req).await?;
    let body: Ids = json_body(&st, &req, payload).await?;
    check_names("user_ids", &body.user_ids)?;
    let store = store(&st)?;
    let now = now_ms();
    let mut rows = Vec::new();
    for id in &body.user_ids {
        let row = edit_row(async || {
            let mut row = match store.get_customer(id).await.map_err(store_error)? {
                Some(r) => r,
                None => {
                    let r = CustomerRow::blank(id.clone(), now);
                    store.insert_customer(&r).await.map_err(store_error)?;
                    r
                }
            };
            let read_at = row.updated_at;
            row.blocked = blocked;
            row.updated_at = now_ms();
            store
                .update_customer(&row, read_at)
                .await
                .map_err(write_error)?;
            Ok(row)
        })
        .await?;
        customer_changed(&st, id).await;
        rows.push(customer_json(&row));
    }
    Ok(HttpResponse::Ok().json(json!({ "blocked_users": rows })))
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
    for prefix in ["/customer", "/end_user"] {
        cfg.post(&format!("{prefix}/new"), new)
            .get(&format!("{prefix}/info"), info)
            .post(&format!("{prefix}/update"), update)
            .post(&format!("{prefix}/delete"), delete)
            .get(&format!("{prefix}/list"), list)
            .post(&format!("{prefix}/block"), block)
            .post(&format!("{prefix}/unblock"), unblock);
    }
}
