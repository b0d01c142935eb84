//! OpenAI and OpenAI-compatible upstreams (vLLM, Ollama, …): the body out is
//! the body in with `model` swapped and, for streams, usage requested.

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::sse::SseDecoder;
pub use super::StreamStep;
use super::{AnswerCtx, Endpoint, Usage};
use crate::error::UpstreamError;
use crate::request::InferenceRequest;

/// The upstream body for one attempt: every field of the client's body,
/// unchanged and in order, except `model` (the deployment's own name) and,
/// for streams, `stream_options.include_usage = true` so spend can be counted.
pub fn upstream_body(req: &InferenceRequest, upstream_model: &str) -> Bytes {
    let fields = &req.body.0;
    let mut out = Vec::with_capacity(
        fields
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum::<usize>()
            + upstream_model.len()
            + 48,
    );
    out.push(b'{');
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !first {
            out.push(b',');
        }
        first = false;
    };
    for (k, v) in fields {
        match k.as_str() {
            "model" => continue,
            "stream_options" if req.stream => continue,
            // The gateway's own deadline and fallbacks, not provider
            // parameters.
            "timeout" | "fallbacks" | "num_retries" | "tags" => continue,
            _ => {}
        }
        sep(&mut out);
        let _ = serde_json::to_writer(&mut out, k);
        out.push(b':');
        out.extend_from_slice(v.get().as_bytes());
    }
    sep(&mut out);
    out.extend_from_slice(b"\"model\":");
    let _ = serde_json::to_writer(&mut out, upstream_model);
    if req.stream {
        sep(&mut out);
        out.extend_from_slice(b"\"stream_options\":");
        out.extend_from_slice(stream_options_with_usage(req.body.get("stream_options")).as_bytes());
    }
    out.push(b'}');
    Bytes::from(out)
}

/// The client's `stream_options` with `include_usage` forced on, keeping any
/// other options it set.
fn stream_options_with_usage(original: Option<&RawValue>) -> String {
    let mut map = original
        .and_then(|v| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(v.get()).ok()
        })
        .unwrap_or_default();
    map.insert("include_usage".into(), serde_json::Value::Bool(true));
    serde_json::Value::Object(map).to_string()
}

/// Token usage of a complete (non-stream) response body. The parse doubles
/// as validation of the shape the endpoint promises: a truncated or
/// non-JSON 2xx body (a dropped connection can look like an empty
/// success), or JSON that is not a completion (`choices` / `data` missing
/// or not a list), is an error to retry elsewhere, not an answer.
pub fn usage_from_body(endpoint: Endpoint, body: &[u8]) -> Result<Option<Usage>, String> {
    answer_from_body(endpoint, body).map(|(usage, _)| usage)
}

/// [`usage_from_body`], and where the answer's `choices` list is in
/// `body` (completions only): the log destinations read the answer's text
/// from there instead of parsing the whole body a second time.
pub fn answer_from_body(
    endpoint: Endpoint,
    body: &[u8],
) -> Result<(Option<Usage>, Option<Range<usize>>), String> {
    #[derive(Deserialize)]
    struct Shape<'a> {
        #[serde(borrow)]
        choices: Option<&'a RawValue>,
        #[serde(borrow)]
        data: Option<&'a RawValue>,
        usage: Option<Usage>,
    }
    let shape = serde_json::from_slice::<Shape>(body)
        .map_err(|e| format!("the upstream sent an invalid JSON body: {e}"))?;
    let (field, list) = match endpoint {
        Endpoint::ChatCompletions | Endpoint::Completions => ("choices", shape.choices),
        Endpoint::Embeddings => ("data", shape.data),
    };
    let Some(list) = list.filter(|v| v.get().starts_with('[')) else {
        return Err(format!(
            "the upstream's answer has no `{field}` list: it is not a {} response",
            endpoint.label()
        ));
    };
    // The raw value borrows from `body`: its offset is where it starts.
    let choices = (field == "choices").then(|| {
        let start = list.get().as_ptr() as usize - body.as_ptr() as usize;
        start..start + list.get().len()
    });
    Ok((shape.usage, choices))
}

pub const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

/// A value's JSON as one SSE event, serialized straight into the frame
/// (one buffer per event, not a JSON buffer copied into a frame).
pub fn sse_json_frame<T: serde::Serialize + ?Sized>(value: &T) -> Bytes {
    let mut frame = Vec::with_capacity(192);
    frame.extend_from_slice(b"data: ");
    // Writing to a Vec fails only for values that cannot be JSON (maps
    // with non-string keys), which the translators never build.
    let _ = serde_json::to_writer(&mut frame, value);
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

pub fn sse_frame(data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Translates one upstream `data:` payload. The usage chunk (empty
/// `choices`, non-null `usage`) is passed on only if the client asked for it:
/// the gateway asks for usage on every stream to count spend.
pub fn stream_step(data: &[u8], client_wants_usage: bool) -> StreamStep {
    if data == b"[DONE]" {
        return StreamStep::Done(Bytes::from_static(DONE_EVENT));
    }
    // JSON, and UTF-8 throughout: serde skips string contents unchecked
    // when it ignores them, and a client decoding the event would not.
    let valid = std::str::from_utf8(data)
        .is_ok_and(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok());
    if !valid {
        return StreamStep::Invalid;
    }
    // Cheap pre-check: only chunks mentioning usage are parsed.
    if memchr::memmem::find(data, b"\"usage\"").is_some() {
        #[derive(Deserialize)]
        struct Chunk<'a> {
            usage: Option<Usage>,
            #[serde(borrow)]
            choices: Option<&'a RawValue>,
        }
        if let Ok(Chunk {
            usage: Some(usage),
            choices,
        }) = serde_json::from_slice::<Chunk>(data)
        {
            let usage_only = choices.is_none_or(|c| {
                let s = c.get().as_bytes();
                s.len() >= 2 && s[1..s.len() - 1].iter().all(u8::is_ascii_whitespace)
            });
            let forward = if client_wants_usage || !usage_only {
                Some(sse_frame(data))
            } else {
                None
            };
            return StreamStep::Usage { usage, forward };
        }
    }
    StreamStep::Forward(sse_frame(data))
}

/// An OpenAI stream: SSE events passed on one by one (see [`stream_step`]).
pub struct StreamState {
    sse: SseDecoder,
    wants_usage: bool,
}

impl StreamState {
    pub fn new(ctx: AnswerCtx) -> StreamState {
        StreamState {
            sse: SseDecoder::new(),
            wants_usage: ctx.wants_usage,
        }
    }

    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<StreamStep>) -> Result<(), String> {
        self.sse.push(chunk);
        while let Some(ev) = self.sse.next_event().map_err(|_| TOO_LARGE.to_string())? {
            let step = stream_step(&ev, self.wants_usage);
            let end = matches!(step, StreamStep::Done(_) | StreamStep::Invalid);
            out.push(step);
            if end {
                break;
            }
        }
        Ok(())
    }

    /// Only `[DONE]` ends an OpenAI stream well; a last event without its
    /// blank line is still read.
    pub fn finish(&mut self, out: &mut Vec<StreamStep>) -> Result<(), String> {
        if let Some(ev) = self.sse.finish() {
            let step = stream_step(&ev, self.wants_usage);
            if matches!(step, StreamStep::Done(_)) {
                out.push(step);
                return Ok(());
            }
            out.push(step);
        }
        Err("the upstream closed the stream before it was complete".into())
    }
}

pub const TOO_LARGE: &str = "an upstream stream event was too large";

/// Maps an upstream error response to the error the client sees: the
/// upstream's status and message, in OpenAI's shape.
pub fn parse_error(status: u16, retry_after: Option<Duration>, body: &[u8]) -> UpstreamError {
    #[derive(Deserialize)]
    struct Detail {
        message: Option<serde_json::Value>,
        #[serde(rename = "type")]
        kind: Option<String>,
        param: Option<serde_json::Value>,
        code: Option<serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct Wrapped {
        error: Detail,
    }
    fn text(v: Option<serde_json::Value>) -> Option<String> {
        match v? {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s),
            other => Some(other.to_string()),
        }
    }
    // OpenAI wraps in {"error":{…}}; vLLM and others answer the detail bare.
    let detail = serde_json::from_slice::<Wrapped>(body)
        .map(|w| w.error)
        .or_else(|_| serde_json::from_slice::<Detail>(body));
    match detail {
        Ok(d) if d.message.is_some() => UpstreamError {
            status,
            message: text(d.message).unwrap_or_default(),
            error_type: d.kind,
            param: text(d.param),
            code: text(d.code),
            retry_after,
        },
        _ => {
            let raw = String::from_utf8_lossy(body);
            let snippet: String = raw.trim().chars().take(500).collect();
            UpstreamError {
                status,
                message: if snippet.is_empty() {
                    format!("upstream returned HTTP {status}")
                } else {
                    format!("upstream returned HTTP {status}: {snippet}")
                },
                error_type: None,
                param: None,
                code: None,
                retry_after,
            }
        }
    }
}

/// Longest wait an upstream may ask for. Its hint feeds sleeps and
/// cooldowns; a hostile or broken value (`1e20`) must not overflow them,
/// and nothing useful waits longer than this anyway.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `retry-after` (seconds or an HTTP date) and OpenAI's `retry-after-ms`,
/// clamped to `0..=MAX_RETRY_AFTER` here, where they are parsed, so no
/// later arithmetic has to distrust them.
pub fn retry_after(retry_after: Option<&str>, retry_after_ms: Option<&str>) -> Option<Duration> {
    let clamp = |secs: f64| -> Option<Duration> {
        if secs.is_nan() || secs < 0.0 {
            return None;
        }
        Some(Duration::from_secs_f64(
            secs.min(MAX_RETRY_AFTER.as_secs_f64()),
        ))
    };
    if let Some(ms) = retry_after_ms.and_then(|v| v.trim().parse::<f64>().ok()) {
        if let Some(d) = clamp(ms / 1000.0) {
            return Some(d);
        }
    }
    let v = retry_after?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return clamp(secs);
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let secs = (at.timestamp_millis() - chrono::Utc::now().timestamp_millis()) as f64 / 1000.0;
    clamp(secs.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Endpoint;

    fn req(body: &str) -> InferenceRequest {
        InferenceRequest::parse(Endpoint::ChatCompletions, body.as_bytes()).unwrap()
    }

    fn json(b: &[u8]) -> serde_json::Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn swaps_model_and_keeps_everything_else() {
        let r = req(
            r#"{"model":"public","messages":[{"role":"user","content":"hi"}],"seed":7,"tools":[{"type":"function"}]}"#,
        );
        let out = json(&upstream_body(&r, "gpt-4o-2024-08-06"));
        assert_eq!(out["model"], "gpt-4o-2024-08-06");
        assert_eq!(out["seed"], 7);
        assert_eq!(out["tools"][0]["type"], "function");
        assert!(out.get("stream_options").is_none());
    }

    #[test]
    fn streams_always_ask_for_usage_and_keep_other_stream_options() {
        let r = req(
            r#"{"model":"m","messages":[{}],"stream":true,"stream_options":{"include_obfuscation":false}}"#,
        );
        let out = json(&upstream_body(&r, "x"));
        assert_eq!(out["stream_options"]["include_usage"], true);
        assert_eq!(out["stream_options"]["include_obfuscation"], false);
        assert!(!r.client_wants_usage);
    }

    #[test]
    fn usage_of_a_documented_chat_completion() {
        // Shape from OpenAI's API reference for POST /v1/chat/completions.
        let body = br#"{"id":"chatcmpl-123","object":"chat.completion","created":1677652288,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how may I assist you today?"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"completion_tokens_details":{"reasoning_tokens":0}}}"#;
        assert_eq!(
            usage_from_body(Endpoint::ChatCompletions, body).unwrap(),
            Some(Usage::new(9, 12))
        );
        // Cached prompt tokens and reasoning tokens are read from the details.
        let body = br#"{"choices":[],"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920},"completion_tokens_details":{"reasoning_tokens":200}}}"#;
        let u = usage_from_body(Endpoint::ChatCompletions, body)
            .unwrap()
            .unwrap();
        assert_eq!((u.cached_tokens, u.reasoning_tokens), (1920, 200));
    }

    #[test]
    fn absurd_or_null_token_counts_are_clamped() {
        let body = br#"{"choices":[],"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":null}}"#;
        let u = usage_from_body(Endpoint::ChatCompletions, body)
            .unwrap()
            .unwrap();
        assert_eq!(u.prompt_tokens, crate::providers::MAX_TOKENS);
        assert_eq!(u.completion_tokens, 0);
    }

    #[test]
    fn truncated_or_empty_bodies_are_errors() {
        let chat = Endpoint::ChatCompletions;
        assert!(usage_from_body(chat, b"").is_err());
        assert!(usage_from_body(chat, br#"{"id":"x","choices":[{"#).is_err());
        assert_eq!(
            usage_from_body(chat, br#"{"id":"x","choices":[]}"#),
            Ok(None)
        );
    }

    #[test]
    fn the_answer_says_where_its_choices_are() {
        let body = br#"{"id":"x", "choices" : [{"message":{"content":"hi"}}],"usage":null}"#;
        let (_, at) = answer_from_body(Endpoint::ChatCompletions, body).unwrap();
        assert_eq!(
            &body[at.unwrap()],
            br#"[{"message":{"content":"hi"}}]"#.as_slice()
        );
        let emb = br#"{"data":[{"embedding":[0.5]}]}"#;
        assert_eq!(
            answer_from_body(Endpoint::Embeddings, emb),
            Ok((None, None))
        );
    }

    #[test]
    fn json_that_is_not_the_promised_answer_is_an_error() {
        let chat = Endpoint::ChatCompletions;
        assert!(usage_from_body(chat, br#"{"id":"x"}"#).is_err());
        assert!(usage_from_body(chat, br#"{"choices":{"a":1}}"#).is_err());
        assert!(usage_from_body(chat, br#"[1,2]"#).is_err());
        assert!(usage_from_body(Endpoint::Embeddings, br#"{"choices":[]}"#).is_err());
        assert!(usage_from_body(Endpoint::Embeddings, br#"{"data":[]}"#).is_ok());
    }

    #[test]
    fn a_non_json_stream_event_is_never_forwarded() {
        assert_eq!(
            stream_step(b"<html>oops</html>", false),
            StreamStep::Invalid
        );
        assert_eq!(
            stream_step(br#"{"choices": [trunc"#, true),
            StreamStep::Invalid
        );
    }

    #[test]
    fn documented_stream_chunk_by_chunk() {
        // OpenAI's streaming example with stream_options.include_usage.
        let chunks = [
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#,
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#,
            "[DONE]",
        ];
        let usage = Usage::new(9, 1);
        for wants in [false, true] {
            let steps: Vec<_> = chunks
                .iter()
                .map(|c| stream_step(c.as_bytes(), wants))
                .collect();
            for (i, s) in steps.iter().take(3).enumerate() {
                assert_eq!(*s, StreamStep::Forward(sse_frame(chunks[i].as_bytes())));
            }
            let expected_forward = wants.then(|| sse_frame(chunks[3].as_bytes()));
            assert_eq!(
                steps[3],
                StreamStep::Usage {
                    usage,
                    forward: expected_forward
                }
            );
            assert_eq!(steps[4], StreamStep::Done(Bytes::from_static(DONE_EVENT)));
        }
    }

    #[test]
    fn openai_error_body_is_kept() {
        let body = br#"{"error":{"message":"Rate limit reached for gpt-4o","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let e = parse_error(429, Some(Duration::from_secs(2)), body);
        assert_eq!(e.status, 429);
        assert_eq!(e.message, "Rate limit reached for gpt-4o");
        assert_eq!(e.code.as_deref(), Some("rate_limit_exceeded"));
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
    }

    #[test]
    fn bare_vllm_error_and_plain_text_are_understood() {
        let e = parse_error(400, None, br#"{"object":"error","message":"max_tokens too large","type":"BadRequestError","param":null,"code":400}"#);
        assert_eq!(e.message, "max_tokens too large");
        assert_eq!(e.code.as_deref(), Some("400"));
        let e = parse_error(502, None, b"<html>Bad Gateway</html>");
        assert!(e.message.contains("502") && e.message.contains("Bad Gateway"));
    }

    #[test]
    fn retry_after_prefers_milliseconds() {
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        assert_eq!(secs(retry_after(Some("3"), Some("1500"))), Some(1.5));
        assert_eq!(secs(retry_after(Some("3"), None)), Some(3.0));
        assert_eq!(retry_after(Some("soon"), None), None);
    }

    #[test]
    fn absurd_retry_after_values_are_clamped_not_trusted() {
        let max = Some(MAX_RETRY_AFTER);
        assert_eq!(retry_after(Some("1e20"), None), max);
        assert_eq!(retry_after(None, Some("1e23")), max);
        assert_eq!(retry_after(Some("inf"), None), max);
        assert_eq!(retry_after(Some("-5"), None), None);
        assert_eq!(retry_after(Some("NaN"), None), None);
        // A bad millisecond value falls back to the seconds header.
        assert_eq!(
            retry_after(Some("2"), Some("-1")),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn retry_after_as_an_http_date() {
        let past = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert_eq!(retry_after(Some(past), None), Some(Duration::ZERO));
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let d = retry_after(Some(&soon), None).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
    }
}
