//! Anthropic's Messages API (`POST /v1/messages`) spoken for OpenAI
//! callers: system prompts lifted out of the messages, content parts and
//! tool calls as content blocks, tool results as user turns; answers,
//! thinking and prompt-cache usage back in OpenAI's shape; the named SSE
//! events of a stream turned into chat-completion chunks one by one.

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::params::{
    to_bytes, ChatParams, Content, Message, Part, ResponseFormat, Role, ToolChoice,
    FINISH_TOOL_CALLS,
};
use super::sse::SseDecoder;
use super::{openai, AnswerCtx, StreamStep, Usage, MAX_TOKENS};
use crate::error::{GatewayError, UpstreamError};
use crate::request::InferenceRequest;
use crate::topology::DeploymentTarget;

/// The API version tollgate speaks (sent as `anthropic-version`).
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` is required by Anthropic; this is used when the client
/// sets none (LiteLLM's default too).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The tool through which JSON answers are forced (`response_format`):
/// Anthropic has no JSON mode, so the model is made to call a tool whose
/// input schema is the wanted schema, and the call's input is the answer.
pub const JSON_TOOL: &str = "json_tool_call";

const SUPPORTED: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "n",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "user",
    "reasoning_effort",
    "thinking",
];

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::InvalidRequest {
        message: message.into(),
        param: None,
    }
}

/// The Messages API body for an OpenAI chat request.
pub fn request(req: &InferenceRequest, target: &DeploymentTarget) -> Result<Bytes, GatewayError> {
    let p = ChatParams::read(req, "anthropic", SUPPORTED, target.drop_params)?;
    if p.n.is_some_and(|n| n > 1) && !target.drop_params {
        return Err(invalid(
            "anthropic does not support n > 1. To drop it, set `drop_params = true`.",
        ));
    }
    let mut body = Map::new();
    body.insert("model".into(), target.upstream_model.clone().into());
    let (system, messages) = messages(&p.messages)?;
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    body.insert("messages".into(), Value::Array(messages));

    let thinking = match (&p.thinking, p.reasoning_effort.as_deref()) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(effort)) => Some(json!({
            "type": "enabled",
            "budget_tokens": match effort {
                "low" | "minimal" => 1024,
                "medium" => 2048,
                "high" => 4096,
                other => return Err(invalid(format!(
                    "invalid `reasoning_effort` {other:?}: expected low, medium or high"
                ))),
            },
        })),
        (None, None) => None,
    };
    let budget = thinking
        .as_ref()
        .and_then(|t| t.get("budget_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    // With thinking on, max_tokens must leave room beyond the budget.
    let max_tokens = p
        .max_tokens()
        .unwrap_or(DEFAULT_MAX_TOKENS.max(budget + DEFAULT_MAX_TOKENS / 4));
    body.insert("max_tokens".into(), max_tokens.min(MAX_TOKENS).into());
    if let Some(t) = thinking {
        body.insert("thinking".into(), t);
    }
    for (name, v) in [("temperature", p.temperature), ("top_p", p.top_p)] {
        if let Some(v) = v {
            body.insert(name.into(), v.into());
        }
    }
    if let Some(k) = p.top_k {
        body.insert("top_k".into(), k.into());
    }
    let stop = p.stop_sequences();
    if !stop.is_empty() {
        body.insert("stop_sequences".into(), stop.into());
    }
    if let Some(user) = &p.user {
        body.insert("metadata".into(), json!({ "user_id": user }));
    }

    let mut tools: Vec<Value> = p
        .tools
        .iter()
        .flatten()
        .map(|t| {
            let mut tool = json!({
                "name": t.function.name,
                "input_schema": t.function.schema(),
            });
            if let Some(d) = &t.function.description {
                tool["description"] = d.clone().into();
            }
            tool
        })
        .collect();
    let mut choice = match &p.tool_choice {
        None => None,
        Some(ToolChoice::Mode(m)) => Some(match m.as_str() {
            "auto" => json!({"type": "auto"}),
            "required" => json!({"type": "any"}),
            "none" => json!({"type": "none"}),
            other => {
                return Err(invalid(format!(
                    "invalid `tool_choice` {other:?}: expected none, auto, required or a function"
                )))
            }
        }),
        Some(ToolChoice::Named { function }) => {
            Some(json!({"type": "tool", "name": function.name}))
        }
    };
    match &p.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            tools.push(json!({"name": JSON_TOOL, "input_schema": {"type": "object"}}));
            choice = Some(json!({"type": "tool", "name": JSON_TOOL}));
        }
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            let schema = json_schema
                .schema
                .clone()
                .unwrap_or_else(|| json!({"type": "object"}));
            tools.push(json!({"name": JSON_TOOL, "input_schema": schema}));
            choice = Some(json!({"type": "tool", "name": JSON_TOOL}));
        }
    }
    if p.parallel_tool_calls == Some(false) && !tools.is_empty() {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        c["disable_parallel_tool_use"] = true.into();
    }
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(c) = choice {
        body.insert("tool_choice".into(), c);
    }
    if req.stream {
        body.insert("stream".into(), true.into());
    }
    Ok(to_bytes(&Value::Object(body)))
}

/// System prompt blocks and the conversation as Anthropic wants it: roles
/// alternating, tool results inside user turns.
fn messages(input: &[Message]) -> Result<(Vec<Value>, Vec<Value>), GatewayError> {
    let mut system = Vec::new();
    let mut out: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in input.iter().enumerate() {
        let (role, blocks) = match m.role {
            Role::System | Role::Developer => {
                if let Some(c) = &m.content {
                    system.extend(blocks_of(c, i)?);
                }
                continue;
            }
            Role::User => (
                "user",
                match &m.content {
                    Some(c) => blocks_of(c, i)?,
                    None => Vec::new(),
                },
            ),
            Role::Assistant => {
                let mut blocks: Vec<Value> = m.thinking_blocks.clone().unwrap_or_default();
                if let Some(c) = &m.content {
                    blocks.extend(
                        blocks_of(c, i)?
                            .into_iter()
                            .filter(|b| b.get("text").and_then(Value::as_str) != Some("")),
                    );
                }
                for call in m.tool_calls.iter().flatten() {
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.function.name,
                        "input": call.function.arguments_json(),
                    }));
                }
                ("assistant", blocks)
            }
            Role::Tool | Role::Function => {
                let id = m
                    .tool_call_id
                    .clone()
                    .or_else(|| m.name.clone())
                    .ok_or_else(|| {
                        invalid(format!(
                            "messages[{i}]: a tool message needs `tool_call_id`"
                        ))
                    })?;
                let content = m.content.as_ref().map(Content::text).unwrap_or_default();
                (
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": content})],
                )
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some((last, prev)) if *last == role => prev.extend(blocks),
            _ => out.push((role, blocks)),
        }
    }
    if out.is_empty() {
        return Err(invalid(
            "`messages` needs at least one user or assistant message for anthropic",
        ));
    }
    let messages = out
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    Ok((system, messages))
}

fn blocks_of(content: &Content, i: usize) -> Result<Vec<Value>, GatewayError> {
    match content {
        Content::Text(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Content::Parts(parts) => parts
            .iter()
            .map(|part| match part {
                Part::Text {
                    text,
                    cache_control,
                } => {
                    let mut b = json!({"type": "text", "text": text});
                    if let Some(cc) = cache_control {
                        b["cache_control"] = cc.clone();
                    }
                    Ok(b)
                }
                Part::ImageUrl { image_url } => Ok(match image_url.inline() {
                    Some((media_type, data)) => json!({
                        "type": "image",
                        "source": {"type": "base64", "media_type": media_type, "data": data},
                    }),
                    None => json!({
                        "type": "image",
                        "source": {"type": "url", "url": image_url.url()},
                    }),
                }),
                Part::Other => Err(invalid(format!(
                    "messages[{i}]: anthropic takes text and image_url content parts only"
                ))),
            })
            .collect(),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

/// Running token counts of one answer: Anthropic reports input in
/// `message_start` and output (and sometimes input again) in
/// `message_delta`; the non-stream answer has them all at once.
#[derive(Default, Clone, Copy)]
struct Counts {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
}

impl Counts {
    fn update(&mut self, u: &WireUsage) {
        let c = |v: Option<u64>, old: u64| v.map_or(old, |v| v.min(MAX_TOKENS));
        self.input = c(u.input_tokens, self.input);
        self.output = c(u.output_tokens, self.output);
        self.cache_read = c(u.cache_read_input_tokens, self.cache_read);
        self.cache_write = c(u.cache_creation_input_tokens, self.cache_write);
    }

    /// OpenAI counts cached prompt tokens inside `prompt_tokens`;
    /// Anthropic's `input_tokens` leaves them out.
    fn usage(&self) -> Usage {
        let prompt = self.input + self.cache_read + self.cache_write;
        Usage {
            cached_tokens: self.cache_read,
            cache_creation_tokens: self.cache_write,
            ..Usage::new(prompt, self.output)
        }
    }
}

fn finish_reason(stop_reason: Option<&str>) -> Option<&'static str> {
    Some(match stop_reason? {
        "end_turn" | "stop_sequence" | "pause_turn" => "stop",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => FINISH_TOOL_CALLS,
        "refusal" => "content_filter",
        _ => "stop",
    })
}

/// A complete Messages answer as an OpenAI chat completion.
pub fn response(body: &[u8], ctx: &AnswerCtx) -> Result<(Bytes, Option<Usage>), String> {
    #[derive(Deserialize)]
    struct Answer {
        id: Option<String>,
        model: Option<String>,
        content: Vec<Value>,
        stop_reason: Option<String>,
        #[serde(default)]
        usage: Option<WireUsage>,
    }
    let a: Answer = serde_json::from_slice(body)
        .map_err(|e| format!("the upstream sent a body that is not an Anthropic message: {e}"))?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    let mut tool_calls = Vec::new();
    let mut json_answer = false;
    for block in &a.content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("thinking") => {
                reasoning.push_str(block.get("thinking").and_then(Value::as_str).unwrap_or(""));
                thinking_blocks.push(block.clone());
            }
            Some("redacted_thinking") => thinking_blocks.push(block.clone()),
            Some("tool_use") => {
                let name = block.get("name").and_then(Value::as_str).unwrap_or("");
                let input = block.get("input").cloned().unwrap_or(json!({}));
                if name == JSON_TOOL {
                    json_answer = true;
                    text.push_str(&input.to_string());
                    continue;
                }
                tool_calls.push(json!({
                    "id": block.get("id").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": {"name": name, "arguments": input.to_string()},
                }));
            }
            _ => {}
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { text.into() },
    });
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    if !reasoning.is_empty() || !thinking_blocks.is_empty() {
        message["reasoning_content"] = reasoning.into();
        message["thinking_blocks"] = Value::Array(thinking_blocks);
    }
    let finish = if json_answer {
        "stop"
    } else {
        finish_reason(a.stop_reason.as_deref()).unwrap_or("stop")
    };
    let mut counts = Counts::default();
    if let Some(u) = &a.usage {
        counts.update(u);
    }
    let usage = a.usage.as_ref().map(|_| counts.usage());
    let mut out = json!({
        "id": a.id.unwrap_or_else(|| ctx.id.clone()),
        "object": "chat.completion",
        "created": ctx.created,
        "model": a.model.unwrap_or_else(|| ctx.model.clone()),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    });
    if let Some(u) = &usage {
        out["usage"] = u.to_openai_json();
    }
    Ok((to_bytes(&out), usage))
}

/// Anthropic's error body (`{"type":"error","error":{"type","message"}}`)
/// as OpenAI's, with a `code` for the classes clients act on.
pub fn error(status: u16, retry_after: Option<Duration>, body: &[u8]) -> UpstreamError {
    #[derive(Deserialize)]
    struct Detail {
        #[serde(rename = "type")]
        kind: Option<String>,
        message: Option<String>,
    }
    #[derive(Deserialize)]
    struct Wrapped {
        error: Detail,
    }
    let Ok(Wrapped { error: d }) = serde_json::from_slice::<Wrapped>(body) else {
        return openai::parse_error(status, retry_after, body);
    };
    let message = d.message.unwrap_or_default();
    let kind = d.kind.unwrap_or_default();
    let (status, error_type, code) = classify(status, &kind, &message);
    UpstreamError {
        status,
        message,
        error_type: Some(error_type.to_string()),
        param: None,
        code: code.map(str::to_string),
        retry_after,
    }
}

/// Status, OpenAI error type and code for an Anthropic error class.
fn classify(status: u16, kind: &str, message: &str) -> (u16, &'static str, Option<&'static str>) {
    let lower = message.to_ascii_lowercase();
    if lower.contains("prompt is too long")
        || lower.contains("context window")
        || lower.contains("input length and `max_tokens` exceed")
    {
        return (
            400,
            "invalid_request_error",
            Some("context_length_exceeded"),
        );
    }
    match kind {
        "authentication_error" => (401, "authentication_error", Some("invalid_api_key")),
        "permission_error" => (403, "permission_error", None),
        "not_found_error" => (404, "invalid_request_error", Some("model_not_found")),
        "request_too_large" => (413, "invalid_request_error", None),
        "rate_limit_error" => (429, "rate_limit_error", Some("rate_limit_exceeded")),
        // 529: Anthropic is overloaded; a standard status clients retry.
        "overloaded_error" => (503, "service_unavailable", Some("overloaded")),
        "api_error" => (status.max(500), "api_error", None),
        _ => (status, "invalid_request_error", None),
    }
}

/// How far past the blocks seen so far a new block's index may jump.
const MAX_BLOCK_GAP: usize = 16;

/// Which OpenAI thing a content block index became.
#[derive(Clone, Copy)]
enum Block {
    Text,
    Thinking,
    /// A tool call, with its index among the answer's tool calls.
    Tool(usize),
    /// The forced JSON tool: its input is streamed as content.
    Json,
    Other,
}

/// One Anthropic stream being turned into OpenAI chunks.
pub struct StreamState {
    sse: SseDecoder,
    ctx: AnswerCtx,
    blocks: Vec<Block>,
    tools: usize,
    counts: Counts,
    finish: Option<&'static str>,
    json_answer: bool,
    /// No more events are read (complete, failed or unreadable).
    done: bool,
    /// `message_stop` was seen: the stream ended well.
    complete: bool,
}

impl StreamState {
    pub fn new(ctx: AnswerCtx) -> StreamState {
        StreamState {
            sse: SseDecoder::new(),
            ctx,
            blocks: Vec::new(),
            tools: 0,
            counts: Counts::default(),
            finish: None,
            json_answer: false,
            done: false,
            complete: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> StreamStep {
        StreamStep::Forward(openai::sse_frame(&to_bytes(&json!({
            "id": self.ctx.id,
            "object": "chat.completion.chunk",
            "created": self.ctx.created,
            "model": self.ctx.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }))))
    }

    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<StreamStep>) -> Result<(), String> {
        self.sse.push(bytes);
        while !self.done {
            match self.sse.next_event() {
                Ok(Some(ev)) => self.event(&ev, out),
                Ok(None) => break,
                Err(_) => return Err(openai::TOO_LARGE.into()),
            }
        }
        Ok(())
    }

    pub fn finish(&mut self, out: &mut Vec<StreamStep>) -> Result<(), String> {
        if !self.done {
            if let Some(ev) = self.sse.finish() {
                self.event(&ev, out);
            }
        }
        if self.complete {
            Ok(())
        } else {
            Err("the upstream closed the stream before message_stop".into())
        }
    }

    fn event(&mut self, data: &[u8], out: &mut Vec<StreamStep>) {
        #[derive(Deserialize)]
        struct Event {
            #[serde(rename = "type")]
            kind: String,
            index: Option<usize>,
            message: Option<Value>,
            content_block: Option<Value>,
            delta: Option<Value>,
            usage: Option<WireUsage>,
            error: Option<Value>,
        }
        let Ok(ev) = serde_json::from_slice::<Event>(data) else {
            out.push(StreamStep::Invalid);
            self.done = true;
            return;
        };
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        match ev.kind.as_str() {
            "message_start" => {
                if let Some(m) = &ev.message {
                    if let Some(id) = m.get("id").and_then(Value::as_str) {
                        self.ctx.id = id.to_string();
                    }
                    if let Some(model) = m.get("model").and_then(Value::as_str) {
                        self.ctx.model = model.to_string();
                    }
                    if let Some(u) = m.get("usage") {
                        if let Ok(u) = serde_json::from_value::<WireUsage>(u.clone()) {
                            self.counts.update(&u);
                        }
                    }
                }
                out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
            }
            "content_block_start" => {
                let block = ev.content_block.unwrap_or(Value::Null);
                let kind = match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = s(&block, "text");
                        if !text.is_empty() {
                            out.push(self.chunk(json!({ "content": text }), None));
                        }
                        Block::Text
                    }
                    Some("thinking") => Block::Thinking,
                    Some("tool_use") if s(&block, "name") == JSON_TOOL => {
                        self.json_answer = true;
                        Block::Json
                    }
                    Some("tool_use") => {
                        let i = self.tools;
                        self.tools += 1;
                        out.push(self.chunk(
                            json!({"tool_calls": [{
                                "index": i,
                                "id": s(&block, "id"),
                                "type": "function",
                                "function": {"name": s(&block, "name"), "arguments": ""},
                            }]}),
                            None,
                        ));
                        Block::Tool(i)
                    }
                    _ => Block::Other,
                };
                // Blocks are numbered from 0 up; an index far beyond the
                // next one is the upstream's bug (or hostility), not a
                // reason to allocate: its deltas are dropped.
                let index = ev.index.unwrap_or(self.blocks.len());
                if index <= self.blocks.len() + MAX_BLOCK_GAP {
                    if index >= self.blocks.len() {
                        self.blocks.resize(index + 1, Block::Other);
                    }
                    self.blocks[index] = kind;
                }
            }
            "content_block_delta" => {
                let delta = ev.delta.unwrap_or(Value::Null);
                let block = ev
                    .index
                    .and_then(|i| self.blocks.get(i).copied())
                    .unwrap_or(Block::Text);
                let piece = match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => json!({ "content": s(&delta, "text") }),
                    // LiteLLM's shape: the text as reasoning_content, and the
                    // block pieces (signature included) as thinking_blocks so
                    // a client can hand the signed thinking back next turn.
                    Some("thinking_delta") => {
                        let text = s(&delta, "thinking");
                        json!({
                            "reasoning_content": text,
                            "thinking_blocks": [{"type": "thinking", "thinking": text}],
                        })
                    }
                    Some("signature_delta") => json!({
                        "thinking_blocks": [{
                            "type": "thinking",
                            "thinking": "",
                            "signature": s(&delta, "signature"),
                        }],
                    }),
                    Some("input_json_delta") => match block {
                        Block::Json => json!({ "content": s(&delta, "partial_json") }),
                        Block::Tool(i) => json!({"tool_calls": [{
                            "index": i,
                            "function": {"arguments": s(&delta, "partial_json")},
                        }]}),
                        _ => return,
                    },
                    // citations and the like: nothing OpenAI-shaped.
                    _ => return,
                };
                out.push(self.chunk(piece, None));
            }
            "message_delta" => {
                if let Some(u) = &ev.usage {
                    self.counts.update(u);
                }
                let stop = ev
                    .delta
                    .as_ref()
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str);
                self.finish = if self.json_answer {
                    Some("stop")
                } else {
                    finish_reason(stop).or(self.finish)
                };
            }
            "message_stop" => {
                out.push(self.chunk(json!({}), Some(self.finish.unwrap_or("stop"))));
                let usage = self.counts.usage();
                let forward = self.ctx.wants_usage.then(|| {
                    openai::sse_frame(&to_bytes(&json!({
                        "id": self.ctx.id,
                        "object": "chat.completion.chunk",
                        "created": self.ctx.created,
                        "model": self.ctx.model,
                        "choices": [],
                        "usage": usage.to_openai_json(),
                    })))
                });
                out.push(StreamStep::Usage { usage, forward });
                out.push(StreamStep::Done(Bytes::from_static(openai::DONE_EVENT)));
                self.done = true;
                self.complete = true;
            }
            "error" => {
                let e = ev.error.unwrap_or(Value::Null);
                let kind = s(&e, "type");
                let message = s(&e, "message");
                out.push(StreamStep::Failed(format!(
                    "the upstream failed mid-stream ({kind}): {message}"
                )));
                self.done = true;
            }
            // ping, content_block_stop, and event types added later.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
