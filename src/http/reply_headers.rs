//! The headers every answered request carries (ours and LiteLLM's names).
//!
//! They are written on every response, so nothing here parses a header
//! name or formats a value that is known before the request: names are
//! constants, a deployment's values are built once with its target, and
//! small counts come from a table.

use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::HttpResponseBuilder;

use super::record::RequestRecord;
use crate::error::{rate_limit_headers, RateLimitInfo};
use crate::pricing::python_float;
use crate::topology::DeploymentTarget;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const DEPLOYMENT: HeaderName = HeaderName::from_static("x-tollgate-deployment");
const ATTEMPTS: HeaderName = HeaderName::from_static("x-tollgate-attempts");
const RETRIES: HeaderName = HeaderName::from_static("x-tollgate-retries");
const FALLBACKS: HeaderName = HeaderName::from_static("x-tollgate-fallbacks");
const OVERHEAD_MS: HeaderName = HeaderName::from_static("x-tollgate-overhead-ms");
const COST: HeaderName = HeaderName::from_static("x-tollgate-response-cost");
const LITELLM_CALL_ID: HeaderName = HeaderName::from_static("x-litellm-call-id");
const LITELLM_MODEL_ID: HeaderName = HeaderName::from_static("x-litellm-model-id");
const LITELLM_MODEL_GROUP: HeaderName = HeaderName::from_static("x-litellm-model-group");
const LITELLM_API_BASE: HeaderName = HeaderName::from_static("x-litellm-model-api-base");
const LITELLM_RETRIES: HeaderName = HeaderName::from_static("x-litellm-attempted-retries");
const LITELLM_FALLBACKS: HeaderName = HeaderName::from_static("x-litellm-attempted-fallbacks");
const LITELLM_COST: HeaderName = HeaderName::from_static("x-litellm-response-cost");

/// A deployment's own header values, built with its target.
#[derive(Debug, Clone)]
pub struct DeploymentHeaders {
    id: Option<HeaderValue>,
    group: Option<HeaderValue>,
    api_base: Option<HeaderValue>,
}

impl DeploymentHeaders {
    pub fn new(id: &str, group: &str, api_base: &str) -> Self {
        // A value that cannot be a header (a control character in a
        // configured name) is left out rather than failing the response.
        let value = |s: &str| HeaderValue::from_str(s).ok();
        DeploymentHeaders {
            id: value(id),
            group: value(group),
            api_base: value(api_base),
        }
    }
}

fn count(n: u32) -> HeaderValue {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match SMALL.get(n as usize) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(n),
    }
}

/// A formatted value, written on the stack rather than a heap string (a
/// header value copies its bytes anyway) unless it is long.
fn formatted(args: std::fmt::Arguments<'_>) -> Option<HeaderValue> {
    use std::io::Write as _;
    let mut buf = [0u8; 48];
    let mut w = &mut buf[..];
    match w.write_fmt(args) {
        Ok(()) => {
            let len = 48 - w.len();
            HeaderValue::from_bytes(&buf[..len]).ok()
        }
        Err(_) => HeaderValue::from_str(&args.to_string()).ok(),
    }
}

/// Milliseconds with three decimals.
fn millis(d: Duration) -> HeaderValue {
    let micros = d.as_micros();
    formatted(format_args!("{}.{:03}", micros / 1000, micros % 1000))
        .unwrap_or(HeaderValue::from_static("0.000"))
}

fn put(resp: &mut HttpResponseBuilder, name: HeaderName, value: Option<HeaderValue>) {
    if let Some(v) = value {
        resp.insert_header((name, v));
    }
}

/// Writes the headers of an answered request on `resp`.
pub fn write(
    resp: &mut HttpResponseBuilder,
    record: &RequestRecord,
    target: &DeploymentTarget,
    limits: Option<&RateLimitInfo>,
    cost: Option<f64>,
) {
    let overhead = record.started.elapsed().saturating_sub(record.upstream);
    let retries = count(record.attempts.saturating_sub(1));
    let fallbacks = count(record.fallbacks);
    let own = &target.reply_headers;
    put(
        resp,
        REQUEST_ID,
        HeaderValue::from_str(&record.request_id).ok(),
    );
    put(resp, DEPLOYMENT, own.id.clone());
    put(resp, ATTEMPTS, Some(count(record.attempts)));
    put(resp, RETRIES, Some(retries.clone()));
    put(resp, OVERHEAD_MS, Some(millis(overhead)));
    // LiteLLM's names, for clients written against it.
    put(
        resp,
        LITELLM_CALL_ID,
        HeaderValue::from_str(&record.call_id).ok(),
    );
    put(resp, LITELLM_MODEL_ID, own.id.clone());
    put(resp, LITELLM_MODEL_GROUP, own.group.clone());
    put(resp, LITELLM_API_BASE, own.api_base.clone());
    put(resp, LITELLM_RETRIES, Some(retries));
    put(resp, FALLBACKS, Some(fallbacks.clone()));
    put(resp, LITELLM_FALLBACKS, Some(fallbacks));
    if let Some(cost) = cost {
        put(resp, COST, formatted(format_args!("{cost:.10}")));
        if cost > 0.0 {
            // The string becomes the value's bytes as it is, uncopied.
            let python = bytes::Bytes::from(python_float(cost));
            put(
                resp,
                LITELLM_COST,
                HeaderValue::from_maybe_shared(python).ok(),
            );
        }
    }
    if let Some(info) = limits {
        for (k, v) in rate_limit_headers(info) {
            resp.insert_header((k, v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_is_written_in_milliseconds_with_three_decimals() {
        assert_eq!(millis(Duration::from_micros(0)), "0.000");
        assert_eq!(millis(Duration::from_micros(1_234)), "1.234");
        assert_eq!(millis(Duration::from_micros(12_345_678)), "12345.678");
        assert_eq!(millis(Duration::from_nanos(999)), "0.000");
    }

    #[test]
    fn a_value_longer_than_the_stack_buffer_is_still_written() {
        let cost = 1e40_f64;
        let v = formatted(format_args!("{cost:.10}")).unwrap();
        assert_eq!(v.to_str().unwrap(), format!("{cost:.10}"));
        assert_eq!(
            formatted(format_args!("{:.10}", 0.25)).unwrap(),
            "0.2500000000"
        );
    }

    #[test]
    fn counts_are_plain_decimals() {
        assert_eq!(count(0), "0");
        assert_eq!(count(9), "9");
        assert_eq!(count(10), "10");
        assert_eq!(count(4321), "4321");
    }

    #[test]
    fn a_deployment_value_that_cannot_be_a_header_is_left_out() {
        let h = DeploymentHeaders::new("dep-1", "gpt\n4", "http://x");
        assert_eq!(h.id.as_ref().unwrap(), "dep-1");
        assert!(h.group.is_none());
    }
}
