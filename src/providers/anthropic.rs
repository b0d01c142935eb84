//! Anthropic's Messages API (`POST /v1/messages`) spoken for OpenAI
//! callers: system prompts lifted out of the messages, content parts and
//! tool calls as content blocks, tool results as user turns; answers,
//! thinking and prompt-cache usage back in OpenAI's shape; the named SSE
//! events of a stream turned into chat-completion chunks one by one.

use std::time::Duration;

use bytes::Bytes;
use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::params::{
    ChatParams, Content, Message, Part, ResponseFormat, Role, ToolChoice, FINISH_TOOL_CALLS,
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

/// The Messages API request, serialized straight from borrowed parts of
/// the client's (no `Value` tree: a map and an allocation per node).
#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<Block<'a>>,
    messages: Vec<Turn<'a>>,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolDef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Serialize)]
struct Metadata<'a> {
    user_id: &'a str,
}

#[derive(Serialize)]
struct Turn<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

#[derive(Serialize)]
struct ToolDef<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: Cow<'a, Value>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a Value>,
    },
    Image {
        source: ImageSource<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: String,
    },
    /// A thinking block handed back as the client got it.
    #[serde(untagged)]
    Verbatim(&'a Value),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

/// The Messages API body for an OpenAI chat request.
pub fn request(req: &InferenceRequest, target: &DeploymentTarget) -> Result<Bytes, GatewayError> {
    let p = ChatParams::read(req, "anthropic", SUPPORTED, target.drop_params)?;
    if p.n.is_some_and(|n| n > 1) && !target.drop_params {
        return Err(invalid(
            "anthropic does not support n > 1. To drop it, set `drop_params = true`.",
        ));
    }
    let (system, messages) = messages(&p.messages)?;

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

    let mut tools: Vec<ToolDef> = p
        .tools
        .iter()
        .flatten()
        .map(|t| ToolDef {
            name: &t.function.name,
            description: t.function.description.as_deref(),
            input_schema: match &t.function.parameters {
                Some(schema) => Cow::Borrowed(schema),
                None => Cow::Owned(t.function.schema()),
            },
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
    let json_schema = match &p.response_format {
        None | Some(ResponseFormat::Text) => None,
        Some(ResponseFormat::JsonObject) => Some(Cow::Owned(json!({"type": "object"}))),
        Some(ResponseFormat::JsonSchema { json_schema }) => Some(match &json_schema.schema {
            Some(schema) => Cow::Borrowed(schema),
            None => Cow::Owned(json!({"type": "object"})),
        }),
    };
    if let Some(schema) = json_schema {
        tools.push(ToolDef {
            name: JSON_TOOL,
            description: None,
            input_schema: schema,
        });
        choice = Some(json!({"type": "tool", "name": JSON_TOOL}));
    }
    if p.parallel_tool_calls == Some(false) && !tools.is_empty() {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        c["disable_parallel_tool_use"] = true.into();
    }
    let body = Body {
        model: &target.upstream_model,
        system,
        messages,
        max_tokens: max_tokens.min(MAX_TOKENS),
        thinking,
        temperature: p.temperature,
        top_p: p.top_p,
        top_k: p.top_k,
        stop_sequences: p.stop_sequences(),
        metadata: p.user.as_deref().map(|user_id| Metadata { user_id }),
        tools,
        tool_choice: choice,
        stream: req.stream,
    };
    Ok(Bytes::from(serde_json::to_vec(&body).map_err(|e| {
        GatewayError::Internal(format!("serializing the anthropic request: {e}"))
    })?))
}

/// System prompt blocks and the conversation as Anthropic wants it: roles
/// alternating, tool results inside user turns.
fn messages(input: &[Message]) -> Result<(Vec<Block<'_>>, Vec<Turn<'_>>), GatewayError> {
    let mut system = Vec::new();
    let mut out: Vec<Turn> = Vec::new();
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
                let mut blocks: Vec<Block> = m
                    .thinking_blocks
                    .iter()
                    .flatten()
                    .map(Block::Verbatim)
                    .collect();
                if let Some(c) = &m.content {
                    blocks.extend(
                        blocks_of(c, i)?
                            .into_iter()
                            .filter(|b| !matches!(b, Block::Text { text: "", .. })),
                    );
                }
                for call in m.tool_calls.iter().flatten() {
                    blocks.push(Block::ToolUse {
                        id: &call.id,
                        name: &call.function.name,
                        input: call.function.arguments_json(),
                    });
                }
                ("assistant", blocks)
            }
            Role::Tool | Role::Function => {
                let id = m
                    .tool_call_id
                    .as_deref()
                    .or(m.name.as_deref())
                    .ok_or_else(|| {
                        invalid(format!(
                            "messages[{i}]: a tool message needs `tool_call_id`"
                        ))
                    })?;
                let content = m.content.as_ref().map(Content::text).unwrap_or_default();
                (
                    "user",
                    vec![Block::ToolResult {
                        tool_use_id: id,
                        content,
                    }],
                )
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => out.push(Turn {
                role,
                content: blocks,
            }),
        }
    }
    if out.is_empty() {
        return Err(invalid(
            "`messages` needs at least one user or assistant message for anthropic",
        ));
    }
    Ok((system, out))
}

fn blocks_of(content: &Content, i: usize) -> Result<Vec<Block<'_>>, GatewayError> {
    match content {
        Content::Text(s) => Ok(vec![Block::Text {
            text: s,
            cache_control: None,
        }]),
        Content::Parts(parts) => parts
            .iter()
            .map(|part| match part {
                Part::Text {
                    text,
                    cache_control,
                } => Ok(Block::Text {
                    text,
                    cache_control: cache_control.as_ref(),
                }),
                Part::ImageUrl { image_url } => Ok(Block::Image {
                    source: match image_url.inline() {
                        Some((media_type, data)) => ImageSource::Base64 { media_type, data },
                        None => ImageSource::Url {
                            url: image_url.url(),
                        },
                    },
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

/// One content block of an answer, read in place (every block type's
/// fields side by side: serde's tagged enums cannot borrow raw values).
#[derive(Deserialize)]
struct BlockIn<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
}

/// OpenAI's chat completion, serialized straight from borrowed parts.
#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<crate::providers::OpenAiUsage>,
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: AnswerMessage<'a>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct AnswerMessage<'a> {
    role: &'static str,
    content: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_blocks: Option<Vec<&'a RawValue>>,
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    id: Cow<'a, str>,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: Cow<'a, str>,
    /// The input as the upstream wrote it: JSON text, as OpenAI carries it.
    arguments: &'a str,
}

/// A complete Messages answer as an OpenAI chat completion.
pub fn response(body: &[u8], ctx: &AnswerCtx) -> Result<(Bytes, Option<Usage>), String> {
    #[derive(Deserialize)]
    struct Answer<'a> {
        #[serde(borrow)]
        id: Option<Cow<'a, str>>,
        #[serde(borrow)]
        model: Option<Cow<'a, str>>,
        #[serde(borrow)]
        content: Vec<&'a RawValue>,
        #[serde(borrow)]
        stop_reason: Option<Cow<'a, str>>,
        #[serde(default)]
        usage: Option<WireUsage>,
    }
    let not_a_message = |e: serde_json::Error| {
        format!("the upstream sent a body that is not an Anthropic message: {e}")
    };
    let a: Answer = serde_json::from_slice(body).map_err(not_a_message)?;
    // One text block (the usual answer) is passed on as it was read.
    fn append<'a>(piece: Cow<'a, str>, text: &mut Option<Cow<'a, str>>) {
        match text {
            None => *text = Some(piece),
            Some(t) => t.to_mut().push_str(&piece),
        }
    }
    let mut text: Option<Cow<str>> = None;
    let mut reasoning: Option<String> = None;
    let mut thinking_blocks = Vec::new();
    let mut tool_calls = Vec::new();
    let mut json_answer = false;
    for raw in &a.content {
        let block: BlockIn = serde_json::from_str(raw.get()).map_err(not_a_message)?;
        match &*block.kind {
            "text" => append(block.text.unwrap_or_default(), &mut text),
            "thinking" => {
                reasoning
                    .get_or_insert_with(String::new)
                    .push_str(block.thinking.as_deref().unwrap_or(""));
                thinking_blocks.push(*raw);
            }
            "redacted_thinking" => {
                reasoning.get_or_insert_with(String::new);
                thinking_blocks.push(*raw);
            }
            "tool_use" => {
                let input = block.input.map_or("{}", RawValue::get);
                let name = block.name.unwrap_or_default();
                if name == JSON_TOOL {
                    json_answer = true;
                    append(Cow::Borrowed(input), &mut text);
                    continue;
                }
                tool_calls.push(ToolCallOut {
                    id: block.id.unwrap_or_default(),
                    kind: "function",
                    function: FunctionOut {
                        name,
                        arguments: input,
                    },
                });
            }
            _ => {}
        }
    }
    let content = match text {
        None if !tool_calls.is_empty() => None,
        None => Some(Cow::Borrowed("")),
        some => some,
    };
    let finish = if json_answer {
        "stop"
    } else {
        finish_reason(a.stop_reason.as_deref()).unwrap_or("stop")
    };
    let usage = a.usage.as_ref().map(|u| {
        let mut counts = Counts::default();
        counts.update(u);
        counts.usage()
    });
    let out = Completion {
        id: a.id.as_deref().unwrap_or(&ctx.id),
        object: "chat.completion",
        created: ctx.created,
        model: a.model.as_deref().unwrap_or(&ctx.model),
        choices: [CompletionChoice {
            index: 0,
            message: AnswerMessage {
                role: "assistant",
                content,
                tool_calls,
                thinking_blocks: reasoning.is_some().then_some(thinking_blocks),
                reasoning_content: reasoning,
            },
            finish_reason: finish,
        }],
        usage: usage.as_ref().map(Usage::openai),
    };
    let bytes = serde_json::to_vec(&out).map_err(|e| format!("serializing the answer: {e}"))?;
    Ok((Bytes::from(bytes), usage))
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

/// An OpenAI chunk, serialized straight from borrowed parts.
#[derive(Serialize)]
struct ChunkOut<'a, D> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChunkChoice<'a, D>; 1],
}

#[derive(Serialize)]
struct ChunkChoice<'a, D> {
    index: u32,
    delta: D,
    finish_reason: Option<&'a str>,
}

/// How far past the blocks seen so far a new block's index may jump.
const MAX_BLOCK_GAP: usize = 16;

/// Which OpenAI thing a content block index became.
#[derive(Clone, Copy)]
enum BlockKind {
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
    blocks: Vec<BlockKind>,
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

    fn chunk<D: Serialize>(&self, delta: D, finish: Option<&str>) -> StreamStep {
        let chunk = ChunkOut {
            id: &self.ctx.id,
            object: "chat.completion.chunk",
            created: self.ctx.created,
            model: &self.ctx.model,
            choices: [ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish,
            }],
        };
        StreamStep::Forward(openai::sse_json_frame(&chunk))
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
        struct Event<'a> {
            #[serde(rename = "type", borrow)]
            kind: Cow<'a, str>,
            index: Option<usize>,
            message: Option<Value>,
            content_block: Option<Value>,
            #[serde(borrow)]
            delta: Option<DeltaIn<'a>>,
            usage: Option<WireUsage>,
            error: Option<Value>,
        }
        #[derive(Deserialize)]
        struct DeltaIn<'a> {
            #[serde(rename = "type", borrow, default)]
            kind: Option<Cow<'a, str>>,
            #[serde(borrow, default)]
            text: Option<Cow<'a, str>>,
            #[serde(borrow, default)]
            thinking: Option<Cow<'a, str>>,
            #[serde(borrow, default)]
            partial_json: Option<Cow<'a, str>>,
            #[serde(borrow, default)]
            signature: Option<Cow<'a, str>>,
            #[serde(borrow, default)]
            stop_reason: Option<Cow<'a, str>>,
        }
        #[derive(Serialize)]
        struct ContentDelta<'a> {
            content: &'a str,
        }
        let Ok(ev) = serde_json::from_slice::<Event>(data) else {
            out.push(StreamStep::Invalid);
            self.done = true;
            return;
        };
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        match &*ev.kind {
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
                        BlockKind::Text
                    }
                    Some("thinking") => BlockKind::Thinking,
                    Some("tool_use") if s(&block, "name") == JSON_TOOL => {
                        self.json_answer = true;
                        BlockKind::Json
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
                        BlockKind::Tool(i)
                    }
                    _ => BlockKind::Other,
                };
                // Blocks are numbered from 0 up; an index far beyond the
                // next one is the upstream's bug (or hostility), not a
                // reason to allocate: its deltas are dropped.
                let index = ev.index.unwrap_or(self.blocks.len());
                if index <= self.blocks.len() + MAX_BLOCK_GAP {
                    if index >= self.blocks.len() {
                        self.blocks.resize(index + 1, BlockKind::Other);
                    }
                    self.blocks[index] = kind;
                }
            }
            "content_block_delta" => {
                let Some(delta) = ev.delta else { return };
                let block = ev
                    .index
                    .and_then(|i| self.blocks.get(i).copied())
                    .unwrap_or(BlockKind::Text);
                let text = |v: &Option<Cow<str>>| v.as_deref().unwrap_or("").to_string();
                let piece = match delta.kind.as_deref() {
                    Some("text_delta") => {
                        // The common case, serialized without a Value.
                        let content = delta.text.as_deref().unwrap_or("");
                        out.push(self.chunk(ContentDelta { content }, None));
                        return;
                    }
                    // LiteLLM's shape: the text as reasoning_content, and the
                    // block pieces (signature included) as thinking_blocks so
                    // a client can hand the signed thinking back next turn.
                    Some("thinking_delta") => {
                        let t = text(&delta.thinking);
                        json!({
                            "reasoning_content": t,
                            "thinking_blocks": [{"type": "thinking", "thinking": t}],
                        })
                    }
                    Some("signature_delta") => json!({
                        "thinking_blocks": [{
                            "type": "thinking",
                            "thinking": "",
                            "signature": text(&delta.signature),
                        }],
                    }),
                    Some("input_json_delta") => match block {
                        BlockKind::Json => {
                            let content = delta.partial_json.as_deref().unwrap_or("");
                            out.push(self.chunk(ContentDelta { content }, None));
                            return;
                        }
                        BlockKind::Tool(i) => json!({"tool_calls": [{
                            "index": i,
                            "function": {"arguments": text(&delta.partial_json)},
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
                let stop = ev.delta.as_ref().and_then(|d| d.stop_reason.as_deref());
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
