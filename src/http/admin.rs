//! What the management endpoints share: who may call them, reading JSON
//! bodies with the failing field named, mapping storage errors, and
//! telling every cache (here and on other replicas) what changed.

use actix_web::{web, HttpRequest};
use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{read_body, WorkerState};
use crate::actors::auth_hub::Changed;
use crate::error::GatewayError;
use crate::shared::Invalidation;
use crate::store::{Store, StoreError};

pub fn management_error(
    status: u16,
    kind: &'static str,
    message: impl Into<String>,
    param: Option<&'static str>,
) -> GatewayError {
    GatewayError::Management {
        status,
        kind,
        message: message.into(),
        param,
    }
}

pub fn not_found(message: impl Into<String>, param: &'static str) -> GatewayError {
    management_error(404, "not_found_error", message, Some(param))
}

pub fn bad_request(message: impl Into<String>, param: Option<&'static str>) -> GatewayError {
    management_error(400, "bad_request_error", message, param)
}

pub fn forbidden(message: impl Into<String>) -> GatewayError {
    management_error(403, "auth_error", message, None)
}

pub fn store(st: &WorkerState) -> Result<&Store, GatewayError> {
    st.gw.store.as_ref().ok_or_else(|| {
        GatewayError::Unavailable(
            "no database is configured: set `database_url` in config.toml to manage keys".into(),
        )
    })
}

pub fn store_error(e: StoreError) -> GatewayError {
    match e {
        StoreError::Unavailable(m) | StoreError::Slow(m) => {
            GatewayError::Unavailable(format!("database: {m}"))
        }
        StoreError::Duplicate(m) => management_error(409, "bad_request_error", m, None),
        StoreError::Conflict(m) => management_error(409, "conflict_error", m, None),
        other => {
            tracing::error!(error = %other, "database error");
            GatewayError::Internal("database error".into())
        }
    }
}

/// The caller, who must be a proxy admin (the master key, or a key whose
/// user has the `proxy_admin` role).
pub async fn require_admin(
    st: &WorkerState,
    req: &HttpRequest,
) -> Result<super::roles::Caller, GatewayError> {
    let caller = super::roles::caller(st, req).await?;
    caller.require_admin(req.path())?;
    Ok(caller)
}

/// The caller, who must be a proxy admin or a `proxy_admin_viewer`.
pub async fn require_reader(
    st: &WorkerState,
    req: &HttpRequest,
) -> Result<super::roles::Caller, GatewayError> {
    let caller = super::roles::caller(st, req).await?;
    caller.require_reader(req.path())?;
    Ok(caller)
}

/// Reads a JSON body into `T`; a wrong type is a 422 naming the field.
pub async fn json_body<T: DeserializeOwned>(
    st: &WorkerState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<T, GatewayError> {
    let bytes = read_body(req, payload, &st.gw.config.server).await?;
    let text = if bytes.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        &bytes[..]
    };
    let mut de = serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            bad_request(format!("The request body is not valid JSON: {inner}"), None)
        } else {
            management_error(
                422,
                "validation_error",
                format!("invalid value for `{path}`: {inner}"),
                None,
            )
        }
    })
}

/// Tells this replica's workers and (through Redis) every other replica.
pub async fn changed(st: &WorkerState, what: Invalidation, key_hashes: Vec<String>) {
    match st.gw.auth_hub.send(Changed { what, key_hashes }).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not publish an invalidation to redis; other replicas see the change when their cache entry expires")
        }
        Err(e) => tracing::warn!(error = %e, "auth hub unavailable"),
    }
}

/// Distinguishes a field sent as `null` (Some(None)) from one not sent (None).
pub fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

pub fn iso(ms: Option<i64>) -> Value {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

pub fn json_text(s: &str, empty: Value) -> Value {
    serde_json::from_str(s).unwrap_or(empty)
}

pub fn json_opt(s: &Option<String>) -> Value {
    s.as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null)
}

/// Keys are passed raw (`sk-…`) or as their hash; the hash is what is stored.
pub fn token_of(key: &str) -> String {
    let key = key.trim();
    if key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        key.to_ascii_lowercase()
    } else {
        crate::actors::auth::hash_hex(key)
    }
}

/// Longest id or name (user/team id, alias, model name, email) accepted.
/// Ids are primary keys and aliases are indexed: PostgreSQL refuses index
/// rows over ~2.7 KB, and no real id comes near this.
pub const MAX_NAME_CHARS: usize = 256;

/// An id or name as stored: not blank, at most `MAX_NAME_CHARS`
/// characters, no control characters (PostgreSQL cannot store NUL; a
/// newline in an id is a mistake). The same rule on every backend.
pub fn check_name(field: &'static str, value: &str) -> Result<(), GatewayError> {
    if value.trim().is_empty() {
        return Err(bad_request(
            format!("{field} must not be empty"),
            Some(field),
        ));
    }
    if value.chars().count() > MAX_NAME_CHARS {
        return Err(bad_request(
            format!("{field} is longer than {MAX_NAME_CHARS} characters"),
            Some(field),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(bad_request(
            format!("{field} must not contain control characters (NUL, newlines, …)"),
            Some(field),
        ));
    }
    Ok(())
}

pub fn check_names<'a>(
    field: &'static str,
    values: impl IntoIterator<Item = &'a String>,
) -> Result<(), GatewayError> {
    values.into_iter().try_for_each(|v| check_name(field, v))
}

pub fn check_opt_name(field: &'static str, value: &Option<String>) -> Result<(), GatewayError> {
    value.as_deref().map_or(Ok(()), |v| check_name(field, v))
}

/// Largest `metadata` object, serialized: it travels with the key into
/// every worker's cache and into Redis.
pub const MAX_METADATA_BYTES: usize = 1024 * 1024;

/// `metadata` as stored (JSON text), or a 400 if it is too large.
pub fn metadata_text(m: &Map<String, Value>) -> Result<String, GatewayError> {
    let text = Value::Object(m.clone()).to_string();
    if text.len() > MAX_METADATA_BYTES {
        return Err(bad_request(
            format!("metadata is larger than {MAX_METADATA_BYTES} bytes"),
            Some("metadata"),
        ));
    }
    Ok(text)
}

pub fn check_non_negative(field: &'static str, v: Option<f64>) -> Result<(), GatewayError> {
    match v {
        Some(x) if !x.is_finite() || x < 0.0 => Err(bad_request(
            format!("{field} cannot be negative. Received: {x}"),
            Some(field),
        )),
        _ => Ok(()),
    }
}

pub fn check_limit(field: &'static str, v: Option<i64>) -> Result<(), GatewayError> {
    match v {
        Some(x) if x < 0 => Err(bad_request(
            format!("{field} cannot be negative. Received: {x}"),
            Some(field),
        )),
        _ => Ok(()),
    }
}

pub fn parse_duration(field: &'static str, s: &str) -> Result<i64, GatewayError> {
    crate::access::parse_duration_ms(s).map_err(|m| bad_request(m, Some(field)))
}

pub fn page_bounds(
    page: Option<i64>,
    size: Option<i64>,
    default: i64,
) -> Result<(i64, i64), GatewayError> {
    let page = page.unwrap_or(1);
    let size = size.unwrap_or(default);
    if page < 1 {
        return Err(bad_request("page must be at least 1", Some("page")));
    }
    if !(1..=100).contains(&size) {
        return Err(bad_request("size must be between 1 and 100", Some("size")));
    }
    Ok((page, size))
}

/// Applies the shared budget/limit fields of a request struct to a row;
/// keys, users and teams name them alike.
macro_rules! apply_budget {
    ($fields:expr, $row:expr, $now:expr) => {
        $crate::http::admin::BudgetPatch {
            max_budget: $fields.max_budget,
            soft_budget: $fields.soft_budget,
            budget_duration: &$fields.budget_duration,
            rpm_limit: $fields.rpm_limit,
            tpm_limit: $fields.tpm_limit,
            max_parallel_requests: $fields.max_parallel_requests,
        }
        .apply(
            $crate::http::admin::BudgetColumns {
                max_budget: &mut $row.max_budget,
                soft_budget: &mut $row.soft_budget,
                budget_duration: &mut $row.budget_duration,
                budget_reset_at: &mut $row.budget_reset_at,
                rpm_limit: &mut $row.rpm_limit,
                tpm_limit: &mut $row.tpm_limit,
                max_parallel_requests: &mut $row.max_parallel_requests,
            },
            $now,
        )
    };
}
pub(crate) use apply_budget;

/// The budget and limit fields keys, users and teams share, as a request
/// sent them (absent: leave alone; `null`: clear).
pub struct BudgetPatch<'a> {
    pub max_budget: Option<Option<f64>>,
    pub soft_budget: Option<Option<f64>>,
    pub budget_duration: &'a Option<Option<String>>,
    pub rpm_limit: Option<Option<i64>>,
    pub tpm_limit: Option<Option<i64>>,
    pub max_parallel_requests: Option<Option<i64>>,
}

/// Where those fields live in a row.
pub struct BudgetColumns<'a> {
    pub max_budget: &'a mut Option<f64>,
    pub soft_budget: &'a mut Option<f64>,
    pub budget_duration: &'a mut Option<String>,
    pub budget_reset_at: &'a mut Option<i64>,
    pub rpm_limit: &'a mut Option<i64>,
    pub tpm_limit: &'a mut Option<i64>,
    pub max_parallel_requests: &'a mut Option<i64>,
}

impl BudgetPatch<'_> {
    /// Validates and writes the sent fields; a new `budget_duration` starts
    /// a new budget period now.
    pub fn apply(self, to: BudgetColumns<'_>, now: i64) -> Result<(), GatewayError> {
        if let Some(b) = self.max_budget {
            check_non_negative("max_budget", b)?;
            *to.max_budget = b;
        }
        if let Some(b) = self.soft_budget {
            check_non_negative("soft_budget", b)?;
            *to.soft_budget = b;
        }
        if let Some(bd) = self.budget_duration {
            *to.budget_reset_at = match bd {
                Some(s) => {
                    parse_duration("budget_duration", s)?;
                    crate::access::next_reset(s, now)
                }
                None => None,
            };
            *to.budget_duration = bd.clone();
        }
        for (field, src, dst) in [
            ("rpm_limit", self.rpm_limit, to.rpm_limit),
            ("tpm_limit", self.tpm_limit, to.tpm_limit),
            (
                "max_parallel_requests",
                self.max_parallel_requests,
                to.max_parallel_requests,
            ),
        ] {
            if let Some(v) = src {
                check_limit(field, v)?;
                *dst = v;
            }
        }
        Ok(())
    }
}

/// Why one read-change-write of a row did not happen.
pub enum EditError {
    /// Another write came between the read and the write: try again.
    Conflict(StoreError),
    Failed(GatewayError),
}

impl From<GatewayError> for EditError {
    fn from(e: GatewayError) -> Self {
        EditError::Failed(e)
    }
}

/// `store_error`, except that a conflict is retried by `edit_row`.
pub fn write_error(e: StoreError) -> EditError {
    match e {
        StoreError::Conflict(_) => EditError::Conflict(e),
        other => EditError::Failed(store_error(other)),
    }
}

/// Management writes read a row (key, user, team), change it and write the
/// whole row back; two at once, or one and a budget reset, would lose one.
/// `attempt` does one read-change-write (its write conditional on the row
/// being as read, see `Store::update_team`), and runs again from a fresh
/// read when another write came in between; 409 if that keeps happening.
pub async fn edit_row<T>(
    mut attempt: impl AsyncFnMut() -> Result<T, EditError>,
) -> Result<T, GatewayError> {
    const ATTEMPTS: usize = 8;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(EditError::Failed(e)) => return Err(e),
            Err(EditError::Conflict(e)) => last = Some(e),
        }
    }
    Err(last.map_or_else(|| GatewayError::Internal("no attempt".into()), store_error))
}
