//! The generic webhook: a JSON array of log records per POST (fields named
//! after LiteLLM's standard logging payload), optionally signed with
//! HMAC-SHA256 (`x-tollgate-signature: sha256=<hex of the body>`). Pure.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};

use super::otlp::REDACTED;
use super::record::LogRecord;
use super::sink::{Exporter, Payload};
use crate::config::Secret;

pub const SIGNATURE_HEADER: &str = "x-tollgate-signature";

pub struct WebhookExporter {
    pub redact: bool,
    pub hmac_secret: Option<Secret>,
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn iso_nanos(n: u64) -> String {
    chrono::DateTime::from_timestamp_nanos(n as i64)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One record as JSON.
pub fn record_json(rec: &LogRecord, redact: bool) -> Value {
    let derived = rec.derived();
    let (mask_in, mask_out) = (
        redact || derived.flag("mask_input"),
        redact || derived.flag("mask_output"),
    );
    let messages = if mask_in {
        json!([{"role": "user", "content": REDACTED}])
    } else {
        rec.input
            .as_ref()
            .and_then(|i| serde_json::from_str(i.get()).ok())
            .unwrap_or(Value::Null)
    };
    let response = if mask_out {
        json!({"text": REDACTED})
    } else {
        match &derived.output {
            Some(m) => {
                json!({"role": m.role, "content": m.content(), "finish_reason": m.finish_reason})
            }
            None => Value::Null,
        }
    };
    let key = rec.key.as_deref();
    let d = rec.deployment.as_deref();
    json!({
        "id": rec.call_id,
        "request_id": rec.request_id,
        "call_type": rec.endpoint.call_type(),
        "status": if rec.status == 200 { "success" } else { "failure" },
        "status_code": rec.status,
        "error_str": rec.error,
        "stream": rec.stream,
        "model": d.map_or(rec.model.as_str(), |d| d.upstream_model.as_str()),
        "model_group": d.map_or(rec.model.clone(), |d| d.group.to_string()),
        "requested_model": rec.model,
        "model_id": d.map(|d| d.id.as_str()),
        "api_base": d.map(|d| d.api_base.as_str()),
        "custom_llm_provider": d.map(|d| d.provider.name()),
        "response_cost": rec.cost,
        "prompt_tokens": rec.usage.prompt_tokens,
        "completion_tokens": rec.usage.completion_tokens,
        "total_tokens": rec.usage.prompt_tokens + rec.usage.completion_tokens,
        "usage_estimated": rec.usage_estimated,
        "startTime": iso_nanos(rec.start_unix_nanos),
        "endTime": iso_nanos(rec.end_unix_nanos),
        "completionStartTime": rec.first_chunk_ms.map(|ms| iso_nanos(u64::try_from(ms).unwrap_or(0) * 1_000_000)),
        "response_time": rec.latency().as_secs_f64(),
        "api_call_time": rec.upstream.as_secs_f64(),
        "attempts": rec.attempts.len().max(usize::from(d.is_some())),
        "fallbacks": rec.fallbacks,
        "end_user": rec.end_user,
        "trace_id": rec.trace.map(|t| hex::encode(t.trace_id)),
        "metadata": {
            "user_api_key_hash": key.map(|k| k.id.as_str()),
            "user_api_key_alias": key.and_then(|k| k.alias.as_deref()),
            "user_api_key_team_id": key.and_then(|k| k.team_id.as_deref()),
            "user_api_key_user_id": key.and_then(|k| k.user_id.as_deref()),
            "requester_metadata": derived.metadata,
        },
        "messages": messages,
        "response": response,
    })
}

impl Exporter for WebhookExporter {
    type Item = Arc<LogRecord>;

    fn encode(&self, batch: &[Arc<LogRecord>]) -> Result<Payload, String> {
        let body: Vec<Value> = batch.iter().map(|r| record_json(r, self.redact)).collect();
        let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let headers = match &self.hmac_secret {
            Some(secret) => vec![(SIGNATURE_HEADER, sign(secret.expose().as_bytes(), &body))],
            None => Vec::new(),
        };
        Ok(Payload {
            body: body.into(),
            content_type: "application/json",
            headers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
