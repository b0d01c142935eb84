//! `/spend/logs` and `/global/spend*`: LiteLLM's spend reporting, read from
//! the spend log.

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::admin::*;
use super::{authenticate, WorkerState};
use crate::error::GatewayError;
use crate::store::{now_ms, SpendFilter, SpendLogRow};

/// Rows `/spend/logs` returns at most (LiteLLM returns everything; a
/// gateway's log can be millions of rows).
const DEFAULT_LIMIT: i64 = 1_000;
const MAX_LIMIT: i64 = 100_000;
const DAY_MS: i64 = 86_400_000;

fn iso_ms(ms: i64) -> Value {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, false)))
        .unwrap_or(Value::Null)
}

fn day_of(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// `YYYY-MM-DD` (LiteLLM's format) → unix ms at 00:00 UTC.
fn parse_day(field: &'static str, s: &str) -> Result<i64, GatewayError> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
        .ok_or_else(|| {
            bad_request(
                format!("{field} must be a date as YYYY-MM-DD, got `{s}`"),
                Some(field),
            )
        })
}

/// A row's metadata as LiteLLM logs it. The row stores only what its
/// columns do not hold (the request id the caller saw, attempts when more
/// than one, the request's own `metadata`); the key's alias, user and team
/// come from their columns. Rows written whole (before) read the same.
fn metadata_json(r: &SpendLogRow) -> Value {
    let mut m = match serde_json::from_str::<Value>(&r.metadata) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    for (field, column) in [
        ("user_api_key_alias", &r.key_alias),
        ("user_api_key_user_id", &r.user_id),
        ("user_api_key_team_id", &r.team_id),
    ] {
        m.entry(field).or_insert_with(|| json!(column));
    }
    m.entry("attempts").or_insert(json!(1));
    m.entry("requester_metadata").or_insert(Value::Null);
    Value::Object(m)
}

/// A spend log row under LiteLLM's column names.
pub fn row_json(r: &SpendLogRow) -> Value {
    json!({
        "request_id": r.request_id,
        "call_type": r.call_type,
        "api_key": r.api_key,
        "spend": r.spend,
        "total_tokens": r.total_tokens,
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "startTime": iso_ms(r.start_time),
        "endTime": iso_ms(r.end_time),
        "completionStartTime": r.completion_start_time.map(iso_ms).unwrap_or(Value::Null),
        "request_duration_ms": r.end_time - r.start_time,
        "model": r.model,
        "model_id": r.model_id,
        "model_group": r.model_group,
        "api_base": r.api_base,
        "user": r.user_id.clone().unwrap_or_default(),
        "metadata": metadata_json(r),
        "cache_hit": if r.cache_hit { "True" } else { "False" },
        "cache_key": "Cache OFF",
        "request_tags": [],
        "team_id": r.team_id,
        "end_user": r.end_user,
        "status": r.status,
        "usage_estimated": r.usage_estimated,
    })
}

#[derive(Deserialize)]
pub struct LogsQuery {
    api_key: Option<String>,
    user_id: Option<String>,
    team_id: Option<String>,
    end_user: Option<String>,
    request_id: Option<String>,
    start_date: Option<String>,
    end_date: Option<String>,
    summarize: Option<bool>,
    limit: Option<i64>,
}

/// `GET /spend/logs`. The master key sees everything; any other key only
/// its own requests. With `start_date` and `end_date` (days, end
/// exclusive) the answer is summarised by day, unless `summarize=false`.
pub async fn logs(
    req: HttpRequest,
    query: web::Query<LogsQuery>,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = authenticate(&st, &req).await?;
    let q = query.into_inner();
    for (field, v) in [
        ("user_id", &q.user_id),
        ("team_id", &q.team_id),
        ("end_user", &q.end_user),
        ("request_id", &q.request_id),
    ] {
        check_opt_name(field, v)?;
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(bad_request(
            format!("limit must be between 1 and {MAX_LIMIT}"),
            Some("limit"),
        ));
    }
    let mut filter = SpendFilter {
        api_key: q.api_key.as_deref().map(token_of),
        user_id: q.user_id,
        team_id: q.team_id,
        end_user: q.end_user,
        request_id: q.request_id,
        start_ms: q
            .start_date
            .as_deref()
            .map(|s| parse_day("start_date", s))
            .transpose()?,
        end_ms: q
            .end_date
            .as_deref()
            .map(|s| parse_day("end_date", s))
            .transpose()?,
    };
    if !caller.is_master {
        filter.api_key = Some(caller.id.clone());
    }
    let rows = store(&st)?
        .spend_logs(&filter, limit)
        .await
        .map_err(store_error)?;
    let by_day = filter.start_ms.is_some() && filter.end_ms.is_some();
    if by_day && q.summarize.unwrap_or(true) {
        return Ok(HttpResponse::Ok().json(summarize_by_day(&rows)));
    }
    Ok(HttpResponse::Ok().json(rows.iter().map(row_json).collect::<Vec<_>>()))
}

/// LiteLLM's daily summary: per day the spend, spend per key (the key's
/// hash as the field name), per user and per model.
fn summarize_by_day(rows: &[SpendLogRow]) -> Value {
    let mut days: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for r in rows {
        let day = days.entry(day_of(r.start_time)).or_insert_with(|| {
            let mut m = Map::new();
            m.insert("spend".into(), json!(0.0));
            m.insert("users".into(), json!({}));
            m.insert("models".into(), json!({}));
            m
        });
        let add = |v: &mut Value, x: f64| *v = json!(v.as_f64().unwrap_or(0.0) + x);
        add(day.entry("spend").or_insert(json!(0.0)), r.spend);
        add(day.entry(r.api_key.clone()).or_insert(json!(0.0)), r.spend);
        if let Some(Value::Object(users)) = day.get_mut("users") {
            add(
                users
                    .entry(r.user_id.clone().unwrap_or_default())
                    .or_insert(json!(0.0)),
                r.spend,
            );
        }
        if let Some(Value::Object(models)) = day.get_mut("models") {
            add(models.entry(r.model.clone()).or_insert(json!(0.0)), r.spend);
        }
    }
    Value::Array(
        days.into_iter()
            .map(|(day, mut m)| {
                m.insert("startTime".into(), json!(day));
                Value::Object(m)
            })
            .collect(),
    )
}

#[derive(Deserialize)]
pub struct ReportQuery {
    start_date: Option<String>,
    end_date: Option<String>,
    group_by: Option<String>,
    api_key: Option<String>,
    internal_user_id: Option<String>,
    team_id: Option<String>,
    customer_id: Option<String>,
}

#[derive(Default)]
struct Agg {
    spend: f64,
    prompt: i64,
    completion: i64,
    total: i64,
}

impl Agg {
    fn add(&mut self, r: &SpendLogRow) {
        self.spend += r.spend;
        self.prompt += r.prompt_tokens;
        self.completion += r.completion_tokens;
        self.total += r.total_tokens;
    }
}

/// `GET /global/spend/report` (master key): spend between two days,
/// grouped by day and team (default), customer, or key — LiteLLM's shapes.
pub async fn report(
    req: HttpRequest,
    query: web::Query<ReportQuery>,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    require_admin(&st, &req).await?;
    let q = query.into_inner();
    let (Some(start), Some(end)) = (&q.start_date, &q.end_date) else {
        return Err(bad_request(
            "Please provide start_date and end_date",
            Some("start_date"),
        ));
    };
    let mut filter = SpendFilter {
        start_ms: Some(parse_day("start_date", start)?),
        end_ms: Some(parse_day("end_date", end)?),
        ..Default::default()
    };
    check_opt_name("internal_user_id", &q.internal_user_id)?;
    check_opt_name("team_id", &q.team_id)?;
    check_opt_name("customer_id", &q.customer_id)?;
    let by_key = q.api_key.is_some()
        || q.internal_user_id.is_some()
        || q.group_by.as_deref() == Some("api_key");
    filter.api_key = q.api_key.as_deref().map(token_of);
    filter.user_id = q.internal_user_id.clone();
    if !by_key {
        filter.team_id = q.team_id.clone();
        filter.end_user = q.customer_id.clone();
    }
    let store = store(&st)?;
    let rows = store
        .spend_logs(&filter, MAX_LIMIT)
        .await
        .map_err(store_error)?;
    if by_key {
        let mut keys: BTreeMap<&str, (Agg, BTreeMap<&str, Agg>)> = BTreeMap::new();
        for r in &rows {
            let (total, models) = keys.entry(&r.api_key).or_default();
            total.add(r);
            models.entry(&r.model).or_default().add(r);
        }
        let mut out: Vec<Value> = keys
            .into_iter()
            .map(|(key, (t, models))| {
                json!({
                    "api_key": key,
                    "total_cost": t.spend,
                    "total_input_tokens": t.prompt,
                    "total_output_tokens": t.completion,
                    "model_details": models.into_iter().map(|(model, a)| json!({
                        "model": model,
                        "total_cost": a.spend,
                        "total_input_tokens": a.prompt,
                        "total_output_tokens": a.completion,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        out.sort_by(|a, b| {
            b["total_cost"]
                .as_f64()
                .partial_cmp(&a["total_cost"].as_f64())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        return Ok(HttpResponse::Ok().json(out));
    }
    let by_customer = q.group_by.as_deref() == Some("customer");
    let (list, name_field) = if by_customer {
        ("customers", "customer")
    } else {
        ("teams", "team_name")
    };
    // Team names are aliases, as LiteLLM shows them.
    let mut aliases: BTreeMap<String, String> = BTreeMap::new();
    if !by_customer {
        for t in store.list_teams(None, None).await.map_err(store_error)? {
            if let Some(a) = t.team_alias {
                aliases.insert(t.team_id, a);
            }
        }
    }
    type Models<'a> = BTreeMap<(&'a str, &'a str), Agg>;
    let mut days: BTreeMap<String, BTreeMap<String, (f64, Models)>> = BTreeMap::new();
    for r in &rows {
        let group = if by_customer {
            r.end_user.clone().unwrap_or_default()
        } else {
            r.team_id
                .as_ref()
                .map(|t| aliases.get(t).cloned().unwrap_or_else(|| t.clone()))
                .unwrap_or_else(|| "Unassigned Team".into())
        };
        let day_start = r.start_time - r.start_time.rem_euclid(DAY_MS);
        let (total, models) = days
            .entry(day_of(day_start))
            .or_default()
            .entry(group)
            .or_default();
        *total += r.spend;
        models.entry((&r.model, &r.api_key)).or_default().add(r);
    }
    let out: Vec<Value> = days
        .into_iter()
        .map(|(day, groups)| {
            let entries: Vec<Value> = groups
                .into_iter()
                .map(|(name, (total, models))| {
                    json!({
                        name_field: name,
                        "total_spend": total,
                        "metadata": models.into_iter().map(|((model, key), a)| json!({
                            "model": model,
                            "api_key": key,
                            "spend": a.spend,
                            "total_tokens": a.total,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({"group_by_day": format!("{day}T00:00:00+00:00"), list: entries})
        })
        .collect();
    Ok(HttpResponse::Ok().json(out))
}

#[derive(Deserialize)]
pub struct LimitQuery {
    limit: Option<i64>,
}

fn last_30_days() -> SpendFilter {
    SpendFilter {
        start_ms: Some(now_ms() - 30 * DAY_MS),
        ..Default::default()
    }
}

fn check_top(limit: Option<i64>) -> Result<Option<usize>, GatewayError> {
    match limit {
        Some(n) if n < 1 => Err(management_error(
            422,
            "validation_error",
            format!("Invalid limit: {n}, error: Limit must be greater than 0"),
            Some("limit"),
        )),
        Some(n) => Ok(Some(n as usize)),
        None => Ok(None),
    }
}

/// `GET /global/spend/keys`: keys by spend over the last 30 days.
pub async fn top_keys(
    req: HttpRequest,
    query: web::Query<LimitQuery>,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    require_admin(&st, &req).await?;
    let limit = check_top(query.limit)?;
    let rows = store(&st)?
        .spend_logs(&last_30_days(), MAX_LIMIT)
        .await
        .map_err(store_error)?;
    let mut keys: BTreeMap<&str, (f64, Option<&str>)> = BTreeMap::new();
    for r in &rows {
        let e = keys
            .entry(&r.api_key)
            .or_insert((0.0, r.key_alias.as_deref()));
        e.0 += r.spend;
    }
    let mut out: Vec<(f64, Value)> = keys
        .into_iter()
        .map(|(key, (spend, alias))| {
            (
                spend,
                json!({"api_key": key, "key_alias": alias, "key_name": Value::Null, "total_spend": spend}),
            )
        })
        .collect();
    out.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    let out: Vec<Value> = out
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .map(|(_, v)| v)
        .collect();
    Ok(HttpResponse::Ok().json(out))
}

/// `GET /global/spend/models`: models by spend over the last 30 days.
pub async fn top_models(
    req: HttpRequest,
    query: web::Query<LimitQuery>,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    require_admin(&st, &req).await?;
    let limit = check_top(query.limit)?.unwrap_or(10);
    let rows = store(&st)?
        .spend_logs(&last_30_days(), MAX_LIMIT)
        .await
        .map_err(store_error)?;
    let mut models: BTreeMap<&str, f64> = BTreeMap::new();
    for r in rows.iter().filter(|r| !r.model.is_empty()) {
        *models.entry(&r.model).or_default() += r.spend;
    }
    let mut out: Vec<(&str, f64)> = models.into_iter().collect();
    out.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    Ok(HttpResponse::Ok().json(
        out.into_iter()
            .take(limit)
            .map(|(m, s)| json!({"model": m, "total_spend": s}))
            .collect::<Vec<_>>(),
    ))
}

/// `GET /global/spend`: the last 30 days' spend.
pub async fn global(
    req: HttpRequest,
    st: web::Data<WorkerState>,
) -> Result<HttpResponse, GatewayError> {
    require_admin(&st, &req).await?;
    let rows = store(&st)?
        .spend_logs(&last_30_days(), MAX_LIMIT)
        .await
        .map_err(store_error)?;
    let spend: f64 = rows.iter().map(|r| r.spend).sum();
    Ok(HttpResponse::Ok().json(json!({"spend": spend, "max_budget": 0.0})))
}

pub fn routes(cfg: &mut super::Routes<'_>) {
    cfg.get("/spend/logs", logs)
        .get("/global/spend/report", report)
        .get("/global/spend/keys", top_keys)
        .get("/global/spend/models", top_models)
        .get("/global/spend", global);
}
