//! Anthropic Messages API: `POST /v1/messages` (and `/messages`), plain and
//! streaming (`event:` + `data:` SSE). See the module docs of `mock` for
//! the contract.

use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::behaviour::BehaviourPatch;
use super::handlers::{
    gate, json_response, json_str, plan_length, read_turns, script_response, system_chars,
    tool_input_pieces, Dialect, SSE, TOOL_INPUT,
};
use super::stream::Script;
use super::wire::{push_json_str, push_piece, push_reply, push_unique, tokens_for_chars};
use super::{bump, Fault, Shared};

/// The text of a thinking block, streamed as two `thinking_delta`s.
const THINKING: [&str; 2] = ["Mock", " reasoning."];
const SIGNATURE: &str = "sig";
pub(crate) const TOOL_USE_ID: &str = "toolu_mock1";

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    for prefix in ["/v1", ""] {
        cfg.route(&format!("{prefix}/messages"), web::post().to(messages));
    }
}

/// The error `type` Anthropic uses for a status.
fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// `{"type":"error","error":{"type":…,"message":…}}`.
pub(crate) fn error_body(status: u16, message: &str) -> String {
    let mut out = String::with_capacity(64 + message.len());
    let _ = write!(
        out,
        r#"{{"type":"error","error":{{"type":"{}","message":"#,
        error_type(status)
    );
    push_json_str(&mut out, message);
    out.push_str("}}");
    out
}

#[derive(Deserialize, Default)]
struct Named {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct MessagesReq<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    max_tokens: Option<u64>,
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    #[serde(borrow)]
    system: Option<&'a RawValue>,
    stream: Option<bool>,
    tools: Option<Vec<Named>>,
    tool_choice: Option<Named>,
    thinking: Option<Named>,
    mock: Option<BehaviourPatch>,
}

/// The main content block of the answer.
enum Main {
    /// `emit` of `total` reply pieces.
    Text { total: usize, emit: usize },
    /// A `tool_use` block calling this tool (a JSON string literal).
    Tool {
        name: String,
        pieces: Vec<&'static str>,
    },
}

struct Answer {
    /// `msg_mock…`
    id: String,
    /// JSON string literal.
    model: String,
    input_tokens: u64,
    thinking: bool,
    main: Main,
    stop_reason: &'static str,
    output_tokens: u64,
}

fn invalid(message: &str) -> HttpResponse {
    Dialect::Anthropic.error(400, message)
}

async fn messages(req: HttpRequest, body: web::Bytes, st: web::Data<Shared>) -> HttpResponse {
    st.capture(&req, &body);
    bump(&st.counters.requests);
    bump(&st.counters.anthropic);
    let headers = req.headers();
    if headers.get("x-api-key").is_none_or(|v| v.is_empty()) {
        return Dialect::Anthropic.error(401, "x-api-key header is required");
    }
    if headers.get("anthropic-version").is_none() {
        return invalid("anthropic-version: header is required");
    }
    let parsed: MessagesReq<'_> = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return invalid(&format!("mock: could not parse the JSON body: {e}")),
    };
    let model = match parsed.model.map(RawValue::get) {
        Some(m) if m.starts_with('"') && m.len() > 2 => m,
        Some(_) => return invalid("model: Input should be a valid string"),
        None => return invalid("model: Field required"),
    };
    let Some(max_tokens) = parsed.max_tokens else {
        return invalid("max_tokens: Field required");
    };
    let Some(messages) = parsed.messages else {
        return invalid("messages: Field required");
    };
    let turns = match read_turns(messages, false) {
        Ok(t) => t,
        Err(m) => return invalid(&format!("messages: {m}")),
    };
    let streaming = parsed.stream.unwrap_or(false);
    let eff = match gate(
        &req,
        &st,
        parsed.mock.as_ref(),
        Dialect::Anthropic,
        streaming.then_some(SSE),
    )
    .await
    {
        Ok(e) => e,
        Err(r) => return r,
    };

    let input_tokens = tokens_for_chars(turns.chars + system_chars(parsed.system));
    let choice = parsed.tool_choice.unwrap_or_default();
    let tools = parsed.tools.unwrap_or_default();
    let forced = matches!(choice.kind.as_deref(), Some("any" | "tool"));
    let wants_tool = !tools.is_empty()
        && turns.user_last
        && choice.kind.as_deref() != Some("none")
        && (forced || turns.asks_tool);
    let thinking = parsed
        .thinking
        .is_some_and(|t| t.kind.as_deref() == Some("enabled"));
    let thinking_tokens = if thinking { THINKING.len() as u64 } else { 0 };
    let (main, stop_reason, main_tokens) = if wants_tool {
        let name = match choice.kind.as_deref() {
            Some("tool") => choice.name.clone(),
            _ => None,
        }
        .or_else(|| tools.iter().find_map(|t| t.name.clone()))
        .unwrap_or_else(|| "tool".into());
        let pieces = tool_input_pieces(eff.chunks);
        let n = pieces.len() as u64;
        (
            Main::Tool {
                name: json_str(&name),
                pieces,
            },
            "tool_use",
            n,
        )
    } else {
        let (emit, finish) = plan_length(eff.chunks, Some(max_tokens));
        let stop = if finish == "length" {
            "max_tokens"
        } else {
            "end_turn"
        };
        (
            Main::Text {
                total: eff.chunks,
                emit,
            },
            stop,
            emit as u64,
        )
    };
    let mut id = String::from("msg_mock");
    push_unique(&mut id);
    let answer = Answer {
        id,
        model: model.to_string(),
        input_tokens,
        thinking,
        main,
        stop_reason,
        output_tokens: thinking_tokens + main_tokens,
    };
    if !streaming {
        return json_response(StatusCode::OK, answer.json());
    }
    let mid_error = (eff.fault == Some(Fault::OverloadedMid)).then(|| {
        event(
            "error",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )
    });
    let mut script = Script::new(
        eff.fault,
        answer.planned_deltas(),
        b"event: content_block_delta\ndata: <html>upstream proxy error</html>\n\n",
        mid_error,
    );
    answer.stream(&mut script);
    script_response(SSE, script.finish(st, eff.chunk_interval_ms))
}

/// `content_block_start` (and `ping` after the first block's start).
fn block_start(s: &mut Script, index: usize, block: &str) {
    s.frame(event(
        "content_block_start",
        &format!(r#"{{"type":"content_block_start","index":{index},"content_block":{block}}}"#),
    ));
    if index == 0 {
        s.frame(event("ping", r#"{"type": "ping"}"#));
    }
}

/// A `content_block_delta` (paced).
fn delta(s: &mut Script, index: usize, delta: &str) {
    s.delta(event(
        "content_block_delta",
        &format!(r#"{{"type":"content_block_delta","index":{index},"delta":{delta}}}"#),
    ));
}

fn block_stop(s: &mut Script, index: usize) {
    s.frame(event(
        "content_block_stop",
        &format!(r#"{{"type":"content_block_stop","index":{index}}}"#),
    ));
}

/// One SSE event with an `event:` line.
fn event(name: &str, data: &str) -> Bytes {
    let mut out = String::with_capacity(name.len() + data.len() + 16);
    let _ = write!(out, "event: {name}\ndata: {data}\n\n");
    Bytes::from(out)
}

impl Answer {
    fn usage(&self, out: &mut String, output_tokens: u64) {
        let _ = write!(
            out,
            r#"{{"input_tokens":{},"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":{output_tokens}}}"#,
            self.input_tokens
        );
    }

    /// The non-streaming message.
    fn json(&self) -> String {
        let mut out = String::with_capacity(512);
        let _ = write!(
            out,
            r#"{{"id":"{}","type":"message","role":"assistant","model":{},"content":["#,
            self.id, self.model
        );
        if self.thinking {
            let _ = write!(
                out,
                r#"{{"type":"thinking","thinking":"{}","signature":"{SIGNATURE}"}},"#,
                THINKING.concat()
            );
        }
        match &self.main {
            Main::Text { total, emit } => {
                out.push_str(r#"{"type":"text","text":""#);
                push_reply(&mut out, *total, *emit);
                out.push_str(r#""}"#);
            }
            Main::Tool { name, .. } => {
                let _ = write!(
                    out,
                    r#"{{"type":"tool_use","id":"{TOOL_USE_ID}","name":{name},"input":{TOOL_INPUT}}}"#
                );
            }
        }
        let _ = write!(
            out,
            r#"],"stop_reason":"{}","stop_sequence":null,"usage":"#,
            self.stop_reason
        );
        self.usage(&mut out, self.output_tokens);
        out.push('}');
        out
    }

    fn planned_deltas(&self) -> usize {
        let thinking = if self.thinking { THINKING.len() + 1 } else { 0 };
        thinking
            + match &self.main {
                Main::Text { emit, .. } => *emit,
                Main::Tool { pieces, .. } => pieces.len(),
            }
    }

    /// The SSE events: message_start, per block content_block_start (a
    /// ping after the first), deltas, content_block_stop; message_delta,
    /// message_stop.
    fn stream(&self, s: &mut Script) {
        let mut start = String::with_capacity(320);
        let _ = write!(
            start,
            r#"{{"type":"message_start","message":{{"id":"{}","type":"message","role":"assistant","model":{},"content":[],"stop_reason":null,"stop_sequence":null,"usage":"#,
            self.id, self.model
        );
        self.usage(&mut start, 1);
        start.push_str("}}");
        s.frame(event("message_start", &start));

        let mut index = 0;
        if self.thinking {
            block_start(s, index, r#"{"type":"thinking","thinking":""}"#);
            for piece in THINKING {
                let mut d = String::from(r#"{"type":"thinking_delta","thinking":"#);
                push_json_str(&mut d, piece);
                d.push('}');
                delta(s, index, &d);
            }
            delta(
                s,
                index,
                &format!(r#"{{"type":"signature_delta","signature":"{SIGNATURE}"}}"#),
            );
            block_stop(s, index);
            index += 1;
        }
        match &self.main {
            Main::Text { total, emit } => {
                block_start(s, index, r#"{"type":"text","text":""}"#);
                for i in 0..*emit {
                    let mut d = String::from(r#"{"type":"text_delta","text":""#);
                    push_piece(&mut d, *total, i);
                    d.push_str(r#""}"#);
                    delta(s, index, &d);
                }
            }
            Main::Tool { name, pieces } => {
                block_start(
                    s,
                    index,
                    &format!(
                        r#"{{"type":"tool_use","id":"{TOOL_USE_ID}","name":{name},"input":{{}}}}"#
                    ),
                );
                for piece in pieces {
                    let mut d = String::from(r#"{"type":"input_json_delta","partial_json":"#);
                    push_json_str(&mut d, piece);
                    d.push('}');
                    delta(s, index, &d);
                }
            }
        }
        block_stop(s, index);
        s.frame(event(
            "message_delta",
            &format!(
                r#"{{"type":"message_delta","delta":{{"stop_reason":"{}","stop_sequence":null}},"usage":{{"output_tokens":{}}}}}"#,
                self.stop_reason, self.output_tokens
            ),
        ));
        s.frame(event("message_stop", r#"{"type":"message_stop"}"#));
    }
}
