//! Per-request behaviour: headers > body `mock` field > run-time defaults.

use std::str::FromStr;

use actix_web::http::header::{HeaderMap, HeaderName};
use serde::Deserialize;

use super::{Behaviour, Fault};

/// Content pieces when nothing says otherwise.
pub(crate) const DEFAULT_CHUNKS: usize = 5;

/// A fault selector that can also clear a default fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FaultSel {
    Drop,
    Hang,
    Cut,
    BadShape,
    Html,
    Garbage,
    GarbageMid,
    OverloadedMid,
    ThrottleMid,
    Safety,
    Blocked,
    None,
}

impl FaultSel {
    fn fault(self) -> Option<Fault> {
        match self {
            FaultSel::Drop => Some(Fault::Drop),
            FaultSel::Hang => Some(Fault::Hang),
            FaultSel::Cut => Some(Fault::Cut),
            FaultSel::BadShape => Some(Fault::BadShape),
            FaultSel::Html => Some(Fault::Html),
            FaultSel::Garbage => Some(Fault::Garbage),
            FaultSel::GarbageMid => Some(Fault::GarbageMid),
            FaultSel::OverloadedMid => Some(Fault::OverloadedMid),
            FaultSel::ThrottleMid => Some(Fault::ThrottleMid),
            FaultSel::Safety => Some(Fault::Safety),
            FaultSel::Blocked => Some(Fault::Blocked),
            FaultSel::None => None,
        }
    }
}

/// Behaviour fields that a request overrides; `None` = not given.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct BehaviourPatch {
    pub(crate) latency_ms: Option<u64>,
    pub(crate) status: Option<u16>,
    #[serde(deserialize_with = "text_or_number")]
    pub(crate) retry_after: Option<String>,
    #[serde(deserialize_with = "text_or_number")]
    pub(crate) retry_after_ms: Option<String>,
    pub(crate) chunks: Option<usize>,
    pub(crate) chunk_interval_ms: Option<u64>,
    pub(crate) fault: Option<FaultSel>,
    /// Error flavour of an injected status (`"context"`: the provider's
    /// "prompt too long" error with a 400).
    pub(crate) error: Option<String>,
}

/// The behaviour that applies to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Effective {
    pub(crate) latency_ms: u64,
    /// Only set for an error status (300..=599).
    pub(crate) status: Option<u16>,
    pub(crate) retry_after: Option<String>,
    pub(crate) retry_after_ms: Option<String>,
    pub(crate) chunks: usize,
    pub(crate) chunk_interval_ms: u64,
    pub(crate) fault: Option<Fault>,
    /// `x-mock-error` / body `mock.error`; only `"context"` means something.
    pub(crate) error: Option<String>,
}

impl Effective {
    fn from_defaults(b: &Behaviour) -> Self {
        Effective {
            latency_ms: b.latency_ms,
            status: b.status,
            retry_after: b.retry_after.clone(),
            retry_after_ms: b.retry_after_ms.clone(),
            chunks: b.chunks.unwrap_or(DEFAULT_CHUNKS),
            chunk_interval_ms: b.chunk_interval_ms,
            fault: b.fault,
            error: None,
        }
    }

    fn apply(&mut self, p: &BehaviourPatch) {
        if let Some(v) = p.latency_ms {
            self.latency_ms = v;
        }
        if let Some(v) = p.status {
            self.status = Some(v);
        }
        if let Some(v) = &p.retry_after {
            self.retry_after = Some(v.clone());
        }
        if let Some(v) = &p.retry_after_ms {
            self.retry_after_ms = Some(v.clone());
        }
        if let Some(v) = p.chunks {
            self.chunks = v;
        }
        if let Some(v) = p.chunk_interval_ms {
            self.chunk_interval_ms = v;
        }
        if let Some(v) = p.fault {
            self.fault = v.fault();
        }
        if let Some(v) = &p.error {
            self.error = Some(v.clone());
        }
    }

    /// A 2xx status means "no error"; other statuses must be 300..=599.
    fn normalise(mut self) -> Result<Self, String> {
        match self.status {
            Some(s) if (200..300).contains(&s) => self.status = None,
            Some(s) if !(300..600).contains(&s) => {
                return Err(format!("mock status {s} is out of range (200..=599)"))
            }
            _ => {}
        }
        Ok(self)
    }
}

static H_LATENCY: HeaderName = HeaderName::from_static("x-mock-latency-ms");
static H_STATUS: HeaderName = HeaderName::from_static("x-mock-status");
static H_RETRY_AFTER: HeaderName = HeaderName::from_static("x-mock-retry-after");
static H_RETRY_AFTER_MS: HeaderName = HeaderName::from_static("x-mock-retry-after-ms");
static H_CHUNKS: HeaderName = HeaderName::from_static("x-mock-chunks");
static H_INTERVAL: HeaderName = HeaderName::from_static("x-mock-chunk-interval-ms");
static H_FAULT: HeaderName = HeaderName::from_static("x-mock-fault");
static H_ERROR: HeaderName = HeaderName::from_static("x-mock-error");

fn header<T: FromStr>(headers: &HeaderMap, name: &HeaderName) -> Result<Option<T>, String> {
    let Some(v) = headers.get(name) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| format!("invalid value for header {name}"))
}

fn header_patch(headers: &HeaderMap) -> Result<BehaviourPatch, String> {
    let fault = match headers.get(&H_FAULT) {
        None => None,
        Some(v) => Some(
            match v.to_str().map(|s| s.trim().to_ascii_lowercase()).as_deref() {
                Ok("drop") => FaultSel::Drop,
                Ok("hang") => FaultSel::Hang,
                Ok("cut") => FaultSel::Cut,
                Ok("bad_shape") => FaultSel::BadShape,
                Ok("html") => FaultSel::Html,
                Ok("garbage") => FaultSel::Garbage,
                Ok("garbage_mid") => FaultSel::GarbageMid,
                Ok("overloaded_mid") => FaultSel::OverloadedMid,
                Ok("throttle_mid") => FaultSel::ThrottleMid,
                Ok("safety") => FaultSel::Safety,
                Ok("blocked") => FaultSel::Blocked,
                Ok("none") | Ok("") => FaultSel::None,
                _ => {
                    return Err("invalid value for header x-mock-fault (drop|hang|cut|bad_shape|html|garbage|garbage_mid|overloaded_mid|throttle_mid|safety|blocked|none)".into())
                }
            },
        ),
    };
    Ok(BehaviourPatch {
        latency_ms: header(headers, &H_LATENCY)?,
        status: header(headers, &H_STATUS)?,
        retry_after: header(headers, &H_RETRY_AFTER)?,
        retry_after_ms: header(headers, &H_RETRY_AFTER_MS)?,
        chunks: header(headers, &H_CHUNKS)?,
        chunk_interval_ms: header(headers, &H_INTERVAL)?,
        fault,
        error: header(headers, &H_ERROR)?,
    })
}

/// `"retry_after": 2` and `"retry_after": "1e20"` alike: the value is sent
/// as a header verbatim.
pub(crate) fn text_or_number<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

/// Merge defaults, the body's `mock` field and the `x-mock-*` headers.
pub(crate) fn resolve(
    defaults: &Behaviour,
    body: Option<&BehaviourPatch>,
    headers: &HeaderMap,
) -> Result<Effective, String> {
    let mut eff = Effective::from_defaults(defaults);
    if let Some(p) = body {
        eff.apply(p);
    }
    eff.apply(&header_patch(headers)?);
    eff.normalise()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    #[test]
    fn precedence_is_field_by_field() {
        let defaults = Behaviour {
            latency_ms: 5,
            status: Some(500),
            chunks: Some(3),
            ..Behaviour::default()
        };
        let body = BehaviourPatch {
            chunks: Some(9),
            chunk_interval_ms: Some(7),
            status: Some(200),
            ..BehaviourPatch::default()
        };
        let mut headers = HeaderMap::new();
        headers.insert(H_CHUNKS.clone(), HeaderValue::from_static("2"));
        headers.insert(H_FAULT.clone(), HeaderValue::from_static("Cut"));
        let eff = resolve(&defaults, Some(&body), &headers).unwrap();
        assert_eq!(eff.latency_ms, 5);
        assert_eq!(eff.status, None, "2xx in the body clears the default error");
        assert_eq!(eff.chunks, 2);
        assert_eq!(eff.chunk_interval_ms, 7);
        assert_eq!(eff.fault, Some(Fault::Cut));
    }

    #[test]
    fn bad_header_and_status_are_errors() {
        let mut headers = HeaderMap::new();
        headers.insert(H_LATENCY.clone(), HeaderValue::from_static("soon"));
        assert!(resolve(&Behaviour::default(), None, &headers).is_err());
        let mut headers = HeaderMap::new();
        headers.insert(H_STATUS.clone(), HeaderValue::from_static("700"));
        assert!(resolve(&Behaviour::default(), None, &headers).is_err());
        let mut headers = HeaderMap::new();
        headers.insert(H_FAULT.clone(), HeaderValue::from_static("none"));
        let defaults = Behaviour {
            fault: Some(Fault::Hang),
            ..Behaviour::default()
        };
        assert_eq!(resolve(&defaults, None, &headers).unwrap().fault, None);
    }
}
