//! `/budget/*`: LiteLLM's reusable budget objects. A customer or an
//! organization that links one by `budget_id` is held to its limits
//! wherever it sets none of its own.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::admin::*;
use super::WorkerState;
use crate::error::GatewayError;
use crate::shared::Invalidation;
use crate::store::{now_ms, BudgetRow};

pub fn budget_json(row: &BudgetRow) -> Value {
    json!({
        "budget_id": row.budget_id,
        "max_budget": row.max_budget,
        "soft_budget": row.soft_budget,
        "budget_duration": row.budget_duration,
        "tpm_limit": row.tpm_limit,
        "rpm_limit": row.rpm_limit,
        "max_parallel_requests": row.max_parallel_requests,
        "model_max_budget": json_opt(&row.model_max_budget),
        "created_at": iso(Some(row.created_at)),
        "updated_at": iso(Some(row.updated_at)),
    })
}

#[derive(Debug, Default, Deserialize)]
struct BudgetFields {
    #[serde(default)]
    budget_id: Option<String>,
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
    #[serde(default, deserialize_with = "double_option")]
    model_max_budget: Option<Option<Map<String, Value>>>,
}

impl BudgetFields {
    fn apply(&self, row: &mut BudgetRow, now: i64) -> Result<(), GatewayError> {
        // A budget object has no period of its own to track: whoever links
        // it does (`budget_reset_at` lives on the customer/organization).
        let mut reset_at = None;
        BudgetPatch {
            max_budget: self.max_budget,
            soft_budget: self.soft_budget,
            budget_duration: &self.budget_duration,
            rpm_limit: self.rpm_limit,
            tpm_limit: self.tpm_limit,
            max_parallel_requests: self.max_parallel_requests,
        }
        .apply(
            BudgetColumns {
                max_budget: &mut row.max_budget,
                soft_budget: &mut row.soft_budget,
                budget_duration: &mut row.budget_duration,
                budget_reset_at: &mut reset_at,
                rpm_limit: &mut row.rpm_limit,
                tpm_limit: &mut row.tpm_limit,
                max_parallel_requests: &mut row.max_parallel_requests,
            },
            now,
        )?;
        if let Some(m) = &self.model_max_budget {
            row.model_max_budget = match m {
                Some(m) => {
                    check_names("model_max_budget", m.keys())?;
                    if let Some((model, _)) = m
                        .iter()
                        .find(|(_, spec)| crate::access::model_budget(spec).is_none())
                    {
                        return Err(bad_request(
                            format!("Invalid model_max_budget for {model}: expected {{\"budget_limit\": <USD>, \"time_period\": \"30d\"}}"),
                            Some("model_max_budget"),
                        ));
                    }
                    Some(Value::Object(m.clone()).to_string())
                }
                None => None,
            };
        }
        row.updated_at = now;
        Ok(())
    }
}

/// Customers and organizations that link a budget see its change at once,
/// here and on every replica.
async fn budget_changed(st: &WorkerState, id: &str) -> Result<(), GatewayError> {
    let users = store(st)?.budget_users(id).await.map_err(store_error)?;
    invalidate(st, users).await
}

async fn invalidate(
    st: &WorkerState,
    (customers, orgs): (Vec<String>, Vec<String>),
) -> Result<(), GatewayError> {
    let store = store(st)?;
    for c in customers {
        changed(st, Invalidation::Customer(c), vec![]).await;
    }
    for o in orgs {
        let hashes = store.keys_of_org(&o).await.map_err(store_error)?;
        changed(st, Invalidation::Org(o), hashes).await;
    }
    Ok(())
}

pub async fn new(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    require_admin(&st, &req).await?;
    let body: BudgetFields = json_body(&st, &req, payload).await?;
    let now = now_ms();
    let id = body
        .budget_id
        .clone()
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    check_name("budget_id", &id)?;
    let mut row = BudgetRow {
        budget_id: id.clone(),
        max_budget: None,
        soft_budget: None,
        budget_duration: None,
        rpm_limit: None,
        tpm_limit: None,
        max_parallel_requests: None,
        model_max_budget: None,
        created_at: now,
        updated_at: now,
    };
    body.apply(&mut row, now)?;
    store(&st)?.insert_budget(&row).await.map_err(|e| match e {
        crate::store::StoreError::Duplicate(_) => bad_request(
            format!("Budget id = {id} already exists."),
            Some("budget_id"),
        ),
        other => store_error(other),
    })?;
    Ok(HttpResponse::Ok().json(budget_json(&row)))
}

async fn load_budget(st: &WorkerState, id: &str) -> Result<BudgetRow, GatewayError> {
    check_name("budget_id", id)?;
    store(st)?
        .get_budget(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            not_found(
                format!("Budget not found, passed budget_id={id}"),
                "budget_id",
            )
        })
}

pub async fn update(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    require_admin(&st, &req).await?;
    let body: BudgetFields = json_body(&st, &req, payload).await?;
    let id = body.budget_id.clone().ok_or_else(|| {
        management_error(
            422,
            "validation_error",
            "`budget_id` is required",
            Some("budget_id"),
        )
    })?;
    let mut row = load_budget(&st, &id).await?;
    body.apply(&mut row, now_ms())?;
    store(&st)?.update_budget(&row).await.map_err(store_error)?;
    budget_changed(&st, &id).await?;
    Ok(HttpResponse::Ok().json(budget_json(&row)))
}

#[derive(Deserialize)]
struct BudgetIds {
    budgets: Vec<String>,
}

/// LiteLLM's `POST /budget/info {"budgets": [...]}`: a list of rows.
pub async fn info(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    require_reader(&st, &req).await?;
    let body: BudgetIds = json_body(&st, &req, payload).await?;
    let mut out = Vec::with_capacity(body.budgets.len());
    for id in &body.budgets {
        out.push(budget_json(&load_budget(&st, id).await?));
    }
    Ok(HttpResponse::Ok().json(out))
}

#[derive(Deserialize)]
pub struct BudgetQuery {
    budget_id: String,
}

/// LiteLLM's `GET /budget/settings?budget_id=`: the one row.
pub async fn settings(
    req: HttpRequest,
    query: web::Query<BudgetQuery>,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    require_reader(&st, &req).await?;
    Ok(HttpResponse::Ok().json(budget_json(&load_budget(&st, &query.budget_id).await?)))
}

pub async fn list(
    req: HttpRequest,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    require_reader(&st, &req).await?;
    let rows = store(&st)?.list_budgets().await.map_err(store_error)?;
    Ok(HttpResponse::Ok().json(rows.iter().map(budget_json).collect::<Vec<_>>()))
}

#[derive(Deserialize)]
struct BudgetId {
    id: String,
}

/// LiteLLM's `POST /budget/delete {"id": ...}`; whatever linked it is
/// unlinked (and falls back to its own limits).
pub async fn delete(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    require_admin(&st, &req).await?;
    let body: BudgetId = json_body(&st, &req, payload).await?;
    let row = load_budget(&st, &body.id).await?;
    // Who linked it, asked before the delete unlinks them.
    let store = store(&st)?;
    let users = store.budget_users(&body.id).await.map_err(store_error)?;
    store
        .delete_budgets(std::slice::from_ref(&body.id))
        .await
        .map_err(store_error)?;
    invalidate(&st, users).await?;
    Ok(HttpResponse::Ok().json(budget_json(&row)))
}

pub fn routes(cfg: &mut super::Routes<'_>) {
    cfg.post("/budget/new", new)
        .post("/budget/update", update)
        .post("/budget/info", info)
        .get("/budget/settings", settings)
        .get("/budget/list", list)
        .post("/budget/delete", delete);
}
