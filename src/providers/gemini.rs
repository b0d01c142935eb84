//! Google's Gemini API (Generative Language, `models/{model}:generateContent`,
//! `:streamGenerateContent?alt=sse`, `:batchEmbedContents`) spoken for
//! OpenAI callers: messages as `contents` turns of `user` and `model`,
//! system prompts as `systemInstruction`, tool calls and results as
//! `functionCall` / `functionResponse` parts; candidates, thoughts and
//! `usageMetadata` back in OpenAI's shape; each SSE event of a stream (a
//! whole `GenerateContentResponse`, with no end sentinel) turned into
//! chat-completion chunks.

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::params::{
    to_bytes, unsupported_params, ChatParams, Content, FunctionDef, ImageUrl, Message, Part,
    ResponseFormat, Role, ToolChoice, FINISH_TOOL_CALLS, GATEWAY_FIELDS,
};
use super::sse::SseDecoder;
use super::{clamped_count, openai, AnswerCtx, Endpoint, StreamStep, Usage};
use crate::error::{GatewayError, UpstreamError};
use crate::request::InferenceRequest;
use crate::topology::DeploymentTarget;

const SUPPORTED: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "n",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    // Accepted and not sent: Gemini has no end-user field, and refusing
    // it would break clients that always set it.
    "user",
    "reasoning_effort",
    "thinking",
];

/// Between a tool call's id and the thought signature Gemini attached to
/// the call. Gemini 3 refuses a conversation whose earlier function calls
/// lost their signatures, and the id is the one thing every OpenAI client
/// hands back verbatim; the alphabet of the base64 signature never
/// contains `_`, so the split is unambiguous.
pub const SIGNATURE_SEP: &str = "__thought__";

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::InvalidRequest {
        message: message.into(),
        param: None,
    }
}

/// The request body for the deployment's Gemini method (the URL, which
/// says whether it streams, comes from the topology).
pub fn request(req: &InferenceRequest, target: &DeploymentTarget) -> Result<Bytes, GatewayError> {
    match req.endpoint {
        Endpoint::ChatCompletions => chat_request(req, target),
        Endpoint::Embeddings => embed_request(req, target),
        Endpoint::Completions => Err(invalid("gemini does not support completions requests")),
    }
}

fn chat_request(req: &InferenceRequest, target: &DeploymentTarget) -> Result<Bytes, GatewayError> {
    let p = ChatParams::read(req, "gemini", SUPPORTED, target.drop_params)?;
    if p.parallel_tool_calls == Some(false) && !target.drop_params {
        return Err(invalid(
            "gemini cannot be kept from calling tools in parallel (`parallel_tool_calls: false`). To drop it, set `drop_params = true`.",
        ));
    }
    let mut body = Map::new();
    let (system, contents) = contents(&p.messages)?;
    body.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({ "parts": system }));
    }

    let mut config = Map::new();
    for (name, v) in [
        ("temperature", p.temperature),
        ("topP", p.top_p),
        ("presencePenalty", p.presence_penalty),
        ("frequencyPenalty", p.frequency_penalty),
    ] {
        if let Some(v) = v {
            config.insert(name.into(), v.into());
        }
    }
    // Gemini's counts are int32: a larger value would fail to parse there
    // with a message about JSON rather than about the limit.
    let int32 = |n: u64| n.min(i32::MAX as u64);
    if let Some(k) = p.top_k {
        config.insert("topK".into(), int32(k).into());
    }
    if let Some(max) = p.max_tokens() {
        config.insert("maxOutputTokens".into(), int32(max).into());
    }
    let stop = p.stop_sequences();
    if !stop.is_empty() {
        config.insert("stopSequences".into(), stop.into());
    }
    if let Some(n) = p.n {
        config.insert("candidateCount".into(), int32(n).into());
    }
    if let Some(seed) = p.seed {
        // Gemini's seed is an int32; any fixed mapping keeps runs
        // reproducible, which is all a seed promises.
        config.insert("seed".into(), (seed as i32).into());
    }
    match &p.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            config.insert("responseMimeType".into(), "application/json".into());
        }
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            config.insert("responseMimeType".into(), "application/json".into());
            // Standard JSON Schema, unlike `responseSchema`'s OpenAPI subset,
            // so the client's schema goes as written.
            if let Some(schema) = &json_schema.schema {
                config.insert("responseJsonSchema".into(), schema.clone());
            }
        }
    }
    if let Some(thinking) = thinking_config(&p)? {
        config.insert("thinkingConfig".into(), thinking);
    }
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }

    let declarations: Vec<Value> = p
        .tools
        .iter()
        .flatten()
        .map(|t| declaration(&t.function))
        .collect();
    if !declarations.is_empty() {
        body.insert(
            "tools".into(),
            json!([{ "functionDeclarations": declarations }]),
        );
        let calling = match &p.tool_choice {
            None => None,
            Some(ToolChoice::Mode(m)) => Some(match m.as_str() {
                "auto" => json!({"mode": "AUTO"}),
                "required" => json!({"mode": "ANY"}),
                "none" => json!({"mode": "NONE"}),
                other => {
                    return Err(invalid(format!(
                    "invalid `tool_choice` {other:?}: expected none, auto, required or a function"
                )))
                }
            }),
            Some(ToolChoice::Named { function }) => Some(json!({
                "mode": "ANY",
                "allowedFunctionNames": [function.name],
            })),
        };
        if let Some(c) = calling {
            body.insert("toolConfig".into(), json!({ "functionCallingConfig": c }));
        }
    }
    Ok(to_bytes(&Value::Object(body)))
}

/// `thinking` (Anthropic's object) wins over `reasoning_effort`, as on the
/// Anthropic wire.
fn thinking_config(p: &ChatParams) -> Result<Option<Value>, GatewayError> {
    if let Some(t) = &p.thinking {
        return match t.get("type").and_then(Value::as_str) {
            Some("enabled") => {
                let budget = t.get("budget_tokens").and_then(Value::as_u64).ok_or_else(|| {
                    invalid("`thinking.budget_tokens` must be a non-negative integer")
                })?;
                Ok(Some(json!({
                    "thinkingBudget": budget.min(i32::MAX as u64),
                    "includeThoughts": true,
                })))
            }
            Some("disabled") => Ok(Some(json!({"thinkingBudget": 0}))),
            _ => Err(invalid(
                "invalid `thinking`: expected {\"type\": \"enabled\", \"budget_tokens\": N} or {\"type\": \"disabled\"}",
            )),
        };
    }
    let Some(effort) = p.reasoning_effort.as_deref() else {
        return Ok(None);
    };
    let budget = match effort {
        "none" => return Ok(Some(json!({"thinkingBudget": 0}))),
        "minimal" | "low" => 1024,
        "medium" => 2048,
        "high" => 4096,
        other => {
            return Err(invalid(format!(
                "invalid `reasoning_effort` {other:?}: expected none, minimal, low, medium or high"
            )))
        }
    };
    Ok(Some(
        json!({"thinkingBudget": budget, "includeThoughts": true}),
    ))
}

/// System parts and the conversation as Gemini wants it: `user` and
/// `model` turns, same-role neighbours merged, tool results as
/// `functionResponse` parts of a user turn.
fn contents(input: &[Message]) -> Result<(Vec<Value>, Vec<Value>), GatewayError> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // Gemini ties a result to its call by the function's name, which an
    // OpenAI tool message does not carry: it is looked up from the latest
    // assistant call with that id (ids may repeat across turns).
    let mut names: Vec<(&str, &str)> = Vec::new();
    for (i, m) in input.iter().enumerate() {
        let (role, parts) = match m.role {
            Role::System | Role::Developer => {
                match &m.content {
                    Some(Content::Text(s)) => system.extend(text_part(s)),
                    Some(Content::Parts(parts)) => {
                        for part in parts {
                            match part {
                                Part::Text { text, .. } => system.extend(text_part(text)),
                                _ => {
                                    return Err(invalid(format!(
                                        "messages[{i}]: gemini takes only text in system messages"
                                    )))
                                }
                            }
                        }
                    }
                    None => {}
                }
                continue;
            }
            Role::User => (
                "user",
                match &m.content {
                    Some(c) => parts_of(c, i)?,
                    None => Vec::new(),
                },
            ),
            Role::Assistant => {
                let mut parts = match &m.content {
                    Some(c) => parts_of(c, i)?,
                    None => Vec::new(),
                };
                for call in m.tool_calls.iter().flatten() {
                    names.push((call.id.as_str(), call.function.name.as_str()));
                    let mut part = json!({"functionCall": {
                        "name": call.function.name,
                        "args": call.function.arguments_json(),
                    }});
                    if let Some(signature) = signature_of(&call.id) {
                        part["thoughtSignature"] = signature.into();
                    }
                    parts.push(part);
                }
                ("model", parts)
            }
            Role::Tool | Role::Function => {
                let by_id = m.tool_call_id.as_deref().and_then(|id| {
                    names
                        .iter()
                        .rev()
                        .find(|(call, _)| *call == id)
                        .map(|(_, name)| *name)
                });
                let name = by_id.or(m.name.as_deref()).ok_or_else(|| {
                    invalid(format!(
                        "messages[{i}]: gemini needs the function's name for a tool result: its `tool_call_id` must match an earlier assistant tool call"
                    ))
                })?;
                let text = m.content.as_ref().map(Content::text).unwrap_or_default();
                let content = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
                (
                    "user",
                    vec![json!({"functionResponse": {
                        "name": name,
                        "response": {"content": content},
                    }})],
                )
            }
        };
        if parts.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, prev)) if *last == role => prev.extend(parts),
            _ => turns.push((role, parts)),
        }
    }
    if turns.is_empty() {
        if system.is_empty() {
            return Err(invalid(
                "`messages` needs at least one message with content for gemini",
            ));
        }
        // Gemini requires contents; a prompt given only as a system
        // message is still a prompt.
        turns.push(("user", std::mem::take(&mut system)));
    }
    let contents = turns
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect();
    Ok((system, contents))
}

/// Gemini refuses an empty text part, which OpenAI histories often hold
/// (an assistant turn that only called tools).
fn text_part(s: &str) -> Option<Value> {
    (!s.is_empty()).then(|| json!({ "text": s }))
}

fn parts_of(content: &Content, i: usize) -> Result<Vec<Value>, GatewayError> {
    match content {
        Content::Text(s) => Ok(text_part(s).into_iter().collect()),
        Content::Parts(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for part in parts {
                match part {
                    Part::Text { text, .. } => out.extend(text_part(text)),
                    Part::ImageUrl { image_url } => out.push(image_part(image_url, i)?),
                    Part::Other => {
                        return Err(invalid(format!(
                            "messages[{i}]: gemini takes text and image_url content parts only"
                        )))
                    }
                }
            }
            Ok(out)
        }
    }
}

fn image_part(image: &ImageUrl, i: usize) -> Result<Value, GatewayError> {
    if let Some((mime, data)) = image.inline() {
        return Ok(json!({"inlineData": {"mimeType": mime, "data": data}}));
    }
    let url = image.url();
    if url.starts_with("data:") {
        return Err(invalid(format!(
            "messages[{i}]: a data: image URL must be base64 (`data:<type>;base64,…`)"
        )));
    }
    Ok(json!({"fileData": {"mimeType": mime_of(url), "fileUri": url}}))
}

/// Gemini wants a media type with every file URI; the URL's extension is
/// all there is to go by.
fn mime_of(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let file = path.rsplit('/').next().unwrap_or(path);
    let ext = file.rsplit_once('.').map_or("", |(_, e)| e);
    match ext.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => "image/jpeg",
    }
}

/// The thought signature carried in a tool call id (see [`SIGNATURE_SEP`]).
fn signature_of(id: &str) -> Option<&str> {
    id.split_once(SIGNATURE_SEP)
        .map(|(_, s)| s)
        .filter(|s| !s.is_empty())
}

/// The id of the `n`th tool call of a choice; deterministic so a stream
/// and a plain answer name the same call alike.
fn call_id(n: usize, signature: Option<&str>) -> String {
    match signature {
        Some(s) if !s.is_empty() => format!("call_{n}{SIGNATURE_SEP}{s}"),
        _ => format!("call_{n}"),
    }
}

fn declaration(f: &FunctionDef) -> Value {
    let mut d = json!({ "name": f.name });
    if let Some(desc) = &f.description {
        d["description"] = desc.clone().into();
    }
    match &f.parameters {
        None => {}
        // Inlining `$ref`s into `parameters` can grow without bound
        // (recursive types); `parametersJsonSchema` takes them as written.
        Some(schema) if has_ref(schema) => d["parametersJsonSchema"] = schema.clone(),
        Some(schema) => {
            let s = schema_for_gemini(schema);
            // An object with no properties is refused ("should be
            // non-empty for OBJECT type"); a tool without arguments is
            // declared with no parameters at all.
            if s.get("properties")
                .and_then(Value::as_object)
                .is_some_and(|p| !p.is_empty())
            {
                d["parameters"] = s;
            }
        }
    }
    d
}

fn has_ref(v: &Value) -> bool {
    match v {
        Value::Object(o) => o.contains_key("$ref") || o.values().any(has_ref),
        Value::Array(a) => a.iter().any(has_ref),
        _ => false,
    }
}

/// The keys of Gemini's `Schema` (an OpenAPI 3.0 subset) copied as they
/// are; the API refuses any key it does not know (`$schema`,
/// `additionalProperties`, `exclusiveMinimum`, …) with "Cannot find field".
const SCHEMA_KEYS: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "maxItems",
    "minItems",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "propertyOrdering",
    "default",
    "minimum",
    "maximum",
];

/// A JSON Schema rewritten into Gemini's `Schema`: unknown keys dropped,
/// `null` in a type list or a union turned into `nullable`, `oneOf` read
/// as `anyOf`, `const` as a one-value `enum`, enum values as strings (the
/// only kind Gemini's enum holds).
pub fn schema_for_gemini(v: &Value) -> Value {
    let Some(obj) = v.as_object() else {
        return json!({});
    };
    let is_null = |s: &Value| s.get("type").and_then(Value::as_str) == Some("null");
    let mut out = Map::new();
    let mut nullable = false;
    let mut merged: Vec<Value> = Vec::new();
    for (k, v) in obj {
        match k.as_str() {
            "type" => match v {
                Value::Array(types) => {
                    let named: Vec<&Value> = types
                        .iter()
                        .filter(|t| t.as_str() != Some("null"))
                        .collect();
                    nullable |= named.len() < types.len();
                    match named.as_slice() {
                        [] => {}
                        [one] => {
                            out.insert("type".into(), (*one).clone());
                        }
                        many => {
                            let each = many.iter().map(|t| json!({ "type": t })).collect();
                            out.insert("anyOf".into(), Value::Array(each));
                        }
                    }
                }
                other => {
                    out.insert("type".into(), other.clone());
                }
            },
            "anyOf" | "oneOf" => {
                let Some(list) = v.as_array() else { continue };
                nullable |= list.iter().any(is_null);
                let subs: Vec<Value> = list
                    .iter()
                    .filter(|s| !is_null(s))
                    .map(schema_for_gemini)
                    .collect();
                match <[Value; 1]>::try_from(subs) {
                    Ok([one]) => merged.push(one),
                    Err(subs) if !subs.is_empty() => {
                        out.insert("anyOf".into(), Value::Array(subs));
                    }
                    Err(_) => {}
                }
            }
            "allOf" => {
                if let Some(list) = v.as_array() {
                    merged.extend(list.iter().map(schema_for_gemini));
                }
            }
            "const" => {
                out.insert("enum".into(), json!([enum_value(v)]));
            }
            "enum" => {
                let Some(list) = v.as_array() else { continue };
                nullable |= list.iter().any(Value::is_null);
                let values = list
                    .iter()
                    .filter(|e| !e.is_null())
                    .map(|e| Value::String(enum_value(e)))
                    .collect();
                out.insert("enum".into(), Value::Array(values));
            }
            "properties" => {
                if let Some(props) = v.as_object() {
                    let props = props
                        .iter()
                        .map(|(name, s)| (name.clone(), schema_for_gemini(s)))
                        .collect();
                    out.insert("properties".into(), Value::Object(props));
                }
            }
            "items" => {
                // A tuple (`items: [..]`) has no Gemini form; its first
                // element says the most about the items.
                let first = match v {
                    Value::Array(list) => list.first(),
                    one => Some(one),
                };
                let items = first.map_or_else(|| json!({}), schema_for_gemini);
                out.insert("items".into(), items);
            }
            key if SCHEMA_KEYS.contains(&key) => {
                out.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
    // A single-branch union and `allOf` parts describe this same value:
    // their keys join it, the schema's own keys winning.
    for sub in merged {
        if let Value::Object(sub) = sub {
            for (k, v) in sub {
                out.entry(k).or_insert(v);
            }
        }
    }
    if nullable {
        out.insert("nullable".into(), true.into());
    }
    if !out.contains_key("type") && out.contains_key("properties") {
        out.insert("type".into(), "object".into());
    }
    Value::Object(out)
}

fn enum_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `batchEmbedContents`: one request per input text.
fn embed_request(req: &InferenceRequest, target: &DeploymentTarget) -> Result<Bytes, GatewayError> {
    let mut input: Option<&RawValue> = None;
    let mut dimensions: Option<u64> = None;
    let mut unsupported = Vec::new();
    for (k, v) in &req.body.0 {
        match k.as_str() {
            "input" => input = Some(&**v),
            "dimensions" if v.get() != "null" => {
                dimensions = Some(serde_json::from_str(v.get()).map_err(|_| {
                    GatewayError::invalid(
                        "`dimensions` must be a positive integer",
                        Some("dimensions"),
                    )
                })?);
            }
            // The OpenAI SDKs ask for base64 unless told otherwise and read
            // a float list just as well, so floats are always sent.
            "dimensions" | "encoding_format" | "user" => {}
            key if GATEWAY_FIELDS.contains(&key) || v.get() == "null" => {}
            key if !target.drop_params => unsupported.push(key.to_string()),
            _ => {}
        }
    }
    if !unsupported.is_empty() {
        return Err(unsupported_params("gemini", &unsupported));
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Input {
        One(String),
        Many(Vec<String>),
    }
    let texts = match input.map(|v| serde_json::from_str::<Input>(v.get())) {
        Some(Ok(Input::One(s))) => vec![s],
        Some(Ok(Input::Many(v))) => v,
        _ => return Err(GatewayError::invalid(
            "gemini embeds text only: `input` must be a string or an array of strings (not tokens)",
            Some("input"),
        )),
    };
    let model = if target.upstream_model.starts_with("models/") {
        target.upstream_model.clone()
    } else {
        format!("models/{}", target.upstream_model)
    };
    let requests: Vec<Value> = texts
        .into_iter()
        .map(|text| {
            let mut r = json!({"model": model, "content": {"parts": [{"text": text}]}});
            if let Some(d) = dimensions {
                r["outputDimensionality"] = d.min(i32::MAX as u64).into();
            }
            r
        })
        .collect();
    Ok(to_bytes(&json!({ "requests": requests })))
}

/// `usageMetadata`, each count clamped as it is parsed so sums of them
/// cannot overflow.
#[derive(Deserialize, Default, Clone, Copy)]
#[serde(default, rename_all = "camelCase")]
struct WireUsage {
    #[serde(deserialize_with = "clamped_count")]
    prompt_token_count: u64,
    #[serde(deserialize_with = "clamped_count")]
    candidates_token_count: u64,
    #[serde(deserialize_with = "clamped_count")]
    thoughts_token_count: u64,
    #[serde(deserialize_with = "clamped_count")]
    cached_content_token_count: u64,
    #[serde(deserialize_with = "clamped_count")]
    tool_use_prompt_token_count: u64,
}

impl WireUsage {
    /// Gemini counts thoughts apart from the candidates and the prompt of
    /// its own tool use (search, code execution) apart from the prompt;
    /// both are billed, as output and input.
    fn usage(&self) -> Usage {
        let u = Usage::new(
            self.prompt_token_count + self.tool_use_prompt_token_count,
            self.candidates_token_count + self.thoughts_token_count,
        );
        Usage {
            cached_tokens: self.cached_content_token_count.min(u.prompt_tokens),
            reasoning_tokens: self.thoughts_token_count.min(u.completion_tokens),
            ..u
        }
    }
}

/// A `GenerateContentResponse`: the whole answer, or one stream event.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    candidates: Option<Vec<Candidate>>,
    prompt_feedback: Option<Value>,
    usage_metadata: Option<WireUsage>,
    model_version: Option<String>,
    response_id: Option<String>,
    /// Only in a stream: the failure that ends it.
    error: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Candidate {
    content: Option<WireContent>,
    finish_reason: Option<String>,
    index: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireContent {
    parts: Vec<WirePart>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct WirePart {
    text: Option<String>,
    thought: bool,
    function_call: Option<WireCall>,
    thought_signature: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireCall {
    name: String,
    args: Option<Value>,
}

impl WireCall {
    /// An OpenAI tool call; `n` numbers it within its choice.
    fn tool_call(&self, n: usize, signature: Option<&str>) -> Value {
        let args = self.args.clone().unwrap_or_else(|| json!({}));
        json!({
            "id": call_id(n, signature),
            "type": "function",
            "function": {"name": self.name, "arguments": args.to_string()},
        })
    }
}

fn finish_reason(reason: &str, called: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => "content_filter",
        _ if called => FINISH_TOOL_CALLS,
        _ => "stop",
    }
}

/// A complete Gemini answer (chat or embeddings) in OpenAI's shape.
pub fn response(
    endpoint: Endpoint,
    body: &[u8],
    ctx: &AnswerCtx,
) -> Result<(Bytes, Option<Usage>), String> {
    match endpoint {
        Endpoint::Embeddings => embed_response(body, ctx),
        Endpoint::ChatCompletions | Endpoint::Completions => chat_response(body, ctx),
    }
}

fn chat_response(body: &[u8], ctx: &AnswerCtx) -> Result<(Bytes, Option<Usage>), String> {
    let a: Answer = serde_json::from_slice(body)
        .map_err(|e| format!("the upstream sent a body that is not a Gemini answer: {e}"))?;
    let choices: Vec<Value> = match (a.candidates.as_deref(), &a.prompt_feedback) {
        (Some(candidates), _) if !candidates.is_empty() => candidates
            .iter()
            .enumerate()
            .map(|(pos, c)| choice(c.index.unwrap_or(pos), c))
            .collect(),
        // The prompt itself was blocked: an answer with nothing in it, as
        // OpenAI reports its own content filter.
        (_, Some(_)) => vec![json!({
            "index": 0,
            "message": {"role": "assistant", "content": null},
            "finish_reason": "content_filter",
        })],
        _ => {
            return Err(
                "the upstream's answer has neither candidates nor promptFeedback: it is not a Gemini answer"
                    .into(),
            )
        }
    };
    let usage = a.usage_metadata.map(|u| u.usage());
    let mut out = json!({
        "id": a.response_id.unwrap_or_else(|| ctx.id.clone()),
        "object": "chat.completion",
        "created": ctx.created,
        "model": a.model_version.unwrap_or_else(|| ctx.model.clone()),
        "choices": choices,
    });
    if let Some(u) = &usage {
        out["usage"] = u.to_openai_json();
    }
    Ok((to_bytes(&out), usage))
}

fn choice(index: usize, c: &Candidate) -> Value {
    let mut text: Option<String> = None;
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for part in c.content.iter().flat_map(|c| &c.parts) {
        if let Some(call) = &part.function_call {
            let n = tool_calls.len();
            tool_calls.push(call.tool_call(n, part.thought_signature.as_deref()));
        } else if let Some(t) = &part.text {
            if part.thought {
                reasoning.push_str(t);
            } else {
                text.get_or_insert_with(String::new).push_str(t);
            }
        }
    }
    let mut message = json!({"role": "assistant", "content": text});
    if !reasoning.is_empty() {
        message["reasoning_content"] = reasoning.into();
    }
    let called = !tool_calls.is_empty();
    if called {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let finish = finish_reason(c.finish_reason.as_deref().unwrap_or("STOP"), called);
    json!({"index": index, "message": message, "finish_reason": finish})
}

/// `{"embeddings":[{"values":[…]}]}` as OpenAI's embedding list, the
/// vectors copied as the upstream wrote them.
fn embed_response(body: &[u8], ctx: &AnswerCtx) -> Result<(Bytes, Option<Usage>), String> {
    #[derive(Deserialize)]
    struct Embedding<'a> {
        #[serde(borrow)]
        values: &'a RawValue,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Embeddings<'a> {
        #[serde(borrow)]
        embeddings: Vec<Embedding<'a>>,
        usage_metadata: Option<WireUsage>,
    }
    let e: Embeddings = serde_json::from_slice(body).map_err(|e| {
        format!("the upstream sent a body that is not a Gemini embeddings answer: {e}")
    })?;
    if let Some(bad) = e
        .embeddings
        .iter()
        .position(|v| !v.values.get().starts_with('['))
    {
        return Err(format!(
            "the upstream's embedding {bad} has no list of values"
        ));
    }
    let usage = e
        .usage_metadata
        .map(|u| Usage::new(u.prompt_token_count, 0));
    let mut out = Vec::with_capacity(body.len() + 64 * e.embeddings.len() + 128);
    out.extend_from_slice(br#"{"object":"list","data":["#);
    for (i, v) in e.embeddings.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(
            format!(r#"{{"object":"embedding","index":{i},"embedding":"#).as_bytes(),
        );
        out.extend_from_slice(v.values.get().as_bytes());
        out.push(b'}');
    }
    out.extend_from_slice(br#"],"model":"#);
    out.extend_from_slice(&to_bytes(&Value::String(ctx.model.clone())));
    let prompt = usage.map_or(0, |u| u.prompt_tokens);
    out.extend_from_slice(
        format!(r#","usage":{{"prompt_tokens":{prompt},"total_tokens":{prompt}}}}}"#).as_bytes(),
    );
    Ok((Bytes::from(out), usage))
}

/// Google's error body (`{"error":{"code","message","status","details"}}`)
/// as OpenAI's, with a `code` for the classes clients act on and the
/// retry hint of a `RetryInfo` detail when no header gave one.
pub fn error(status: u16, retry_after: Option<Duration>, body: &[u8]) -> UpstreamError {
    #[derive(Deserialize)]
    struct Detail {
        code: Option<Value>,
        message: Option<String>,
        status: Option<String>,
        details: Option<Vec<Value>>,
    }
    #[derive(Deserialize)]
    struct Wrapped {
        error: Detail,
    }
    // A stream's error arrives as the one element of a JSON array.
    let parsed = serde_json::from_slice::<Wrapped>(body).ok().or_else(|| {
        serde_json::from_slice::<Vec<Wrapped>>(body)
            .ok()
            .and_then(|v| v.into_iter().next())
    });
    // OpenAI's errors share the wrapper; Google's alone carry a status
    // name or a numeric code.
    let Some(Wrapped { error: d }) = parsed
        .filter(|w| w.error.status.is_some() || w.error.code.as_ref().is_some_and(Value::is_u64))
    else {
        return openai::parse_error(status, retry_after, body);
    };
    let details = d.details.unwrap_or_default();
    let message = d.message.unwrap_or_default();
    let google_status = d.status.unwrap_or_default();
    let (status, error_type, code) = classify(status, &google_status, &message, &details);
    UpstreamError {
        status,
        message,
        error_type: Some(error_type.to_string()),
        param: None,
        code: code.map(str::to_string),
        retry_after: retry_after.or_else(|| retry_info(&details)),
    }
}

fn detail_of<'a>(details: &'a [Value], kind: &str) -> impl Iterator<Item = &'a Value> + 'a {
    let wanted = format!("type.googleapis.com/google.rpc.{kind}");
    details
        .iter()
        .filter(move |d| d.get("@type").and_then(Value::as_str) == Some(wanted.as_str()))
}

/// `RetryInfo.retryDelay` is a protobuf Duration in JSON: `"30s"`,
/// `"1.5s"`; clamped like any other upstream hint.
fn retry_info(details: &[Value]) -> Option<Duration> {
    let delay = detail_of(details, "RetryInfo")
        .find_map(|d| d.get("retryDelay").and_then(Value::as_str))?;
    openai::retry_after(Some(delay.trim().strip_suffix('s')?), None)
}

/// Status, OpenAI error type and code for a Google error.
fn classify(
    status: u16,
    google_status: &str,
    message: &str,
    details: &[Value],
) -> (u16, &'static str, Option<&'static str>) {
    let lower = message.to_ascii_lowercase();
    if lower.contains("input token count") && lower.contains("exceeds the maximum") {
        return (
            400,
            "invalid_request_error",
            Some("context_length_exceeded"),
        );
    }
    if status == 429 || google_status == "RESOURCE_EXHAUSTED" {
        return (429, "rate_limit_error", Some("rate_limit_exceeded"));
    }
    let reason = detail_of(details, "ErrorInfo")
        .find_map(|d| d.get("reason").and_then(Value::as_str))
        .unwrap_or("");
    let key_problem = reason.starts_with("API_KEY")
        || lower.contains("api key")
        || lower.contains("unregistered callers");
    match (status, google_status) {
        (401, _) | (_, "UNAUTHENTICATED") => (401, "authentication_error", Some("invalid_api_key")),
        (403, _) | (_, "PERMISSION_DENIED") => (
            403,
            "permission_error",
            key_problem.then_some("invalid_api_key"),
        ),
        // Google answers a wrong or expired key with 400 INVALID_ARGUMENT;
        // clients' SDKs only recognise an authentication failure as a 401.
        (400, _) if key_problem => (401, "authentication_error", Some("invalid_api_key")),
        (404, _) | (_, "NOT_FOUND") => (
            404,
            "invalid_request_error",
            lower.contains("models/").then_some("model_not_found"),
        ),
        (503, _) | (_, "UNAVAILABLE") => (503, "service_unavailable", None),
        (s, _) if s >= 500 => (s, "api_error", None),
        (s, _) => (s, "invalid_request_error", None),
    }
}

/// Per choice of a stream: what has been said for it so far.
#[derive(Default)]
struct ChoiceState {
    tools: usize,
    finished: bool,
}

/// One Gemini stream being turned into OpenAI chunks.
pub struct StreamState {
    sse: SseDecoder,
    ctx: AnswerCtx,
    /// The first event's `responseId` and `modelVersion` name every chunk.
    named: bool,
    /// By candidate index; a handful at most.
    choices: Vec<(usize, ChoiceState)>,
    /// The latest `usageMetadata` (each one is cumulative).
    usage: Option<WireUsage>,
    /// A candidate finished (or the prompt was blocked): the body may end.
    finished: bool,
    /// An error or garbage ended the stream: nothing more is read.
    stopped: bool,
}

fn chunk(ctx: &AnswerCtx, index: usize, delta: Value, finish: Option<&str>) -> StreamStep {
    StreamStep::Forward(openai::sse_json_frame(&json!({
        "id": ctx.id,
        "object": "chat.completion.chunk",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    })))
}

impl StreamState {
    pub fn new(ctx: AnswerCtx) -> StreamState {
        StreamState {
            sse: SseDecoder::new(),
            ctx,
            named: false,
            choices: Vec::new(),
            usage: None,
            finished: false,
            stopped: false,
        }
    }

    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<StreamStep>) -> Result<(), String> {
        self.sse.push(bytes);
        while !self.stopped {
            match self.sse.next_event() {
                Ok(Some(ev)) => self.event(&ev, out),
                Ok(None) => break,
                Err(_) => return Err(openai::TOO_LARGE.into()),
            }
        }
        Ok(())
    }

    /// Gemini ends a stream by closing the body; it was complete if a
    /// finish reason came before.
    pub fn finish(&mut self, out: &mut Vec<StreamStep>) -> Result<(), String> {
        if !self.stopped {
            if let Some(ev) = self.sse.finish() {
                self.event(&ev, out);
            }
        }
        if self.stopped {
            return Err("the upstream stream failed".into());
        }
        if !self.finished {
            return Err("the upstream closed the stream before a finishReason".into());
        }
        let usage = self.usage.map(|u| u.usage()).unwrap_or_default();
        let forward = self.ctx.wants_usage.then(|| {
            openai::sse_json_frame(&json!({
                "id": self.ctx.id,
                "object": "chat.completion.chunk",
                "created": self.ctx.created,
                "model": self.ctx.model,
                "choices": [],
                "usage": usage.to_openai_json(),
            }))
        });
        out.push(StreamStep::Usage { usage, forward });
        out.push(StreamStep::Done(Bytes::from_static(openai::DONE_EVENT)));
        Ok(())
    }

    /// The state of choice `index`, announcing the choice (OpenAI's first
    /// chunk carries the role) the first time it is seen.
    fn choice(&mut self, index: usize, out: &mut Vec<StreamStep>) -> usize {
        if let Some(k) = self.choices.iter().position(|(i, _)| *i == index) {
            return k;
        }
        out.push(chunk(
            &self.ctx,
            index,
            json!({"role": "assistant", "content": ""}),
            None,
        ));
        self.choices.push((index, ChoiceState::default()));
        self.choices.len() - 1
    }

    fn event(&mut self, data: &[u8], out: &mut Vec<StreamStep>) {
        let Ok(ev) = serde_json::from_slice::<Answer>(data) else {
            out.push(StreamStep::Invalid);
            self.stopped = true;
            return;
        };
        if let Some(e) = &ev.error {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            out.push(StreamStep::Failed(format!(
                "the upstream failed mid-stream ({}): {}",
                s("status"),
                s("message")
            )));
            self.stopped = true;
            return;
        }
        if !self.named {
            self.named = true;
            if let Some(id) = ev.response_id {
                self.ctx.id = id;
            }
            if let Some(model) = ev.model_version {
                self.ctx.model = model;
            }
        }
        if let Some(u) = ev.usage_metadata {
            self.usage = Some(u);
        }
        let candidates = ev.candidates.unwrap_or_default();
        if candidates.is_empty() {
            if ev.prompt_feedback.is_some() {
                let k = self.choice(0, out);
                if !self.choices[k].1.finished {
                    self.choices[k].1.finished = true;
                    out.push(chunk(&self.ctx, 0, json!({}), Some("content_filter")));
                }
                self.finished = true;
            }
            return;
        }
        for (pos, c) in candidates.into_iter().enumerate() {
            let index = c.index.unwrap_or(pos);
            let k = self.choice(index, out);
            let ctx = &self.ctx;
            let state = &mut self.choices[k].1;
            for part in c.content.iter().flat_map(|c| &c.parts) {
                let delta = if let Some(call) = &part.function_call {
                    let mut tc = call.tool_call(state.tools, part.thought_signature.as_deref());
                    tc["index"] = state.tools.into();
                    state.tools += 1;
                    json!({ "tool_calls": [tc] })
                } else {
                    match &part.text {
                        Some(t) if t.is_empty() => continue,
                        Some(t) if part.thought => json!({ "reasoning_content": t }),
                        Some(t) => json!({ "content": t }),
                        None => continue,
                    }
                };
                out.push(chunk(ctx, index, delta, None));
            }
            if let Some(reason) = &c.finish_reason {
                if !state.finished {
                    state.finished = true;
                    let finish = finish_reason(reason, state.tools > 0);
                    out.push(chunk(ctx, index, json!({}), Some(finish)));
                }
                self.finished = true;
            }
        }
    }
}

#[cfg(test)]
mod tests;
