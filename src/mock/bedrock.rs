//! AWS Bedrock Converse: `POST /model/{modelId}/converse` (JSON) and
//! `POST /model/{modelId}/converse-stream` (AWS event-stream binary
//! framing). See the module docs of `mock` for the contract.
//!
//! The CRC32 is written here by hand: `crc32fast` is in Cargo.lock only as
//! a dependency of `flate2`, not a dependency of this crate, and the mock
//! must not change Cargo.toml for one 256-entry table.

use std::fmt::Write as _;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::behaviour::BehaviourPatch;
use super::handlers::{
    gate, json_str, percent_decode, plan_length, read_turns, system_chars, tool_input_pieces,
    Dialect, JSON, TOOL_INPUT,
};
use super::stream::Script;
use super::wire::{push_json_str, push_piece, push_reply, tokens_for_chars};
use super::{bump, Fault, Shared};

pub(crate) const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";
pub(crate) const TOOL_USE_ID: &str = "tooluse_mock1";

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/model/{model}/converse", web::post().to(converse))
        .route(
            "/model/{model}/converse-stream",
            web::post().to(converse_stream),
        );
}

/// The `x-amzn-errortype` of a status.
pub(crate) fn error_type(status: u16) -> &'static str {
    match status {
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        400..=499 => "ValidationException",
        _ => "InternalServerException",
    }
}

/// `{"message":…}`.
pub(crate) fn error_body(message: &str) -> String {
    let mut out = String::with_capacity(16 + message.len());
    out.push_str(r#"{"message":"#);
    push_json_str(&mut out, message);
    out.push('}');
    out
}

/// A fresh `x-amzn-requestid`.
pub(crate) fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

// ------------------------------------------------------- event-stream frames

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE 802.3, reflected, as zlib / `crc32fast`).
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// One AWS event-stream message: prelude (total length, headers length,
/// prelude CRC; u32 big-endian each), headers (name length u8, name, type
/// 7 = string, value length u16 BE, value), payload, message CRC (over
/// everything before it). Names must be < 256 bytes, values < 64 KiB.
pub(crate) fn encode_frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let headers_len: usize = headers.iter().map(|(n, v)| 1 + n.len() + 3 + v.len()).sum();
    let total = 12 + headers_len + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(headers_len as u32).to_be_bytes());
    let prelude_crc = crc32(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    for (name, value) in headers {
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.push(7);
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// An `:message-type: event` frame with a JSON payload.
fn event(event_type: &str, payload: &str) -> Bytes {
    Bytes::from(encode_frame(
        &[
            (":event-type", event_type),
            (":content-type", JSON),
            (":message-type", "event"),
        ],
        payload.as_bytes(),
    ))
}

/// 16 bytes that are no valid frame (both CRCs wrong).
const GARBAGE: &[u8] = b"\x00\x00\x00\x10\x00\x00\x00\x00\xde\xad\xbe\xef\x00\x00\x00\x00";

// ------------------------------------------------------------------ requests

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct InferenceConfig {
    #[serde(default, rename = "maxTokens")]
    max_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct ToolItem {
    #[serde(default, rename = "toolSpec")]
    tool_spec: Option<Named>,
}

#[derive(Deserialize, Default)]
struct ToolChoice {
    #[serde(default)]
    any: Option<IgnoredAny>,
    #[serde(default)]
    tool: Option<Named>,
}

#[derive(Deserialize)]
struct ToolConfig {
    #[serde(default)]
    tools: Vec<ToolItem>,
    #[serde(default, rename = "toolChoice")]
    tool_choice: Option<ToolChoice>,
}

#[derive(Deserialize)]
struct ConverseReq<'a> {
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    #[serde(borrow)]
    system: Option<&'a RawValue>,
    #[serde(rename = "inferenceConfig")]
    inference_config: Option<InferenceConfig>,
    #[serde(rename = "toolConfig")]
    tool_config: Option<ToolConfig>,
    mock: Option<BehaviourPatch>,
}

enum Main {
    Text {
        total: usize,
        emit: usize,
    },
    /// Tool name as a JSON literal.
    Tool {
        name: String,
        pieces: Vec<&'static str>,
    },
}

struct Answer {
    main: Main,
    stop_reason: &'static str,
    input_tokens: u64,
    output_tokens: u64,
}

fn invalid(message: &str) -> HttpResponse {
    Dialect::Bedrock.error(400, message)
}

async fn converse(req: HttpRequest, body: web::Bytes, st: web::Data<Shared>) -> HttpResponse {
    handle(req, body, st, false).await
}

async fn converse_stream(
    req: HttpRequest,
    body: web::Bytes,
    st: web::Data<Shared>,
) -> HttpResponse {
    handle(req, body, st, true).await
}

fn authenticated(req: &HttpRequest) -> bool {
    let h = req.headers();
    let sigv4 = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256 Credential="));
    sigv4 && h.get("x-amz-date").is_some()
}

async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    st: web::Data<Shared>,
    streaming: bool,
) -> HttpResponse {
    st.capture(&req, &body);
    bump(&st.counters.requests);
    bump(&st.counters.bedrock);
    if !authenticated(&req) {
        return HttpResponse::Forbidden()
            .insert_header((CONTENT_TYPE, JSON))
            .insert_header(("x-amzn-errortype", "MissingAuthenticationTokenException"))
            .insert_header(("x-amzn-requestid", request_id()))
            .body(r#"{"message":"Missing Authentication Token"}"#);
    }
    // The model id is not checked beyond being present (decoded: `%3A` → `:`).
    let model = percent_decode(req.match_info().get("model").unwrap_or(""));
    if model.is_empty() {
        return invalid("The provided model identifier is invalid.");
    }
    let parsed: ConverseReq<'_> = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return invalid(&format!("mock: could not parse the JSON body: {e}")),
    };
    let Some(messages) = parsed.messages else {
        return invalid("1 validation error detected: Value null at 'messages' failed to satisfy constraint: Member must not be null");
    };
    let turns = match read_turns(messages, false) {
        Ok(t) => t,
        Err(m) => return invalid(&format!("messages {m}")),
    };
    let stream_ct = streaming.then_some(EVENT_STREAM);
    let eff = match gate(&req, &st, parsed.mock.as_ref(), Dialect::Bedrock, stream_ct).await {
        Ok(e) => e,
        Err(r) => return r,
    };

    let input_tokens = tokens_for_chars(turns.chars + system_chars(parsed.system));
    let tools: Vec<&str> = parsed
        .tool_config
        .iter()
        .flat_map(|t| t.tools.iter())
        .filter_map(|t| t.tool_spec.as_ref().and_then(|s| s.name.as_deref()))
        .collect();
    let choice = parsed
        .tool_config
        .as_ref()
        .and_then(|t| t.tool_choice.as_ref());
    let forced_name = choice
        .and_then(|c| c.tool.as_ref())
        .and_then(|t| t.name.as_deref());
    let forced = choice.is_some_and(|c| c.any.is_some() || c.tool.is_some());
    let (main, stop_reason, output_tokens) =
        if !tools.is_empty() && turns.user_last && (forced || turns.asks_tool) {
            let pieces = tool_input_pieces(eff.chunks);
            let n = pieces.len() as u64;
            let name = json_str(forced_name.unwrap_or(tools[0]));
            (Main::Tool { name, pieces }, "tool_use", n)
        } else {
            let limit = parsed.inference_config.as_ref().and_then(|c| c.max_tokens);
            let (emit, finish) = plan_length(eff.chunks, limit);
            let stop = if finish == "length" {
                "max_tokens"
            } else {
                "end_turn"
            };
            let total = eff.chunks;
            (Main::Text { total, emit }, stop, emit as u64)
        };
    let answer = Answer {
        main,
        stop_reason,
        input_tokens,
        output_tokens,
    };

    if !streaming {
        return HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, JSON))
            .insert_header(("x-amzn-requestid", request_id()))
            .body(answer.json());
    }
    let mid_error = (eff.fault == Some(Fault::ThrottleMid)).then(|| {
        Bytes::from(encode_frame(
            &[
                (":exception-type", "throttlingException"),
                (":content-type", JSON),
                (":message-type", "exception"),
            ],
            br#"{"message":"Too many requests"}"#,
        ))
    });
    let planned = match &answer.main {
        Main::Text { emit, .. } => *emit,
        Main::Tool { pieces, .. } => pieces.len(),
    };
    let mut script = Script::new(eff.fault, planned, GARBAGE, mid_error);
    answer.stream(&mut script);
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, EVENT_STREAM))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .insert_header(("x-amzn-requestid", request_id()))
        .streaming(script.finish(st, eff.chunk_interval_ms))
}

impl Answer {
    fn usage(&self, out: &mut String) {
        let (i, o) = (self.input_tokens, self.output_tokens);
        let _ = write!(
            out,
            r#""usage":{{"inputTokens":{i},"outputTokens":{o},"totalTokens":{}}},"metrics":{{"latencyMs":1}}"#,
            i + o
        );
    }

    fn json(&self) -> String {
        let mut out = String::with_capacity(320);
        out.push_str(r#"{"output":{"message":{"role":"assistant","content":["#);
        match &self.main {
            Main::Text { total, emit } => {
                out.push_str(r#"{"text":""#);
                push_reply(&mut out, *total, *emit);
                out.push_str(r#""}"#);
            }
            Main::Tool { name, .. } => {
                let _ = write!(
                    out,
                    r#"{{"toolUse":{{"toolUseId":"{TOOL_USE_ID}","name":{name},"input":{TOOL_INPUT}}}}}"#
                );
            }
        }
        let _ = write!(out, r#"]}}}},"stopReason":"{}","#, self.stop_reason);
        self.usage(&mut out);
        out.push('}');
        out
    }

    fn stream(&self, s: &mut Script) {
        s.frame(event("messageStart", r#"{"role":"assistant"}"#));
        match &self.main {
            Main::Text { total, emit } => {
                for i in 0..*emit {
                    let mut p = String::from(r#"{"contentBlockIndex":0,"delta":{"text":""#);
                    push_piece(&mut p, *total, i);
                    p.push_str(r#""}}"#);
                    s.delta(event("contentBlockDelta", &p));
                }
            }
            Main::Tool { name, pieces } => {
                s.frame(event(
                    "contentBlockStart",
                    &format!(
                        r#"{{"contentBlockIndex":0,"start":{{"toolUse":{{"toolUseId":"{TOOL_USE_ID}","name":{name}}}}}}}"#
                    ),
                ));
                for piece in pieces {
                    let mut p =
                        String::from(r#"{"contentBlockIndex":0,"delta":{"toolUse":{"input":"#);
                    push_json_str(&mut p, piece);
                    p.push_str("}}}");
                    s.delta(event("contentBlockDelta", &p));
                }
            }
        }
        s.frame(event("contentBlockStop", r#"{"contentBlockIndex":0}"#));
        s.frame(event(
            "messageStop",
            &format!(r#"{{"stopReason":"{}"}}"#, self.stop_reason),
        ));
        let mut meta = String::from("{");
        self.usage(&mut meta);
        meta.push('}');
        s.frame(event("metadata", &meta));
    }
}
