//! The most recent inference request, kept for test assertions
//! (`GET /mock/last_request`, [`super::MockServer::last_request`]).
//!
//! Capturing is cheap (the body is a shared `Bytes`, the head is cloned);
//! the JSON is only built when someone asks for it.

use actix_web::http::header::HeaderMap;
use actix_web::http::Method;
use actix_web::HttpRequest;
use bytes::Bytes;
use serde_json::{Map, Value};

pub(crate) struct Captured {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Captured {
    pub(crate) fn new(req: &HttpRequest, body: &Bytes) -> Self {
        Captured {
            method: req.method().clone(),
            path: req.path().to_string(),
            query: req.query_string().to_string(),
            headers: req.headers().clone(),
            body: body.clone(),
        }
    }

    /// `{"method","path","query","headers":{name: value},"body"}` plus
    /// `"sigv4"` when the request carries an AWS SigV4 `authorization`.
    pub(crate) fn to_json(&self) -> Value {
        let mut headers = Map::new();
        for (name, value) in self.headers.iter() {
            let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
            match headers.get_mut(name.as_str()) {
                Some(Value::String(prev)) => {
                    prev.push_str(", ");
                    prev.push_str(&v);
                }
                _ => {
                    headers.insert(name.as_str().to_string(), Value::String(v));
                }
            }
        }
        let body = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        let mut out = Map::new();
        out.insert("method".into(), self.method.as_str().into());
        out.insert("path".into(), self.path.clone().into());
        out.insert("query".into(), self.query.clone().into());
        let sigv4 = headers
            .get("authorization")
            .and_then(Value::as_str)
            .and_then(parse_sigv4);
        out.insert("headers".into(), Value::Object(headers));
        out.insert("body".into(), body);
        if let Some(s) = sigv4 {
            out.insert("sigv4".into(), s);
        }
        Value::Object(out)
    }
}

/// `AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/bedrock/aws4_request,
/// SignedHeaders=host;x-amz-date, Signature=abc…` →
/// `{"credential","signed_headers","signature"}` (missing parts are null).
pub(crate) fn parse_sigv4(auth: &str) -> Option<Value> {
    let rest = auth.strip_prefix("AWS4-HMAC-SHA256")?;
    let mut out = Map::new();
    for key in ["credential", "signed_headers", "signature"] {
        out.insert(key.into(), Value::Null);
    }
    for part in rest.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        let key = match k.trim() {
            "Credential" => "credential",
            "SignedHeaders" => "signed_headers",
            "Signature" => "signature",
            _ => continue,
        };
        out.insert(key.into(), Value::String(v.trim().to_string()));
    }
    Some(Value::Object(out))
}
