//! Parsing an inference request once: read the few fields the gateway acts
//! on, keep every other top-level field as raw JSON, and rebuild the body for
//! an upstream with at most `model` and `stream_options` changed.

use std::fmt;
use std::time::Duration;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::GatewayError;
use crate::providers::Endpoint;

/// A JSON object whose values stay unparsed, in their original order.
#[derive(Debug, Default)]
pub struct RawObject(pub Vec<(String, Box<RawValue>)>);

impl RawObject {
    pub fn get(&self, key: &str) -> Option<&RawValue> {
        // Last one wins, as in most JSON parsers.
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// Replaces every occurrence of `key` (or appends it).
    pub fn set(&mut self, key: &str, value: Box<RawValue>) {
        self.0.retain(|(k, _)| k != key);
        self.0.push((key.to_string(), value));
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let len = self
            .0
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum::<usize>()
            + 2;
        let mut out = Vec::with_capacity(len);
        out.push(b'{');
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Writing a string into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, k);
            out.push(b':');
            out.extend_from_slice(v.get().as_bytes());
        }
        out.push(b'}');
        out
    }
}

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    fields.push((k, v));
                }
                Ok(RawObject(fields))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonKind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

fn kind(v: &RawValue) -> JsonKind {
    match v.get().as_bytes().first() {
        Some(b'n') => JsonKind::Null,
        Some(b't' | b'f') => JsonKind::Bool,
        Some(b'"') => JsonKind::String,
        Some(b'[') => JsonKind::Array,
        Some(b'{') => JsonKind::Object,
        _ => JsonKind::Number,
    }
}

/// An inference request, validated for its endpoint.
#[derive(Debug)]
pub struct InferenceRequest {
    pub endpoint: Endpoint,
    pub model: String,
    pub stream: bool,
    /// The client itself asked for the usage chunk at the end of a stream.
    pub client_wants_usage: bool,
    pub user: Option<String>,
    /// `max_completion_tokens` or `max_tokens`: bounds the cost reserved
    /// against budgets before the request runs.
    pub max_tokens: Option<u64>,
    /// The caller's own deadline for the whole request (`timeout`, seconds,
    /// as LiteLLM takes it); never forwarded upstream.
    pub timeout: Option<Duration>,
    /// The caller's own fallback groups (`fallbacks`, LiteLLM's name);
    /// never forwarded upstream.
    pub fallbacks: Vec<String>,
    /// The caller's own retry count per model group (`num_retries`,
    /// LiteLLM's name), at most `MAX_NUM_RETRIES`; never forwarded.
    pub num_retries: Option<u32>,
    /// Routing tags (`tags`, or `metadata.tags`), LiteLLM's tag routing;
    /// never forwarded.
    pub tags: Vec<String>,
    pub body: RawObject,
}

/// Most retries a request may ask for on one model group.
pub const MAX_NUM_RETRIES: u32 = 10;

/// Deepest nesting of arrays and objects a request may have. The body's
/// unknown fields are kept raw, and serde skips raw values without counting
/// depth: without this, a 100,000-deep array would be accepted and sent on.
pub const MAX_JSON_DEPTH: usize = 128;

/// Longest `timeout` a request may ask for.
const MAX_REQUEST_TIMEOUT_SECS: f64 = 86_400.0;

/// Does `bytes` nest arrays/objects deeper than `max`? One pass, no
/// allocation; strings (and escaped quotes in them) are skipped.
pub fn nests_deeper_than(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

fn invalid(message: impl Into<String>, param: &'static str) -> GatewayError {
    GatewayError::invalid(message, Some(param))
}

impl InferenceRequest {
    pub fn parse(endpoint: Endpoint, bytes: &[u8]) -> Result<Self, GatewayError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(GatewayError::invalid(
                "The request body is empty; expected a JSON object.",
                None,
            ));
        }
        if nests_deeper_than(bytes, MAX_JSON_DEPTH) {
            return Err(GatewayError::invalid(
                format!("The request body nests JSON deeper than {MAX_JSON_DEPTH} levels."),
                None,
            ));
        }
        let body: RawObject = serde_json::from_slice(bytes).map_err(|e| {
            GatewayError::invalid(format!("The request body is not valid JSON: {e}"), None)
        })?;

        let model = match body.get("model") {
            None => return Err(invalid("you must provide a model parameter", "model")),
            Some(v) if kind(v) == JsonKind::String => {
                let s: String = serde_json::from_str(v.get())
                    .map_err(|_| invalid("`model` must be a string", "model"))?;
                if s.trim().is_empty() {
                    return Err(invalid("`model` must not be empty", "model"));
                }
                s
            }
            Some(_) => return Err(invalid("`model` must be a string", "model")),
        };

        let stream = match body.get("stream") {
            None => false,
            Some(v) => match kind(v) {
                JsonKind::Null => false,
                JsonKind::Bool => v.get() == "true",
                _ => return Err(invalid("`stream` must be a boolean", "stream")),
            },
        };
        if stream && !endpoint.can_stream() {
            return Err(invalid(
                "this endpoint does not support streaming",
                "stream",
            ));
        }

        let client_wants_usage = match body.get("stream_options") {
            None => false,
            Some(v) => match kind(v) {
                JsonKind::Null => false,
                JsonKind::Object => {
                    #[derive(Deserialize)]
                    struct StreamOptions {
                        include_usage: Option<bool>,
                    }
                    let o: StreamOptions = serde_json::from_str(v.get()).map_err(|_| {
                        invalid(
                            "`stream_options.include_usage` must be a boolean",
                            "stream_options",
                        )
                    })?;
                    o.include_usage.unwrap_or(false)
                }
                _ => {
                    return Err(invalid(
                        "`stream_options` must be an object",
                        "stream_options",
                    ))
                }
            },
        };

        for (field, param) in [
            ("max_tokens", "max_tokens"),
            ("max_completion_tokens", "max_completion_tokens"),
            ("n", "n"),
        ] {
            if let Some(v) = body.get(field) {
                if !matches!(kind(v), JsonKind::Null | JsonKind::Number) {
                    return Err(invalid(format!("`{field}` must be an integer"), param));
                }
            }
        }

        let user = match body.get("user") {
            None => None,
            Some(v) if kind(v) == JsonKind::Null => None,
            Some(v) if kind(v) == JsonKind::String => serde_json::from_str(v.get()).ok(),
            Some(_) => return Err(invalid("`user` must be a string", "user")),
        };

        let max_tokens = ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|f| body.get(f))
            .and_then(|v| serde_json::from_str::<f64>(v.get()).ok())
            .filter(|n| n.is_finite() && *n >= 0.0)
            .map(|n| n.min(1e12) as u64);
        let timeout = match body.get("timeout") {
            None => None,
            Some(v) if kind(v) == JsonKind::Null => None,
            Some(v) => {
                let secs: f64 = serde_json::from_str(v.get())
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| {
                        invalid("`timeout` must be a positive number of seconds", "timeout")
                    })?;
                Some(Duration::from_secs_f64(secs.min(MAX_REQUEST_TIMEOUT_SECS)))
            }
        };

        let fallbacks = match body.get("fallbacks") {
            None => Vec::new(),
            Some(v) if kind(v) == JsonKind::Null => Vec::new(),
            Some(v) => serde_json::from_str::<Vec<String>>(v.get())
                .ok()
                .filter(|list| list.len() <= 16)
                .ok_or_else(|| {
                    invalid(
                        "`fallbacks` must be a list of at most 16 model names",
                        "fallbacks",
                    )
                })?,
        };

        let num_retries = match body.get("num_retries") {
            None => None,
            Some(v) if kind(v) == JsonKind::Null => None,
            Some(v) => Some(
                serde_json::from_str::<u32>(v.get())
                    .ok()
                    .filter(|n| *n <= MAX_NUM_RETRIES)
                    .ok_or_else(|| {
                        invalid(
                            "`num_retries` must be a whole number from 0 to 10",
                            "num_retries",
                        )
                    })?,
            ),
        };

        let tags_invalid = || invalid("`tags` must be a list of at most 16 strings", "tags");
        let tags: Vec<String> = match body.get("tags") {
            Some(v) if kind(v) != JsonKind::Null => serde_json::from_str::<Vec<String>>(v.get())
                .ok()
                .filter(|list| list.len() <= 16)
                .ok_or_else(tags_invalid)?,
            // LiteLLM also reads them from `metadata.tags`; parsed only
            // when the metadata mentions them at all.
            _ => match body.get("metadata") {
                Some(m) if kind(m) == JsonKind::Object && m.get().contains("\"tags\"") => {
                    #[derive(serde::Deserialize)]
                    struct MetadataTags {
                        #[serde(default)]
                        tags: Option<Vec<String>>,
                    }
                    serde_json::from_str::<MetadataTags>(m.get())
                        .ok()
                        .map(|m| m.tags.unwrap_or_default())
                        .filter(|list| list.len() <= 16)
                        .ok_or_else(tags_invalid)?
                }
                _ => Vec::new(),
            },
        };

        match endpoint {
            Endpoint::ChatCompletions => match body.get("messages") {
                None => return Err(invalid("you must provide a messages parameter", "messages")),
                Some(v) if kind(v) != JsonKind::Array => {
                    return Err(invalid("`messages` must be an array", "messages"))
                }
                Some(v) if is_empty_array(v) => {
                    return Err(invalid(
                        "`messages` must contain at least one message",
                        "messages",
                    ))
                }
                Some(_) => {}
            },
            Endpoint::Completions => match body.get("prompt") {
                None => return Err(invalid("you must provide a prompt parameter", "prompt")),
                Some(v) if !matches!(kind(v), JsonKind::String | JsonKind::Array) => {
                    return Err(invalid("`prompt` must be a string or an array", "prompt"))
                }
                Some(_) => {}
            },
            Endpoint::Embeddings => match body.get("input") {
                None => return Err(invalid("you must provide an input parameter", "input")),
                Some(v) if !matches!(kind(v), JsonKind::String | JsonKind::Array) => {
                    return Err(invalid("`input` must be a string or an array", "input"))
                }
                Some(v) if is_empty_array(v) => {
                    return Err(invalid("`input` must not be empty", "input"))
                }
                Some(_) => {}
            },
        }

        Ok(InferenceRequest {
            endpoint,
            model,
            stream,
            client_wants_usage,
            user,
            max_tokens,
            timeout,
            fallbacks,
            num_retries,
            tags,
            body,
        })
    }
}

fn is_empty_array(v: &RawValue) -> bool {
    let s = v.get().as_bytes();
    s.len() >= 2 && s[1..s.len() - 1].iter().all(u8::is_ascii_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(endpoint: Endpoint, s: &str) -> Result<InferenceRequest, GatewayError> {
        InferenceRequest::parse(endpoint, s.as_bytes())
    }

    fn param_of(e: GatewayError) -> Option<&'static str> {
        match e {
            GatewayError::InvalidRequest { param, .. } => param,
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
    }

    #[test]
    fn reads_gateway_fields_and_keeps_the_rest_raw() {
        let r = parse(
            Endpoint::ChatCompletions,
            r#"{"model":"gpt","messages":[{"role":"user","content":"hi"}],"stream":true,
                "stream_options":{"include_usage":true},"temperature":0.2,"x_vendor":{"a":[1,2]}}"#,
        )
        .unwrap();
        assert_eq!(r.model, "gpt");
        assert!(r.stream && r.client_wants_usage);
        assert_eq!(r.body.get("x_vendor").unwrap().get(), r#"{"a":[1,2]}"#);
    }

    #[test]
    fn round_trips_unknown_fields_byte_for_byte() {
        let src = r#"{"model":"m","messages":[{"role":"user","content":"h\u00e9\"q"}],"logit_bias":{"50256":-100}}"#;
        let r = parse(Endpoint::ChatCompletions, src).unwrap();
        assert_eq!(String::from_utf8(r.body.to_bytes()).unwrap(), src);
    }

    #[test]
    fn bad_inputs_name_the_parameter() {
        let cases = [
            (
                r#"{"messages":[{"role":"user","content":"x"}]}"#,
                Some("model"),
            ),
            (r#"{"model":3,"messages":[]}"#, Some("model")),
            (r#"{"model":"m","messages":"hi"}"#, Some("messages")),
            (r#"{"model":"m","messages":[]}"#, Some("messages")),
            (
                r#"{"model":"m","messages":[{}],"stream":"yes"}"#,
                Some("stream"),
            ),
            (
                r#"{"model":"m","messages":[{}],"max_tokens":"10"}"#,
                Some("max_tokens"),
            ),
            (r#"{"model":"m","messages":[{}],"user":5}"#, Some("user")),
            (
                r#"{"model":"m","messages":[{}],"timeout":"soon"}"#,
                Some("timeout"),
            ),
            (
                r#"{"model":"m","messages":[{}],"timeout":-1}"#,
                Some("timeout"),
            ),
            (r#"{"model":"m""#, None),
            (r#"[1,2]"#, None),
            ("", None),
        ];
        for (body, param) in cases {
            let e = parse(Endpoint::ChatCompletions, body).unwrap_err();
            assert_eq!(param_of(e), param, "{body}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_but_brackets_in_strings_do_not_count() {
        let deep = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"x":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(parse(Endpoint::ChatCompletions, &deep).is_err());
        let brackets = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"{}\"{}"}}]}}"#,
            "[".repeat(500),
            "{".repeat(500)
        );
        assert!(parse(Endpoint::ChatCompletions, &brackets).is_ok());
        assert!(!nests_deeper_than(br#"{"a":[[[]]]}"#, 4));
        assert!(nests_deeper_than(br#"{"a":[[[{}]]]}"#, 4));
    }

    #[test]
    fn timeout_is_read_and_clamped() {
        let r = parse(
            Endpoint::ChatCompletions,
            r#"{"model":"m","messages":[{}],"timeout":1e300}"#,
        )
        .unwrap();
        assert_eq!(r.timeout, Some(Duration::from_secs(86_400)));
        let r = parse(
            Endpoint::ChatCompletions,
            r#"{"model":"m","messages":[{}],"timeout":2.5}"#,
        )
        .unwrap();
        assert_eq!(r.timeout, Some(Duration::from_millis(2500)));
    }

    #[test]
    fn embeddings_need_input_and_cannot_stream() {
        assert_eq!(
            param_of(parse(Endpoint::Embeddings, r#"{"model":"e"}"#).unwrap_err()),
            Some("input")
        );
        assert_eq!(
            param_of(
                parse(
                    Endpoint::Embeddings,
                    r#"{"model":"e","input":"x","stream":true}"#
                )
                .unwrap_err()
            ),
            Some("stream")
        );
        assert!(parse(Endpoint::Embeddings, r#"{"model":"e","input":["a","b"]}"#).is_ok());
    }

    #[test]
    fn completions_need_a_prompt() {
        assert!(parse(Endpoint::Completions, r#"{"model":"m","prompt":"once"}"#).is_ok());
        assert_eq!(
            param_of(parse(Endpoint::Completions, r#"{"model":"m"}"#).unwrap_err()),
            Some("prompt")
        );
    }
}
