//! Anthropic's Messages API (`POST /v1/messages`) spoken BY clients: their
//! requests become the gateway's OpenAI chat requests, and its OpenAI
//! answers, streams and errors go back in Anthropic's shape. The reverse
//! of [`super::anthropic`], which speaks Messages to upstreams: the same
//! facts, read the other way round.
//!
//! Only the body is translated here; the HTTP layer runs the translated
//! request through the usual pipeline, whatever provider serves it.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::sse::SseDecoder;
use super::{openai, Usage};
use crate::error::GatewayError;

/// What the answer's translation needs to know about the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundInfo {
    /// The model as the client named it: Anthropic answers echo it.
    pub model: String,
    pub stream: bool,
}

type Obj = Map<String, Value>;

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::invalid(message, None)
}

// ---------------------------------------------------------------------------
// Field access with error messages naming the field.

/// `a.b`, or `b` at the top level.
fn path(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

/// A field's value; JSON `null` counts as absent, as Anthropic reads it.
fn get<'a>(o: &'a Obj, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|v| !v.is_null())
}

fn wrong(at: &str, key: &str, what: &str) -> GatewayError {
    invalid(format!("`{}` must be {what}", path(at, key)))
}

fn required(at: &str, key: &str) -> GatewayError {
    invalid(format!("`{}` is required", path(at, key)))
}

fn opt_str<'a>(o: &'a Obj, key: &str, at: &str) -> Result<Option<&'a str>, GatewayError> {
    match get(o, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(wrong(at, key, "a string")),
    }
}

fn req_str<'a>(o: &'a Obj, key: &str, at: &str) -> Result<&'a str, GatewayError> {
    opt_str(o, key, at)?.ok_or_else(|| required(at, key))
}

fn opt_obj<'a>(o: &'a Obj, key: &str, at: &str) -> Result<Option<&'a Obj>, GatewayError> {
    match get(o, key) {
        None => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(wrong(at, key, "an object")),
    }
}

fn req_obj<'a>(o: &'a Obj, key: &str, at: &str) -> Result<&'a Obj, GatewayError> {
    opt_obj(o, key, at)?.ok_or_else(|| required(at, key))
}

fn opt_bool(o: &Obj, key: &str, at: &str) -> Result<Option<bool>, GatewayError> {
    match get(o, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(wrong(at, key, "a boolean")),
    }
}

fn opt_number(o: &Obj, key: &str, at: &str) -> Result<Option<Value>, GatewayError> {
    match get(o, key) {
        None => Ok(None),
        Some(v @ Value::Number(_)) => Ok(Some(v.clone())),
        Some(_) => Err(wrong(at, key, "a number")),
    }
}

fn opt_count(o: &Obj, key: &str, at: &str) -> Result<Option<u64>, GatewayError> {
    match get(o, key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| wrong(at, key, "a non-negative integer")),
    }
}

fn as_obj<'a>(v: &'a Value, at: &str) -> Result<&'a Obj, GatewayError> {
    v.as_object()
        .ok_or_else(|| invalid(format!("`{at}` must be an object")))
}

// ---------------------------------------------------------------------------
// Requests.

/// An Anthropic Messages request as the gateway's OpenAI chat request.
pub fn to_openai_request(body: &[u8]) -> Result<(Vec<u8>, InboundInfo), GatewayError> {
    let (out, info) = translate(body, true)?;
    Ok((to_vec(&Value::Object(out)), info))
}

fn to_vec(v: &Value) -> Vec<u8> {
    // Serializing a `Value` into memory cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// `count_tokens` bodies are Messages bodies without `max_tokens`; both go
/// through the one translation so they are validated alike.
fn translate(body: &[u8], wants_max_tokens: bool) -> Result<(Obj, InboundInfo), GatewayError> {
    let req: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("The request body is not valid JSON: {e}")))?;
    let Value::Object(req) = req else {
        return Err(invalid("The request body must be a JSON object."));
    };
    let model = match get(&req, "model") {
        None => return Err(GatewayError::invalid("`model` is required", Some("model"))),
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => {
            return Err(GatewayError::invalid(
                "`model` must not be empty",
                Some("model"),
            ))
        }
        Some(_) => {
            return Err(GatewayError::invalid(
                "`model` must be a string",
                Some("model"),
            ))
        }
    };
    let max_tokens = match get(&req, "max_tokens") {
        None if wants_max_tokens => {
            return Err(GatewayError::invalid(
                "`max_tokens` is required",
                Some("max_tokens"),
            ))
        }
        None => None,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Some(n),
            _ => {
                return Err(GatewayError::invalid(
                    "`max_tokens` must be a positive integer",
                    Some("max_tokens"),
                ))
            }
        },
    };
    let stream = opt_bool(&req, "stream", "")?.unwrap_or(false);

    let mut messages = Vec::new();
    if let Some(system) = get(&req, "system") {
        messages.extend(system_message(system)?);
    }
    match get(&req, "messages") {
        None => {
            return Err(GatewayError::invalid(
                "`messages` is required",
                Some("messages"),
            ))
        }
        Some(Value::Array(list)) if !list.is_empty() => {
            for (i, m) in list.iter().enumerate() {
                turn(m, i, &mut messages)?;
            }
        }
        Some(Value::Array(_)) => {
            return Err(GatewayError::invalid(
                "`messages` must not be empty",
                Some("messages"),
            ))
        }
        Some(_) => {
            return Err(GatewayError::invalid(
                "`messages` must be a list of messages",
                Some("messages"),
            ))
        }
    }

    let mut out = Obj::new();
    out.insert("model".into(), model.clone().into());
    out.insert("messages".into(), Value::Array(messages));
    if let Some(n) = max_tokens {
        out.insert("max_tokens".into(), n.into());
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = opt_number(&req, key, "")? {
            out.insert(key.into(), v);
        }
    }
    if let Some(k) = opt_count(&req, "top_k", "")? {
        out.insert("top_k".into(), k.into());
    }
    if let Some(stop) = get(&req, "stop_sequences") {
        let list = stop
            .as_array()
            .filter(|l| l.iter().all(Value::is_string))
            .ok_or_else(|| invalid("`stop_sequences` must be a list of strings"))?;
        if !list.is_empty() {
            out.insert("stop".into(), Value::Array(list.clone()));
        }
    }
    if stream {
        out.insert("stream".into(), true.into());
        // The usage chunk is where the Anthropic stream's token counts
        // come from; without it message_delta would report zeros.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(meta) = opt_obj(&req, "metadata", "")? {
        if let Some(user) = opt_str(meta, "user_id", "metadata")? {
            out.insert("user".into(), user.into());
        }
    }

    let tools = match get(&req, "tools") {
        None => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, t)| tool(t, &format!("tools[{i}]")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("`tools` must be a list of tools")),
    };
    let choice = match get(&req, "tool_choice") {
        None => None,
        Some(v) => Some(tool_choice(as_obj(v, "tool_choice")?)?),
    };
    // OpenAI refuses `tool_choice` and `parallel_tool_calls` without
    // tools, where Anthropic accepts them; with no tools they mean nothing.
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some((choice, no_parallel)) = choice {
            out.insert("tool_choice".into(), choice);
            if no_parallel {
                out.insert("parallel_tool_calls".into(), false.into());
            }
        }
    }

    if let Some(thinking) = opt_obj(&req, "thinking", "")? {
        let kind = req_str(thinking, "type", "thinking")?;
        // Disabled is the default everywhere; sending it would only get
        // the request refused by providers that take no `thinking`.
        if kind != "disabled" {
            out.insert("thinking".into(), Value::Object(thinking.clone()));
        }
    }

    // Structured outputs: `output_config.format` (GA) or the beta's
    // `output_format`, both `{"type":"json_schema","schema":…}`.
    let format = match opt_obj(&req, "output_config", "")? {
        Some(config) => {
            opt_obj(config, "format", "output_config")?.map(|f| (f, "output_config.format"))
        }
        None => None,
    }
    .or(opt_obj(&req, "output_format", "")?.map(|f| (f, "output_format")));
    if let Some((format, at)) = format {
        match req_str(format, "type", at)? {
            "json_schema" => {
                let schema = req_obj(format, "schema", at)?;
                // Not `strict`: OpenAI's strict mode refuses schemas that
                // Anthropic takes (optional properties, for one).
                out.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}),
                );
            }
            other => {
                return Err(invalid(format!(
                    "`{at}.type` {other:?} is not supported: expected json_schema"
                )))
            }
        }
    }

    // Remote MCP servers are run by Anthropic's API itself; ignoring them
    // would silently take the model's tools away.
    if get(&req, "mcp_servers").is_some_and(|v| v.as_array().is_none_or(|l| !l.is_empty())) {
        return Err(invalid("`mcp_servers` is not supported by this gateway"));
    }

    Ok((out, InboundInfo { model, stream }))
}

/// The system prompt as the leading system message.
fn system_message(system: &Value) -> Result<Option<Value>, GatewayError> {
    match system {
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(json!({"role": "system", "content": s}))),
        Value::Array(blocks) => {
            let parts = blocks
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let at = format!("system[{i}]");
                    let b = as_obj(b, &at)?;
                    match req_str(b, "type", &at)? {
                        "text" => text_part(b, &at),
                        other => Err(invalid(format!("`{at}.type` must be text, not {other:?}"))),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((!parts.is_empty()).then(|| json!({"role": "system", "content": parts})))
        }
        _ => Err(invalid(
            "`system` must be a string or a list of text blocks",
        )),
    }
}

/// One Anthropic turn as one or more OpenAI messages.
fn turn(m: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), GatewayError> {
    let at = format!("messages[{i}]");
    let m = as_obj(m, &at)?;
    let role = req_str(m, "role", &at)?;
    let content = get(m, "content").ok_or_else(|| required(&at, "content"))?;
    let blocks = match content {
        Value::String(s) => {
            out.push(json!({"role": role_name(role, &at)?, "content": s}));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => {
            return Err(wrong(
                &at,
                "content",
                "a string or a list of content blocks",
            ))
        }
    };
    match role_name(role, &at)? {
        "user" => user_turn(blocks, &at, out),
        _ => {
            out.push(assistant_turn(blocks, &at)?);
            Ok(())
        }
    }
}

fn role_name(role: &str, at: &str) -> Result<&'static str, GatewayError> {
    match role {
        "user" => Ok("user"),
        "assistant" => Ok("assistant"),
        other => Err(invalid(format!(
            "`{at}.role` must be user or assistant, not {other:?} (the system prompt goes in `system`)"
        ))),
    }
}

fn user_turn(blocks: &[Value], at: &str, out: &mut Vec<Value>) -> Result<(), GatewayError> {
    if blocks.is_empty() {
        return Err(invalid(format!("`{at}.content` must not be empty")));
    }
    let mut results = Vec::new();
    // Images and documents returned by tools: OpenAI tool messages carry
    // text only, so they ride in the user message that follows.
    let mut result_parts = Vec::new();
    let mut parts = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        let b = as_obj(b, &at)?;
        match req_str(b, "type", &at)? {
            "tool_result" => results.push(tool_result(b, &at, &mut result_parts)?),
            kind @ ("tool_use" | "thinking" | "redacted_thinking") => {
                return Err(invalid(format!(
                    "`{at}`: {kind} blocks belong in assistant turns"
                )))
            }
            kind => parts.push(part(b, kind, &at)?),
        }
    }
    // Tool results first: they answer the previous assistant turn, and
    // OpenAI wants tool messages right after the calls they answer.
    out.extend(results);
    result_parts.extend(parts);
    if !result_parts.is_empty() {
        out.push(json!({"role": "user", "content": result_parts}));
    }
    Ok(())
}

fn text_part(b: &Obj, at: &str) -> Result<Value, GatewayError> {
    let mut p = json!({"type": "text", "text": req_str(b, "text", at)?});
    if let Some(cc) = get(b, "cache_control") {
        p["cache_control"] = cc.clone();
    }
    Ok(p)
}

/// A user content block (text, image, document) as an OpenAI content part.
fn part(b: &Obj, kind: &str, at: &str) -> Result<Value, GatewayError> {
    match kind {
        "text" => text_part(b, at),
        "image" => {
            let src_at = path(at, "source");
            let src = req_obj(b, "source", at)?;
            let url = match req_str(src, "type", &src_at)? {
                "base64" => format!(
                    "data:{};base64,{}",
                    req_str(src, "media_type", &src_at)?,
                    req_str(src, "data", &src_at)?
                ),
                "url" => req_str(src, "url", &src_at)?.to_string(),
                other => {
                    return Err(invalid(format!(
                        "`{src_at}.type` {other:?} is not supported: send images as base64 or url"
                    )))
                }
            };
            Ok(json!({"type": "image_url", "image_url": {"url": url}}))
        }
        "document" => {
            let src_at = path(at, "source");
            let src = req_obj(b, "source", at)?;
            match req_str(src, "type", &src_at)? {
                "base64" => {
                    let media = req_str(src, "media_type", &src_at)?;
                    let data = req_str(src, "data", &src_at)?;
                    let name = opt_str(b, "title", at)?.unwrap_or("document.pdf");
                    Ok(json!({"type": "file", "file": {
                        "filename": name,
                        "file_data": format!("data:{media};base64,{data}"),
                    }}))
                }
                "text" => {
                    let mut p = json!({"type": "text", "text": req_str(src, "data", &src_at)?});
                    if let Some(cc) = get(b, "cache_control") {
                        p["cache_control"] = cc.clone();
                    }
                    Ok(p)
                }
                other => Err(invalid(format!(
                    "`{src_at}.type` {other:?} is not supported: send documents as base64 or text"
                ))),
            }
        }
        other => Err(invalid(format!(
            "`{at}.type` {other:?} is not supported in user turns: expected text, image, document or tool_result"
        ))),
    }
}

/// A `tool_result` block as an OpenAI tool message; its non-text content
/// goes to `extra`.
fn tool_result(b: &Obj, at: &str, extra: &mut Vec<Value>) -> Result<Value, GatewayError> {
    let id = req_str(b, "tool_use_id", at)?;
    let mut texts = Vec::new();
    match get(b, "content") {
        None => {}
        Some(Value::String(s)) => texts.push(s.clone()),
        Some(Value::Array(blocks)) => {
            for (k, c) in blocks.iter().enumerate() {
                let at = format!("{at}.content[{k}]");
                let c = as_obj(c, &at)?;
                let p = match req_str(c, "type", &at)? {
                    kind @ ("text" | "image" | "document") => part(c, kind, &at)?,
                    other => {
                        return Err(invalid(format!(
                            "`{at}.type` {other:?} is not supported in tool results: expected text, image or document"
                        )))
                    }
                };
                match p.get("text").and_then(Value::as_str) {
                    Some(t) => texts.push(t.to_string()),
                    None => extra.push(p),
                }
            }
        }
        Some(_) => return Err(wrong(at, "content", "a string or a list of content blocks")),
    }
    let mut text = texts.join("\n");
    // OpenAI tool messages have no error flag; the model still has to
    // know the call failed.
    if opt_bool(b, "is_error", at)? == Some(true) {
        text = if text.is_empty() {
            "Error".to_string()
        } else {
            format!("Error: {text}")
        };
    }
    Ok(json!({"role": "tool", "tool_call_id": id, "content": text}))
}

fn assistant_turn(blocks: &[Value], at: &str) -> Result<Value, GatewayError> {
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    let mut thinking = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        let b = as_obj(b, &at)?;
        match req_str(b, "type", &at)? {
            "text" => parts.push(text_part(b, &at)?),
            "tool_use" => {
                let input = get(b, "input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": req_str(b, "id", &at)?,
                    "type": "function",
                    "function": {
                        "name": req_str(b, "name", &at)?,
                        "arguments": input.to_string(),
                    },
                }));
            }
            "thinking" => {
                req_str(b, "thinking", &at)?;
                // Unsigned thinking (what a non-Anthropic upstream's
                // reasoning became) can be verified by no provider: passing
                // it back would only get the request refused.
                if opt_str(b, "signature", &at)?.is_some_and(|s| !s.is_empty()) {
                    thinking.push(Value::Object(b.clone()));
                }
            }
            "redacted_thinking" => {
                req_str(b, "data", &at)?;
                thinking.push(Value::Object(b.clone()));
            }
            other => {
                return Err(invalid(format!(
                    "`{at}.type` {other:?} is not supported in assistant turns: expected text, tool_use, thinking or redacted_thinking"
                )))
            }
        }
    }
    let content = match (parts.is_empty(), calls.is_empty()) {
        (true, false) => Value::Null,
        (true, true) => "".into(),
        (false, _) => Value::Array(parts),
    };
    let mut m = json!({"role": "assistant", "content": content});
    if !calls.is_empty() {
        m["tool_calls"] = Value::Array(calls);
    }
    if !thinking.is_empty() {
        m["thinking_blocks"] = Value::Array(thinking);
    }
    Ok(m)
}

fn tool(t: &Value, at: &str) -> Result<Value, GatewayError> {
    let t = as_obj(t, at)?;
    match opt_str(t, "type", at)? {
        None | Some("custom") => {}
        Some(other) => {
            return Err(invalid(format!(
                "`{at}.type` {other:?} is not supported: Anthropic's server and built-in tools run only on Anthropic's API; define a custom tool (name, description, input_schema)"
            )))
        }
    }
    let mut function = json!({
        "name": req_str(t, "name", at)?,
        "parameters": req_obj(t, "input_schema", at)?,
    });
    if let Some(d) = opt_str(t, "description", at)? {
        function["description"] = d.into();
    }
    if let Some(strict) = opt_bool(t, "strict", at)? {
        function["strict"] = strict.into();
    }
    Ok(json!({"type": "function", "function": function}))
}

/// OpenAI's `tool_choice`, and whether parallel calls are off.
fn tool_choice(c: &Obj) -> Result<(Value, bool), GatewayError> {
    let at = "tool_choice";
    let choice = match req_str(c, "type", at)? {
        "auto" => "auto".into(),
        "any" => "required".into(),
        "none" => "none".into(),
        "tool" => json!({"type": "function", "function": {"name": req_str(c, "name", at)?}}),
        other => {
            return Err(invalid(format!(
                "`tool_choice.type` must be auto, any, tool or none, not {other:?}"
            )))
        }
    };
    Ok((
        choice,
        opt_bool(c, "disable_parallel_tool_use", at)? == Some(true),
    ))
}

/// The text `/v1/messages/count_tokens` counts: system prompt, messages
/// (text, tool calls and results, thinking) and tool definitions. Images
/// and documents are not text and are not counted.
pub fn count_tokens_text(body: &[u8]) -> Result<String, GatewayError> {
    let (req, _) = translate(body, false)?;
    let mut out = String::new();
    let mut push = |s: &str| {
        if !s.is_empty() {
            out.push_str(s);
            out.push('\n');
        }
    };
    for m in req
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match m.get("content") {
            Some(Value::String(s)) => push(s),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .for_each(&mut push),
            _ => {}
        }
        for call in m
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let f = &call["function"];
            push(f["name"].as_str().unwrap_or(""));
            push(f["arguments"].as_str().unwrap_or(""));
        }
        for block in m
            .get("thinking_blocks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            push(block.get("thinking").and_then(Value::as_str).unwrap_or(""));
        }
    }
    for t in req
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let f = &t["function"];
        push(f["name"].as_str().unwrap_or(""));
        push(f["description"].as_str().unwrap_or(""));
        push(&f["parameters"].to_string());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Answers.

/// `msg_…` from the OpenAI id; answers that came from Anthropic already
/// carry one.
fn message_id(openai_id: Option<&str>) -> String {
    match openai_id {
        Some(id) if id.starts_with("msg_") => id.to_string(),
        Some(id) if !id.is_empty() => {
            format!("msg_{}", id.strip_prefix("chatcmpl-").unwrap_or(id))
        }
        _ => format!("msg_{}", uuid::Uuid::new_v4().simple()),
    }
}

/// A tool-use id for a call the provider sent without one, stable within
/// the answer so a stream cut differently still names it the same.
fn tool_id(message_id: &str, n: usize) -> String {
    format!(
        "toolu_{}_{n}",
        message_id.strip_prefix("msg_").unwrap_or(message_id)
    )
}

fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// OpenAI counts cached prompt tokens inside `prompt_tokens`; Anthropic's
/// `input_tokens` leaves out both cache reads and cache writes.
fn input_tokens(u: &Usage) -> u64 {
    u.prompt_tokens
        .saturating_sub(u.cached_tokens)
        .saturating_sub(u.cache_creation_tokens)
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": input_tokens(u),
        "output_tokens": u.completion_tokens,
        "cache_creation_input_tokens": u.cache_creation_tokens,
        "cache_read_input_tokens": u.cached_tokens,
    })
}

/// Tool-call arguments as the object Anthropic's `input` must be.
fn arguments_object(args: Option<&Value>) -> Value {
    let parsed = match args {
        Some(Value::String(s)) => serde_json::from_str(s).ok(),
        Some(v @ Value::Object(_)) => Some(v.clone()),
        _ => None,
    };
    match parsed {
        Some(v @ Value::Object(_)) => v,
        _ => json!({}),
    }
}

/// Text of an OpenAI message `content`: a string or text parts.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// A complete OpenAI chat completion as an Anthropic message.
pub fn to_anthropic_response(openai_body: &[u8], info: &InboundInfo) -> Result<Vec<u8>, String> {
    #[derive(Deserialize)]
    struct Completion {
        id: Option<String>,
        choices: Vec<Value>,
        #[serde(default)]
        usage: Option<Usage>,
    }
    let c: Completion = serde_json::from_slice(openai_body)
        .map_err(|e| format!("the answer is not an OpenAI chat completion: {e}"))?;
    let choice = c
        .choices
        .iter()
        .find(|ch| ch.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        .ok_or("the answer has no choices")?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    let str_of = |k: &str| message.get(k).and_then(Value::as_str).unwrap_or("");
    let id = message_id(c.id.as_deref());

    let mut content = Vec::new();
    let kept: Vec<Value> = message
        .get("thinking_blocks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|b| {
            matches!(
                b.get("type").and_then(Value::as_str),
                Some("thinking" | "redacted_thinking")
            )
        })
        .cloned()
        .collect();
    let reasoning = match str_of("reasoning_content") {
        "" => str_of("reasoning"),
        r => r,
    };
    if !kept.is_empty() {
        content.extend(kept);
    } else if !reasoning.is_empty() {
        content.push(json!({"type": "thinking", "thinking": reasoning, "signature": ""}));
    }

    let mut text = content_text(message.get("content"));
    let mut finish = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .map(stop_reason);
    if text.is_empty() && !str_of("refusal").is_empty() {
        text = str_of("refusal").to_string();
        finish = Some("refusal");
    }
    let calls: Vec<Value> = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(n, call)| {
            let f = call.get("function").unwrap_or(&Value::Null);
            json!({
                "type": "tool_use",
                "id": call.get("id").and_then(Value::as_str).map_or_else(|| tool_id(&id, n), str::to_string),
                "name": f.get("name").and_then(Value::as_str).unwrap_or(""),
                "input": arguments_object(f.get("arguments")),
            })
        })
        .collect();
    // Clients read `content[0].text`; an answer with nothing else still
    // gets its (empty) text block.
    if !text.is_empty() || (content.is_empty() && calls.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    let has_calls = !calls.is_empty();
    content.extend(calls);
    // Some providers finish a tool-calling answer with `stop`; Anthropic
    // clients loop on `tool_use`.
    let stop = match finish {
        Some("end_turn") | None if has_calls => "tool_use",
        Some(s) => s,
        None => "end_turn",
    };
    let usage = c.usage.unwrap_or_default();
    Ok(to_vec(&json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": info.model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": usage_json(&usage),
    })))
}

/// Anthropic's error body for a status the gateway answers with.
pub fn error_body(status: u16, message: &str) -> Vec<u8> {
    let kind = match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        // Anthropic's reference: 400, and the 4xx it names no type for.
        _ if (400..500).contains(&status) => "invalid_request_error",
        _ => "api_error",
    };
    to_vec(&json!({"type": "error", "error": {"type": kind, "message": message}}))
}

// ---------------------------------------------------------------------------
// Streams.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Text,
    Thinking,
    /// A tool call, by its OpenAI `index`.
    Tool(u64),
}

/// The gateway's OpenAI stream (chat.completion.chunk events) turned into
/// Anthropic's named events as it arrives.
pub struct StreamTranslator {
    sse: SseDecoder,
    model: String,
    /// Set by message_start.
    id: Option<String>,
    open: Option<(Kind, usize)>,
    next_index: usize,
    /// The tool calls seen, in order: OpenAI index and tool-use id.
    tools: Vec<(u64, String)>,
    stop: Option<&'static str>,
    usage: Option<Usage>,
    delta_sent: bool,
    done: bool,
}

fn sse_event(out: &mut Vec<u8>, data: &Value) {
    let kind = data.get("type").and_then(Value::as_str).unwrap_or("");
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(&to_vec(data));
    out.extend_from_slice(b"\n\n");
}

impl StreamTranslator {
    pub fn new(info: &InboundInfo) -> StreamTranslator {
        StreamTranslator {
            sse: SseDecoder::new(),
            model: info.model.clone(),
            id: None,
            open: None,
            next_index: 0,
            tools: Vec::new(),
            stop: None,
            usage: None,
            delta_sent: false,
            done: false,
        }
    }

    /// Anthropic SSE bytes for the next piece of the OpenAI stream. Errs
    /// only on an event too large to buffer.
    pub fn push(&mut self, sse_bytes: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        if self.done {
            return Ok(out);
        }
        self.sse.push(sse_bytes);
        while !self.done {
            match self.sse.next_event() {
                Ok(Some(ev)) => self.event(&ev, &mut out),
                Ok(None) => break,
                Err(_) => return Err(openai::TOO_LARGE.into()),
            }
        }
        Ok(out)
    }

    /// The closing events still owed at the end of the input. A stream
    /// that never said `[DONE]` was cut: it ends with an error event, not
    /// message_stop, so the client does not take a partial answer as whole.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        if let Some(ev) = self.sse.finish() {
            self.event(&ev, &mut out);
        }
        if !self.done {
            self.fail(&mut out, "the stream ended before the answer was complete");
        }
        out
    }

    fn event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if data == b"[DONE]" {
            self.complete(out);
            return;
        }
        let Ok(Value::Object(chunk)) = serde_json::from_slice::<Value>(data) else {
            self.fail(out, "the upstream sent an invalid stream event");
            return;
        };
        if chunk.get("choices").is_none() {
            if let Some(e) = get(&chunk, "error") {
                let message = match e.get("message") {
                    Some(Value::String(m)) => m.clone(),
                    _ => e.to_string(),
                };
                self.fail(out, &message);
                return;
            }
        }
        self.chunk(&chunk, out);
    }

    fn chunk(&mut self, chunk: &Obj, out: &mut Vec<u8>) {
        if let Some(u) = get(chunk, "usage") {
            if let Ok(u) = serde_json::from_value::<Usage>(u.clone()) {
                self.usage = Some(u);
            }
        }
        self.start(chunk.get("id").and_then(Value::as_str), out);
        if self.delta_sent {
            return;
        }
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0);
        if let Some(choice) = choice {
            if let Some(delta) = choice.get("delta") {
                if self.delta(delta, out).is_err() {
                    return;
                }
            }
            if let Some(finish) = choice.get("finish_reason").and_then(Value::as_str) {
                self.close(out);
                self.stop = Some(stop_reason(finish));
            }
        }
        // The usage chunk follows the finish_reason chunk: message_delta
        // waits for it so it can carry the real counts.
        if self.stop.is_some() && self.usage.is_some() {
            self.message_delta(out);
        }
    }

    fn start(&mut self, openai_id: Option<&str>, out: &mut Vec<u8>) {
        if self.id.is_some() {
            return;
        }
        let id = message_id(openai_id);
        let u = self.usage.unwrap_or_default();
        sse_event(
            out,
            &json!({"type": "message_start", "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {
                    "input_tokens": input_tokens(&u),
                    "output_tokens": 0,
                    "cache_creation_input_tokens": u.cache_creation_tokens,
                    "cache_read_input_tokens": u.cached_tokens,
                },
            }}),
        );
        self.id = Some(id);
    }

    /// One choice's delta. Errs (having failed the stream) on a tool call
    /// resumed after another began: its block is closed and cannot grow.
    fn delta(&mut self, delta: &Value, out: &mut Vec<u8>) -> Result<(), ()> {
        let text = |k: &str| {
            delta
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        if let Some(r) = text("reasoning_content").or_else(|| text("reasoning")) {
            self.piece(
                Kind::Thinking,
                json!({"type": "thinking_delta", "thinking": r}),
                out,
            );
        }
        // Providers that relay Anthropic's thinking send the signature and
        // redacted blocks here.
        for b in delta
            .get("thinking_blocks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match b.get("type").and_then(Value::as_str) {
                Some("thinking") => {
                    let sig = b.get("signature").and_then(Value::as_str).unwrap_or("");
                    if !sig.is_empty() && matches!(self.open, Some((Kind::Thinking, _))) {
                        self.piece(
                            Kind::Thinking,
                            json!({"type": "signature_delta", "signature": sig}),
                            out,
                        );
                    }
                }
                Some("redacted_thinking") => {
                    // Whole on arrival: opened and closed at once.
                    let index = self.open_block(out, None, b.clone());
                    sse_event(out, &json!({"type": "content_block_stop", "index": index}));
                }
                _ => {}
            }
        }
        for k in ["content", "refusal"] {
            if let Some(t) = text(k) {
                self.piece(Kind::Text, json!({"type": "text_delta", "text": t}), out);
            }
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.tool_call(call, out)?;
        }
        Ok(())
    }

    fn tool_call(&mut self, call: &Value, out: &mut Vec<u8>) -> Result<(), ()> {
        let call_id = call
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let current = match self.open {
            Some((Kind::Tool(k), _)) => Some(k),
            _ => None,
        };
        // Some OpenAI-compatible servers leave out `index`: a call is then
        // known by its id, and a new id means a new call.
        let key = match call.get("index").and_then(Value::as_u64) {
            Some(k) => k,
            None => {
                let known = call_id
                    .and_then(|id| self.tools.iter().find(|(_, t)| t == id).map(|(k, _)| *k));
                match (known, current) {
                    (Some(k), _) => k,
                    (None, Some(k)) if call_id.is_none() => k,
                    _ => self.tools.iter().map(|(k, _)| k + 1).max().unwrap_or(0),
                }
            }
        };
        if current != Some(key) {
            if self.tools.iter().any(|(k, _)| *k == key) {
                self.fail(
                    out,
                    "the upstream interleaved tool calls, which an Anthropic stream cannot carry",
                );
                return Err(());
            }
            let n = self.tools.len();
            let id = call_id.map_or_else(
                || tool_id(self.id.as_deref().unwrap_or(""), n),
                str::to_string,
            );
            let name = call
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            self.tools.push((key, id.clone()));
            self.open_block(
                out,
                Some(Kind::Tool(key)),
                json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
            );
        }
        if let Some(args) = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            self.piece(
                Kind::Tool(key),
                json!({"type": "input_json_delta", "partial_json": args}),
                out,
            );
        }
        Ok(())
    }

    /// A delta for a block of `kind`, opening one if another is open.
    fn piece(&mut self, kind: Kind, delta: Value, out: &mut Vec<u8>) {
        let index = match self.open {
            Some((k, i)) if k == kind => i,
            _ => {
                let block = match kind {
                    Kind::Text => json!({"type": "text", "text": ""}),
                    Kind::Thinking => json!({"type": "thinking", "thinking": ""}),
                    // Tool blocks are opened by `tool_call`, with their name.
                    Kind::Tool(_) => return,
                };
                self.open_block(out, Some(kind), block)
            }
        };
        sse_event(
            out,
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
    }

    /// Starts the next block (closing the open one); `kind` None for a
    /// block that takes no deltas.
    fn open_block(&mut self, out: &mut Vec<u8>, kind: Option<Kind>, block: Value) -> usize {
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        sse_event(
            out,
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        self.open = kind.map(|k| (k, index));
        index
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((_, index)) = self.open.take() {
            sse_event(out, &json!({"type": "content_block_stop", "index": index}));
        }
    }

    fn message_delta(&mut self, out: &mut Vec<u8>) {
        let mut stop = self.stop.unwrap_or("end_turn");
        if stop == "end_turn" && !self.tools.is_empty() {
            stop = "tool_use";
        }
        let usage = match &self.usage {
            Some(u) => usage_json(u),
            None => json!({"output_tokens": 0}),
        };
        sse_event(
            out,
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": null},
                "usage": usage,
            }),
        );
        self.delta_sent = true;
    }

    /// `[DONE]`: the answer is whole.
    fn complete(&mut self, out: &mut Vec<u8>) {
        self.start(None, out);
        self.close(out);
        if !self.delta_sent {
            self.message_delta(out);
        }
        sse_event(out, &json!({"type": "message_stop"}));
        self.done = true;
    }

    fn fail(&mut self, out: &mut Vec<u8>, message: &str) {
        self.close(out);
        sse_event(
            out,
            &json!({"type": "error", "error": {"type": "api_error", "message": message}}),
        );
        self.done = true;
    }
}

#[cfg(test)]
mod tests;
