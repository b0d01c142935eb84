//! AWS Bedrock's Converse API (`POST /model/{id}/converse`, and
//! `/converse-stream` for streams) spoken for OpenAI callers: system
//! prompts lifted out of the messages, content parts and tool calls as
//! Converse content blocks, tool results as user turns, model-specific
//! knobs in `additionalModelRequestFields`; answers, reasoning and
//! prompt-cache usage back in OpenAI's shape. Requests are signed with
//! SigV4 ([`sign`]); streams arrive as AWS event-stream frames
//! ([`StreamState`]).

mod sigv4;
mod stream;

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::anthropic::{DEFAULT_MAX_TOKENS, JSON_TOOL};
use super::params::{
    to_bytes, ChatParams, Content, ImageUrl, Message, Part, ResponseFormat, Role, ToolChoice,
    FINISH_TOOL_CALLS,
};
use super::{openai, AnswerCtx, Usage, MAX_TOKENS};
use crate::error::{GatewayError, UpstreamError};
use crate::request::InferenceRequest;
use crate::topology::DeploymentTarget;

pub use sigv4::sign;
pub use stream::StreamState;

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
    // Converse has no end-user field; accepted and dropped, as OpenAI
    // treats it as advisory.
    "user",
];

/// Extended thinking goes through `additionalModelRequestFields`, which
/// only Anthropic's models on Bedrock understand; for any other model
/// these are unsupported parameters like any other.
const THINKING_PARAMS: &[&str] = &["reasoning_effort", "thinking"];

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::InvalidRequest {
        message: message.into(),
        param: None,
    }
}

/// Model ids (`anthropic.claude-…`), cross-region profiles
/// (`us.anthropic.claude-…`) and ARNs naming either. An application
/// inference profile ARN does not say which model it serves, so thinking
/// is refused for it unless `drop_params`.
fn is_anthropic(model: &str) -> bool {
    model.contains("anthropic.") || model.contains("claude")
}

/// The Converse body for an OpenAI chat request (the model is in the URL).
pub fn request(req: &InferenceRequest, target: &DeploymentTarget) -> Result<Bytes, GatewayError> {
    let anthropic = is_anthropic(&target.upstream_model);
    let mut supported = SUPPORTED.to_vec();
    if anthropic {
        supported.extend_from_slice(THINKING_PARAMS);
    }
    let p = ChatParams::read(req, "bedrock", &supported, target.drop_params)?;
    if p.n.is_some_and(|n| n > 1) && !target.drop_params {
        return Err(invalid(
            "bedrock does not support n > 1. To drop it, set `drop_params = true`.",
        ));
    }
    let mut body = Map::new();
    let (system, messages) = messages(&p.messages)?;
    body.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }

    let thinking = thinking(&p)?;
    let budget = thinking
        .as_ref()
        .and_then(|t| t.get("budget_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let mut inference = Map::new();
    // Converse leaves maxTokens to the model's default, but with thinking
    // on, Anthropic needs room beyond the budget.
    let max_tokens = match (p.max_tokens(), budget) {
        (Some(n), _) => Some(n),
        (None, 0) => None,
        (None, b) => Some(DEFAULT_MAX_TOKENS.max(b + DEFAULT_MAX_TOKENS / 4)),
    };
    if let Some(n) = max_tokens {
        inference.insert("maxTokens".into(), n.min(MAX_TOKENS).into());
    }
    if let Some(t) = p.temperature {
        inference.insert("temperature".into(), t.into());
    }
    if let Some(t) = p.top_p {
        inference.insert("topP".into(), t.into());
    }
    let stop = p.stop_sequences();
    if !stop.is_empty() {
        inference.insert("stopSequences".into(), stop.into());
    }
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }

    let mut extra = Map::new();
    if let Some(k) = p.top_k {
        extra.insert("top_k".into(), k.into());
    }
    if let Some(t) = thinking {
        extra.insert("thinking".into(), t);
    }
    if !extra.is_empty() {
        body.insert("additionalModelRequestFields".into(), Value::Object(extra));
    }

    if let Some(tools) = tool_config(&p, target.drop_params)? {
        body.insert("toolConfig".into(), tools);
    }
    Ok(to_bytes(&Value::Object(body)))
}

/// Anthropic's `thinking` object, given as is or made from
/// `reasoning_effort` with the budgets the Anthropic adapter uses.
fn thinking(p: &ChatParams) -> Result<Option<Value>, GatewayError> {
    if let Some(t) = &p.thinking {
        return Ok(Some(t.clone()));
    }
    let Some(effort) = p.reasoning_effort.as_deref() else {
        return Ok(None);
    };
    let budget = match effort {
        "none" => return Ok(None),
        "low" | "minimal" => 1024,
        "medium" => 2048,
        "high" => 4096,
        other => {
            return Err(invalid(format!(
                "invalid `reasoning_effort` {other:?}: expected none, low, medium or high"
            )))
        }
    };
    Ok(Some(json!({"type": "enabled", "budget_tokens": budget})))
}

/// `toolConfig`, or `None` when no tool goes out. Converse has no "none"
/// choice, so `tool_choice: "none"` leaves the client's tools out.
fn tool_config(p: &ChatParams, drop_params: bool) -> Result<Option<Value>, GatewayError> {
    let spec = |name: &str, description: Option<&str>, schema: Value| {
        let mut s = json!({"name": name, "inputSchema": {"json": schema}});
        if let Some(d) = description {
            s["description"] = d.into();
        }
        json!({ "toolSpec": s })
    };
    let mut choice = match &p.tool_choice {
        None => None,
        Some(ToolChoice::Mode(m)) => match m.as_str() {
            "auto" => Some(json!({"auto": {}})),
            "required" => Some(json!({"any": {}})),
            "none" => None,
            other => {
                return Err(invalid(format!(
                    "invalid `tool_choice` {other:?}: expected none, auto, required or a function"
                )))
            }
        },
        Some(ToolChoice::Named { function }) => Some(json!({"tool": {"name": function.name}})),
    };
    let mut tools: Vec<Value> = match &p.tool_choice {
        Some(ToolChoice::Mode(m)) if m == "none" => Vec::new(),
        _ => p
            .tools
            .iter()
            .flatten()
            .map(|t| {
                spec(
                    &t.function.name,
                    t.function.description.as_deref(),
                    t.function.schema(),
                )
            })
            .collect(),
    };
    if p.parallel_tool_calls == Some(false) && !tools.is_empty() && !drop_params {
        return Err(invalid(
            "bedrock does not support parallel_tool_calls = false. To drop it, set `drop_params = true`.",
        ));
    }
    // No JSON mode in Converse: the answer is forced through a tool whose
    // input schema is the wanted schema, as for Anthropic.
    let forced_schema = match &p.response_format {
        None | Some(ResponseFormat::Text) => None,
        Some(ResponseFormat::JsonObject) => Some(json!({"type": "object"})),
        Some(ResponseFormat::JsonSchema { json_schema }) => Some(
            json_schema
                .schema
                .clone()
                .unwrap_or_else(|| json!({"type": "object"})),
        ),
    };
    if let Some(schema) = forced_schema {
        tools.push(spec(JSON_TOOL, None, schema));
        choice = Some(json!({"tool": {"name": JSON_TOOL}}));
    }
    if tools.is_empty() {
        return Ok(None);
    }
    let mut config = json!({ "tools": tools });
    if let Some(c) = choice {
        config["toolChoice"] = c;
    }
    Ok(Some(config))
}

/// System blocks and the conversation as Converse wants it: roles
/// alternating, tool results inside user turns.
fn messages(input: &[Message]) -> Result<(Vec<Value>, Vec<Value>), GatewayError> {
    let mut system = Vec::new();
    let mut out: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in input.iter().enumerate() {
        let (role, blocks) = match m.role {
            Role::System | Role::Developer => {
                if let Some(c) = &m.content {
                    system.extend(blocks_of(c, i, false)?);
                }
                continue;
            }
            Role::User => (
                "user",
                match &m.content {
                    Some(c) => blocks_of(c, i, true)?,
                    None => Vec::new(),
                },
            ),
            Role::Assistant => {
                let mut blocks: Vec<Value> = m
                    .thinking_blocks
                    .iter()
                    .flatten()
                    .filter_map(reasoning_block)
                    .collect();
                if let Some(c) = &m.content {
                    blocks.extend(blocks_of(c, i, true)?);
                }
                for call in m.tool_calls.iter().flatten() {
                    blocks.push(json!({"toolUse": {
                        "toolUseId": call.id,
                        "name": call.function.name,
                        "input": call.function.arguments_json(),
                    }}));
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
                let text = m.content.as_ref().map(Content::text).unwrap_or_default();
                let content = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => json!([{ "json": v }]),
                    _ => json!([{ "text": text }]),
                };
                (
                    "user",
                    vec![json!({"toolResult": {"toolUseId": id, "content": content}})],
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
            "`messages` needs at least one user or assistant message for bedrock",
        ));
    }
    let messages = out
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    Ok((system, messages))
}

/// Content blocks of one message. Bedrock refuses blank text blocks, so
/// they are left out; a prompt-cache marker becomes a `cachePoint` after
/// its text. System prompts take text only.
fn blocks_of(content: &Content, i: usize, images: bool) -> Result<Vec<Value>, GatewayError> {
    let text = |s: &str| (!s.trim().is_empty()).then(|| json!({ "text": s }));
    match content {
        Content::Text(s) => Ok(text(s).into_iter().collect()),
        Content::Parts(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for part in parts {
                match part {
                    Part::Text {
                        text: s,
                        cache_control,
                    } => {
                        out.extend(text(s));
                        if cache_control.is_some() {
                            out.push(json!({"cachePoint": {"type": "default"}}));
                        }
                    }
                    Part::ImageUrl { image_url } if images => out.push(image(image_url, i)?),
                    Part::ImageUrl { .. } => {
                        return Err(invalid(format!(
                            "messages[{i}]: bedrock takes text only in system messages"
                        )))
                    }
                    Part::Other => {
                        return Err(invalid(format!(
                            "messages[{i}]: bedrock takes text and image_url content parts only"
                        )))
                    }
                }
            }
            Ok(out)
        }
    }
}

/// An image block: Converse takes the bytes only, never a URL to fetch.
fn image(image_url: &ImageUrl, i: usize) -> Result<Value, GatewayError> {
    let Some((media_type, data)) = image_url.inline() else {
        return Err(invalid(format!(
            "messages[{i}]: bedrock cannot fetch image URLs; send the image as a base64 `data:` URL"
        )));
    };
    let format = match media_type.to_ascii_lowercase().as_str() {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        other => {
            return Err(invalid(format!(
                "messages[{i}]: bedrock takes png, jpeg, gif or webp images, not {other:?}"
            )))
        }
    };
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

/// Earlier thinking handed back in Anthropic's shape (as [`response`]
/// gives it out), as Converse reasoning blocks: Anthropic's models want
/// them back, signed, when thinking and tools are used together.
fn reasoning_block(block: &Value) -> Option<Value> {
    match block.get("type").and_then(Value::as_str)? {
        "thinking" => {
            let mut text = json!({ "text": block.get("thinking")?.as_str()? });
            if let Some(sig) = block.get("signature").and_then(Value::as_str) {
                text["signature"] = sig.into();
            }
            Some(json!({"reasoningContent": {"reasoningText": text}}))
        }
        "redacted_thinking" => Some(json!({
            "reasoningContent": {"redactedContent": block.get("data")?.as_str()?},
        })),
        _ => None,
    }
}

/// Converse's `usage` (in answers and in a stream's `metadata` event).
#[derive(Deserialize, Default, Clone, Copy)]
#[serde(default, rename_all = "camelCase")]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_write_input_tokens: Option<u64>,
}

impl WireUsage {
    /// OpenAI counts cached prompt tokens inside `prompt_tokens`;
    /// Bedrock's `inputTokens` leaves them out.
    fn usage(&self) -> Usage {
        let c = |v: Option<u64>| v.unwrap_or(0).min(MAX_TOKENS);
        let (read, write) = (
            c(self.cache_read_input_tokens),
            c(self.cache_write_input_tokens),
        );
        Usage {
            cached_tokens: read,
            cache_creation_tokens: write,
            ..Usage::new(c(self.input_tokens) + read + write, c(self.output_tokens))
        }
    }
}

fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason.unwrap_or("") {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => FINISH_TOOL_CALLS,
        "guardrail_intervened" | "content_filtered" => "content_filter",
        // end_turn, stop_sequence, and reasons added later.
        _ => "stop",
    }
}

/// A complete Converse answer as an OpenAI chat completion.
pub fn response(body: &[u8], ctx: &AnswerCtx) -> Result<(Bytes, Option<Usage>), String> {
    #[derive(Deserialize)]
    struct Answer {
        output: Option<Output>,
        #[serde(rename = "stopReason")]
        stop_reason: Option<String>,
        usage: Option<WireUsage>,
    }
    #[derive(Deserialize)]
    struct Output {
        message: Option<OutMessage>,
    }
    #[derive(Deserialize)]
    struct OutMessage {
        #[serde(default)]
        content: Vec<Value>,
    }
    let a: Answer = serde_json::from_slice(body)
        .map_err(|e| format!("the upstream sent a body that is not a Converse answer: {e}"))?;
    let Some(message) = a.output.and_then(|o| o.message) else {
        return Err(
            "the upstream's answer has no `output.message`: it is not a Converse answer".into(),
        );
    };
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    let mut tool_calls = Vec::new();
    let mut json_answer = false;
    for block in &message.content {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(r) = block.get("reasoningContent") {
            if let Some(rt) = r.get("reasoningText") {
                let t = rt.get("text").and_then(Value::as_str).unwrap_or("");
                reasoning.push_str(t);
                let mut b = json!({"type": "thinking", "thinking": t});
                if let Some(sig) = rt.get("signature").and_then(Value::as_str) {
                    b["signature"] = sig.into();
                }
                thinking_blocks.push(b);
            } else if let Some(data) = r.get("redactedContent") {
                thinking_blocks.push(json!({"type": "redacted_thinking", "data": data}));
            }
        } else if let Some(call) = block.get("toolUse") {
            let name = call.get("name").and_then(Value::as_str).unwrap_or("");
            let input = call.get("input").cloned().unwrap_or(json!({}));
            if name == JSON_TOOL {
                json_answer = true;
                text.push_str(&input.to_string());
                continue;
            }
            tool_calls.push(json!({
                "id": call.get("toolUseId").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {"name": name, "arguments": input.to_string()},
            }));
        }
    }
    let mut out_message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { text.into() },
    });
    if !tool_calls.is_empty() {
        out_message["tool_calls"] = Value::Array(tool_calls);
    }
    if !thinking_blocks.is_empty() {
        out_message["reasoning_content"] = reasoning.into();
        out_message["thinking_blocks"] = Value::Array(thinking_blocks);
    }
    let finish = if json_answer {
        "stop"
    } else {
        finish_reason(a.stop_reason.as_deref())
    };
    let usage = a.usage.as_ref().map(WireUsage::usage);
    let mut out = json!({
        "id": ctx.id,
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [{"index": 0, "message": out_message, "finish_reason": finish}],
    });
    if let Some(u) = &usage {
        out["usage"] = u.to_openai_json();
    }
    Ok((to_bytes(&out), usage))
}

/// The error class out of `x-amzn-errortype`
/// (`ValidationException:http://internal.amazon.com/…`) or a body's
/// `__type` (`com.amazon.coral.service#ValidationException`).
fn error_class(raw: &str) -> &str {
    let head = raw.split(':').next().unwrap_or(raw);
    head.rsplit('#').next().unwrap_or(head).trim()
}

/// Bedrock's error answer (`{"message":…}`, the class in the
/// `x-amzn-errortype` header) as OpenAI's, status normalised.
pub fn error(
    status: u16,
    retry_after: Option<Duration>,
    error_type: Option<&str>,
    body: &[u8],
) -> UpstreamError {
    #[derive(Deserialize)]
    struct Body {
        message: Option<String>,
        #[serde(rename = "Message")]
        message_upper: Option<String>,
        #[serde(rename = "__type")]
        kind: Option<String>,
    }
    let parsed = serde_json::from_slice::<Body>(body).ok();
    let kind = error_type
        .or_else(|| parsed.as_ref().and_then(|b| b.kind.as_deref()))
        .map(error_class)
        .unwrap_or("");
    let message = match parsed
        .as_ref()
        .and_then(|b| b.message.as_ref().or(b.message_upper.as_ref()))
    {
        Some(m) => m.clone(),
        // A proxy's page or an empty body: kept as text.
        None => openai::parse_error(status, None, body).message,
    };
    let (status, error_type, code) = classify(status, kind, &message);
    UpstreamError {
        status,
        message,
        error_type: Some(error_type.to_string()),
        param: None,
        code: code.map(str::to_string),
        retry_after,
    }
}

/// Status, OpenAI error type and code for a Bedrock error class.
fn classify(status: u16, kind: &str, message: &str) -> (u16, &'static str, Option<&'static str>) {
    let lower = message.to_ascii_lowercase();
    let too_long = [
        "input is too long",
        "too many input tokens",
        "prompt is too long",
        "maximum context length",
        "context window",
    ]
    .iter()
    .any(|p| lower.contains(p));
    if too_long && matches!(kind, "ValidationException" | "") && status < 500 {
        return (
            400,
            "invalid_request_error",
            Some("context_length_exceeded"),
        );
    }
    match kind {
        "ValidationException" => (400, "invalid_request_error", None),
        "AccessDeniedException" => (403, "permission_error", None),
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignatureException"
        | "MissingAuthenticationTokenException"
        | "ExpiredTokenException" => (401, "authentication_error", Some("invalid_api_key")),
        "ResourceNotFoundException" => (404, "invalid_request_error", Some("model_not_found")),
        "ThrottlingException" | "ServiceQuotaExceededException" | "TooManyRequestsException" => {
            (429, "rate_limit_error", Some("rate_limit_exceeded"))
        }
        "ModelTimeoutException" => (408, "timeout", None),
        "ModelNotReadyException" | "ServiceUnavailableException" => {
            (503, "service_unavailable", None)
        }
        // The model failed on Bedrock's side (AWS answers 424 for it,
        // which no client retries).
        "InternalServerException" | "ModelErrorException" | "ModelStreamErrorException" => {
            (500, "api_error", None)
        }
        "ConflictException" => (409, "invalid_request_error", None),
        _ => match status {
            401 => (401, "authentication_error", Some("invalid_api_key")),
            403 => (403, "permission_error", None),
            429 => (429, "rate_limit_error", Some("rate_limit_exceeded")),
            s if s >= 500 => (s, "api_error", None),
            s => (s, "invalid_request_error", None),
        },
    }
}

#[cfg(test)]
mod tests;
