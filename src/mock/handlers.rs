//! Route handlers (OpenAI routes, control routes) and the pieces every
//! provider dialect shares: behaviour gate, errors, conversation reading.
//! Requests are read through small borrowed structs and answers are
//! formatted straight into a `String`.

use std::fmt::Write as _;
use std::time::Duration;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::behaviour::{resolve, BehaviourPatch, Effective};
use super::stream::{BrokenBody, Kind, ScriptStream, SseStream, StreamPlan};
use super::wire::{self, push_id, push_reply, push_usage, raw_str_chars, tokens_for_chars};
use super::{anthropic, azure, bedrock, gemini};
use super::{bump, Behaviour, Fault, Shared};

pub(crate) const JSON: &str = "application/json";
pub(crate) const SSE: &str = "text/event-stream";
pub(crate) const DEFAULT_DIMENSIONS: usize = 8;
pub(crate) const MAX_DIMENSIONS: usize = 65_536;

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    for prefix in ["/v1", ""] {
        cfg.route(&format!("{prefix}/chat/completions"), web::post().to(chat))
            .route(
                &format!("{prefix}/completions"),
                web::post().to(completions),
            )
            .route(&format!("{prefix}/embeddings"), web::post().to(embeddings))
            .route(&format!("{prefix}/models"), web::get().to(models));
    }
    anthropic::routes(cfg);
    gemini::routes(cfg);
    bedrock::routes(cfg);
    azure::routes(cfg);
    cfg.route("/v1/traces", web::post().to(otlp_traces))
        .route("/api/public/otel/v1/traces", web::post().to(otlp_traces))
        .route("/mock/stats", web::get().to(stats))
        .route("/mock/last_request", web::get().to(last_request))
        .route("/mock/behaviour", web::get().to(get_behaviour))
        .route("/mock/behaviour", web::post().to(set_behaviour))
        .route("/mock/reset", web::post().to(reset))
        .default_service(web::to(not_found));
}

// ---------------------------------------------------------------- responses

pub(crate) fn json_response(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((CONTENT_TYPE, JSON))
        .body(body)
}

fn invalid(message: &str) -> HttpResponse {
    Dialect::OpenAi.error(400, message)
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    let msg = format!("mock: no route for {} {}", req.method(), req.path());
    json_response(
        StatusCode::NOT_FOUND,
        wire::error_body(&msg, "invalid_request_error", Some("unknown_url")),
    )
}

/// Whose wire format a route speaks: the shape of its errors and of the
/// `bad_shape` fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// OpenAI and Azure OpenAI.
    OpenAi,
    Anthropic,
    Gemini,
    Bedrock,
}

impl Dialect {
    /// An error answer with `status` in this dialect's shape.
    pub(crate) fn error(self, status: u16, message: &str) -> HttpResponse {
        self.error_with(status, message, false, |_| {})
    }

    /// `context`: the provider's "prompt too long" flavour (OpenAI's
    /// `code: "context_length_exceeded"`); `extra` adds headers.
    fn error_with(
        self,
        status: u16,
        message: &str,
        context: bool,
        extra: impl FnOnce(&mut HttpResponseBuilder),
    ) -> HttpResponse {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = HttpResponse::build(code);
        resp.insert_header((CONTENT_TYPE, JSON));
        let body = match self {
            Dialect::OpenAi => {
                let (kind, err_code) = match status {
                    429 => ("rate_limit_error", Some("rate_limit_exceeded")),
                    400 if context => ("invalid_request_error", Some("context_length_exceeded")),
                    400..=499 => ("invalid_request_error", None),
                    _ => ("server_error", None),
                };
                wire::error_body(message, kind, err_code)
            }
            Dialect::Anthropic => anthropic::error_body(status, message),
            Dialect::Gemini => gemini::error_body(status, message),
            Dialect::Bedrock => {
                resp.insert_header(("x-amzn-errortype", bedrock::error_type(status)));
                resp.insert_header(("x-amzn-requestid", bedrock::request_id()));
                bedrock::error_body(message)
            }
        };
        extra(&mut resp);
        resp.body(body)
    }

    /// The message of a 400 with `x-mock-error: context`.
    fn context_message(self) -> &'static str {
        match self {
            Dialect::OpenAi => "This model's maximum context length is 128000 tokens. However, your messages resulted in 250000 tokens. Please reduce the length of the messages.",
            Dialect::Anthropic => "prompt is too long: 250000 tokens > 200000 maximum",
            Dialect::Gemini => "The input token count (250000) exceeds the maximum number of tokens allowed (1048576).",
            Dialect::Bedrock => "Input is too long for requested model.",
        }
    }

    /// The `bad_shape` fault: valid JSON that is not an answer.
    fn bad_shape(self) -> &'static str {
        match self {
            Dialect::OpenAi => {
                r#"{"id":"x","object":"chat.completion","choices":{"oops":true},"data":"nope","usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#
            }
            Dialect::Anthropic => {
                r#"{"id":"x","type":"message","role":"assistant","content":{"oops":true},"usage":"nope"}"#
            }
            Dialect::Gemini => r#"{"candidates":{"oops":true},"usageMetadata":"nope"}"#,
            Dialect::Bedrock => r#"{"output":"nope","stopReason":7,"usage":"nope"}"#,
        }
    }
}

/// The injected error answer for `status` (already checked to be 300..=599).
fn status_error(status: u16, eff: &Effective, dialect: Dialect) -> HttpResponse {
    let context = status == 400 && eff.error.as_deref() == Some("context");
    let injected;
    let msg = if context {
        dialect.context_message()
    } else {
        injected = format!("mock: injected error (status {status})");
        injected.as_str()
    };
    dialect.error_with(status, msg, context, |resp| {
        if let Some(v) = &eff.retry_after {
            resp.insert_header((RETRY_AFTER, v.as_str()));
        }
        if let Some(v) = &eff.retry_after_ms {
            resp.insert_header(("retry-after-ms", v.as_str()));
        }
    })
}

/// 200 with a scripted streaming body.
pub(crate) fn script_response(content_type: &'static str, body: ScriptStream) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, content_type))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .streaming(body)
}

/// Response head, then a body that errors: the connection breaks.
fn drop_response(content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, content_type))
        .streaming(BrokenBody::new())
}

/// Resolves the behaviour and plays latency, faults and error status.
/// `stream`: the content type of the streamed answer, `None` when not
/// streaming. `Ok` means: answer normally with this behaviour.
pub(crate) async fn gate(
    req: &HttpRequest,
    st: &Shared,
    patch: Option<&BehaviourPatch>,
    dialect: Dialect,
    stream: Option<&'static str>,
) -> Result<Effective, HttpResponse> {
    let eff = resolve(&st.behaviour(), patch, req.headers()).map_err(|m| dialect.error(400, &m))?;
    if eff.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(eff.latency_ms)).await;
    }
    match eff.fault {
        Some(Fault::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Err(dialect.error(504, "mock: hung"));
        }
        Some(Fault::Drop) => return Err(drop_response(stream.unwrap_or(JSON))),
        Some(Fault::Cut) if stream.is_none() => return Err(drop_response(JSON)),
        Some(Fault::BadShape) => {
            return Err(json_response(StatusCode::OK, dialect.bad_shape().into()))
        }
        Some(Fault::Html) => {
            return Err(HttpResponse::Ok()
                .insert_header((CONTENT_TYPE, "text/html"))
                .body("<html><body><h1>Down for maintenance</h1></body></html>"))
        }
        _ => {}
    }
    match eff.status {
        Some(s) => Err(status_error(s, &eff, dialect)),
        None => Ok(eff),
    }
}

/// The model as a JSON string literal, or a 400.
fn model_json(model: Option<&RawValue>) -> Result<&str, &'static str> {
    match model.map(RawValue::get) {
        Some(m) if m.starts_with('"') && m.len() > 2 => Ok(m),
        Some(_) => Err("`model` must be a non-empty string"),
        None => Err("you must provide a model parameter"),
    }
}

fn bad_json(e: &serde_json::Error) -> HttpResponse {
    invalid(&format!("mock: could not parse the JSON body: {e}"))
}

/// Pieces to send and the finish reason, given the token limit.
pub(crate) fn plan_length(total: usize, limit: Option<u64>) -> (usize, &'static str) {
    match limit {
        Some(l) if l < total as u64 => (l as usize, "length"),
        _ => (total, "stop"),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StreamOptions {
    include_usage: Option<bool>,
}

// --------------------------------------------------------------------- chat

#[derive(Deserialize)]
struct ChatReq<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    mock: Option<BehaviourPatch>,
}

#[derive(Deserialize)]
struct MsgLite<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

/// A content part / block of any dialect: its `text` counts; the others say
/// whether it is a tool result.
#[derive(Deserialize)]
struct PartLite<'a> {
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "toolResult")]
    tool_result: Option<&'a RawValue>,
    #[serde(
        borrow,
        default,
        rename = "functionResponse",
        alias = "function_response"
    )]
    function_response: Option<&'a RawValue>,
}

impl PartLite<'_> {
    fn is_tool_result(&self) -> bool {
        self.tool_result.is_some()
            || self.function_response.is_some()
            || self.kind.is_some_and(|k| k.get() == r#""tool_result""#)
    }
}

/// Characters of one content value (a string, or the `text` of its parts)
/// and whether it carries a tool result (Anthropic `tool_result` block,
/// Bedrock `toolResult`, Gemini `functionResponse`).
pub(crate) fn content_info(content: &RawValue) -> (usize, bool) {
    if !content.get().starts_with('[') {
        return (raw_str_chars(content), false);
    }
    let Ok(parts) = serde_json::from_str::<Vec<PartLite<'_>>>(content.get()) else {
        return (0, false);
    };
    let chars = parts.iter().filter_map(|p| p.text).map(raw_str_chars).sum();
    (chars, parts.iter().any(PartLite::is_tool_result))
}

/// Characters of every message's content (string, or `text` of its parts).
fn message_chars(messages: &RawValue) -> Result<usize, &'static str> {
    if !messages.get().starts_with('[') {
        return Err("`messages` must be an array");
    }
    let msgs: Vec<MsgLite<'_>> = serde_json::from_str(messages.get())
        .map_err(|_| "`messages` must be an array of message objects")?;
    Ok(msgs
        .iter()
        .filter_map(|m| m.content)
        .map(|c| content_info(c).0)
        .sum())
}

/// One turn of a native conversation (`parts` for Gemini).
#[derive(Deserialize)]
struct TurnLite<'a> {
    #[serde(borrow, default)]
    role: Option<&'a RawValue>,
    #[serde(borrow, default, alias = "parts")]
    content: Option<&'a RawValue>,
}

/// What the native routes read from a conversation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Turns {
    /// Characters of every turn's text.
    pub(crate) chars: usize,
    /// The last turn is the user's and carries no tool result: a tool call
    /// may answer it.
    pub(crate) user_last: bool,
    /// The last turn's text contains "use a tool" (any case).
    pub(crate) asks_tool: bool,
}

/// Reads `messages` / `contents`; `role_optional`: a turn without a role is
/// the user's (Gemini).
pub(crate) fn read_turns(raw: &RawValue, role_optional: bool) -> Result<Turns, &'static str> {
    if !raw.get().starts_with('[') {
        return Err("must be an array");
    }
    let turns: Vec<TurnLite<'_>> =
        serde_json::from_str(raw.get()).map_err(|_| "must be an array of objects")?;
    let mut out = Turns::default();
    for t in &turns {
        if let Some(c) = t.content {
            out.chars += content_info(c).0;
        }
    }
    if let Some(last) = turns.last() {
        let user = match last.role {
            Some(r) => r.get() == r#""user""#,
            None => role_optional,
        };
        let (_, tool_result) = last.content.map(content_info).unwrap_or_default();
        out.user_last = user && !tool_result;
        out.asks_tool = last.content.is_some_and(|c| asks_for_tool(c.get()));
    }
    Ok(out)
}

/// Characters of a `system` value: a string, an array of text blocks
/// (Anthropic, Bedrock) or a Gemini content (`{"parts":[…]}`).
pub(crate) fn system_chars(raw: Option<&RawValue>) -> usize {
    #[derive(Deserialize)]
    struct Parts<'a> {
        #[serde(borrow, default)]
        parts: Option<&'a RawValue>,
    }
    let Some(raw) = raw else { return 0 };
    if raw.get().starts_with('{') {
        return serde_json::from_str::<Parts<'_>>(raw.get())
            .ok()
            .and_then(|p| p.parts)
            .map_or(0, |p| content_info(p).0);
    }
    content_info(raw).0
}

fn asks_for_tool(raw: &str) -> bool {
    raw.as_bytes()
        .windows(10)
        .any(|w| w.eq_ignore_ascii_case(b"use a tool"))
}

/// `%XX` escapes decoded (invalid ones kept as written).
pub(crate) fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The raw value of query parameter `name` (first occurrence).
pub(crate) fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|kv| match kv.split_once('=') {
        Some((k, v)) if k == name => Some(v),
        None if kv == name => Some(""),
        _ => None,
    })
}

/// The tool input every mock tool call carries.
pub(crate) const TOOL_INPUT: &str = r#"{"location":"Paris"}"#;

/// The tool input split into `clamp(chunks, 2, 20)` pieces (streamed as
/// partial JSON); the piece count is the tool call's output tokens.
pub(crate) fn tool_input_pieces(chunks: usize) -> Vec<&'static str> {
    let len = TOOL_INPUT.len();
    let n = chunks.clamp(2, len);
    (0..n)
        .map(|i| &TOOL_INPUT[i * len / n..(i + 1) * len / n])
        .collect()
}

/// `s` as a JSON string literal.
pub(crate) fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    wire::push_json_str(&mut out, s);
    out
}

async fn chat(req: HttpRequest, body: web::Bytes, st: web::Data<Shared>) -> HttpResponse {
    st.capture(&req, &body);
    bump(&st.counters.requests);
    bump(&st.counters.chat);
    chat_core(&req, &body, &st, None).await
}

/// A chat completion; `model_override` (a JSON string literal) replaces the
/// body's `model` (Azure deployments).
pub(crate) async fn chat_core(
    req: &HttpRequest,
    body: &web::Bytes,
    st: &web::Data<Shared>,
    model_override: Option<&str>,
) -> HttpResponse {
    let parsed: ChatReq<'_> = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return bad_json(&e),
    };
    let model = match model_override.map_or_else(|| model_json(parsed.model), Ok) {
        Ok(m) => m,
        Err(m) => return invalid(m),
    };
    let chars = match parsed.messages {
        Some(m) => match message_chars(m) {
            Ok(c) => c,
            Err(m) => return invalid(m),
        },
        None => return invalid("you must provide a messages parameter"),
    };
    let streaming = parsed.stream.unwrap_or(false);
    let eff = match gate(
        req,
        st,
        parsed.mock.as_ref(),
        Dialect::OpenAi,
        streaming.then_some(SSE),
    )
    .await
    {
        Ok(e) => e,
        Err(r) => return r,
    };
    let prompt = tokens_for_chars(chars);
    let total = eff.chunks;
    let limit = parsed.max_completion_tokens.or(parsed.max_tokens);
    let (emit, finish) = plan_length(total, limit);
    let created = wire::now_unix();

    if streaming {
        let include_usage = parsed
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let mut id = String::with_capacity(32);
        push_id(&mut id, "chatcmpl");
        return sse(
            st,
            &eff,
            StreamPlan {
                kind: Kind::Chat,
                id,
                created,
                model_json: model.to_string(),
                total,
                emit,
                finish_reason: finish,
                include_usage,
                prompt_tokens: prompt,
                interval_ms: eff.chunk_interval_ms,
                cut_after: None,
                garbage_at: None,
            },
        );
    }

    let mut out = String::with_capacity(384 + model.len());
    out.push_str(r#"{"id":""#);
    push_id(&mut out, "chatcmpl");
    let _ = write!(
        out,
        r#"","object":"chat.completion","created":{created},"model":{model},"choices":[{{"index":0,"message":{{"role":"assistant","content":""#
    );
    push_reply(&mut out, total, emit);
    let _ = write!(
        out,
        r#"","refusal":null}},"logprobs":null,"finish_reason":"{finish}"}}],"usage":"#
    );
    push_usage(&mut out, prompt, emit as u64);
    out.push_str(r#","system_fingerprint":null}"#);
    json_response(StatusCode::OK, out)
}

fn sse(st: &web::Data<Shared>, eff: &Effective, mut plan: StreamPlan) -> HttpResponse {
    match eff.fault {
        Some(Fault::Cut) => plan.cut_after = Some(plan.emit / 2),
        Some(Fault::Garbage) => plan.garbage_at = Some(0),
        Some(Fault::GarbageMid) => plan.garbage_at = Some(plan.emit / 2),
        _ => {}
    }
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, SSE))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .streaming(SseStream::new(st.clone(), plan))
}

// -------------------------------------------------------------- completions

#[derive(Deserialize)]
struct CompletionReq<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    prompt: Option<&'a RawValue>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u64>,
    mock: Option<BehaviourPatch>,
}

/// Prompt tokens of a string, array of strings, token array or array of
/// token arrays.
fn prompt_tokens(prompt: Option<&RawValue>) -> Result<u64, &'static str> {
    let Some(raw) = prompt else { return Ok(1) };
    let text = raw.get();
    if text.starts_with('"') {
        return Ok(tokens_for_chars(raw_str_chars(raw)));
    }
    let bad = || "`prompt` must be a string, an array of strings or token arrays";
    if !text.starts_with('[') {
        return Err(bad());
    }
    let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|_| bad())?;
    let (mut chars, mut tokens) = (0usize, 0u64);
    for item in items {
        let t = item.get();
        if t.starts_with('"') {
            chars += raw_str_chars(item);
        } else if t.starts_with('[') {
            let toks: Vec<i64> = serde_json::from_str(t).map_err(|_| bad())?;
            tokens += toks.len() as u64;
        } else if t.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            tokens += 1;
        } else {
            return Err(bad());
        }
    }
    Ok(((chars / 4) as u64 + tokens).max(1))
}

async fn completions(req: HttpRequest, body: web::Bytes, st: web::Data<Shared>) -> HttpResponse {
    st.capture(&req, &body);
    bump(&st.counters.requests);
    bump(&st.counters.completions);
    completions_core(&req, &body, &st, None).await
}

/// A legacy completion; `model_override` as for [`chat_core`].
pub(crate) async fn completions_core(
    req: &HttpRequest,
    body: &web::Bytes,
    st: &web::Data<Shared>,
    model_override: Option<&str>,
) -> HttpResponse {
    let parsed: CompletionReq<'_> = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return bad_json(&e),
    };
    let model = match model_override.map_or_else(|| model_json(parsed.model), Ok) {
        Ok(m) => m,
        Err(m) => return invalid(m),
    };
    let prompt = match prompt_tokens(parsed.prompt) {
        Ok(p) => p,
        Err(m) => return invalid(m),
    };
    let streaming = parsed.stream.unwrap_or(false);
    let eff = match gate(
        req,
        st,
        parsed.mock.as_ref(),
        Dialect::OpenAi,
        streaming.then_some(SSE),
    )
    .await
    {
        Ok(e) => e,
        Err(r) => return r,
    };
    let total = eff.chunks;
    let (emit, finish) = plan_length(total, parsed.max_tokens);
    let created = wire::now_unix();

    if streaming {
        let include_usage = parsed
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let mut id = String::with_capacity(32);
        push_id(&mut id, "cmpl");
        return sse(
            st,
            &eff,
            StreamPlan {
                kind: Kind::Text,
                id,
                created,
                model_json: model.to_string(),
                total,
                emit,
                finish_reason: finish,
                include_usage,
                prompt_tokens: prompt,
                interval_ms: eff.chunk_interval_ms,
                cut_after: None,
                garbage_at: None,
            },
        );
    }

    let mut out = String::with_capacity(320 + model.len());
    out.push_str(r#"{"id":""#);
    push_id(&mut out, "cmpl");
    let _ = write!(
        out,
        r#"","object":"text_completion","created":{created},"model":{model},"choices":[{{"text":""#
    );
    push_reply(&mut out, total, emit);
    let _ = write!(
        out,
        r#"","index":0,"logprobs":null,"finish_reason":"{finish}"}}],"usage":"#
    );
    push_usage(&mut out, prompt, emit as u64);
    out.push('}');
    json_response(StatusCode::OK, out)
}

// --------------------------------------------------------------- embeddings

#[derive(Deserialize)]
struct EmbeddingReq<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    dimensions: Option<usize>,
    #[serde(borrow)]
    encoding_format: Option<std::borrow::Cow<'a, str>>,
    mock: Option<BehaviourPatch>,
}

/// One input: the seed of its vector and its token count.
fn embedding_inputs(input: Option<&RawValue>) -> Result<Vec<(u64, u64)>, &'static str> {
    let bad = || "`input` must be a string, an array of strings or token arrays";
    let Some(raw) = input else {
        return Err("you must provide an input parameter");
    };
    let text = raw.get();
    let one = |item: &RawValue| -> Result<(u64, u64), &'static str> {
        let t = item.get();
        if t.starts_with('"') {
            Ok((
                wire::fnv1a(t.as_bytes()),
                tokens_for_chars(raw_str_chars(item)),
            ))
        } else if t.starts_with('[') {
            let toks: Vec<i64> = serde_json::from_str(t).map_err(|_| bad())?;
            Ok((wire::fnv1a(t.as_bytes()), toks.len() as u64))
        } else {
            Err(bad())
        }
    };
    if text.starts_with('"') {
        return Ok(vec![one(raw)?]);
    }
    if !text.starts_with('[') {
        return Err(bad());
    }
    let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|_| bad())?;
    match items.first().map(|i| i.get()) {
        None => Err("`input` must not be empty"),
        // A single token array.
        Some(first) if first.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => {
            Ok(vec![one(raw)?])
        }
        Some(_) => items.into_iter().map(one).collect(),
    }
}

async fn embeddings(req: HttpRequest, body: web::Bytes, st: web::Data<Shared>) -> HttpResponse {
    st.capture(&req, &body);
    bump(&st.counters.requests);
    bump(&st.counters.embeddings);
    embeddings_core(&req, &body, &st, None).await
}

/// Embeddings; `model_override` as for [`chat_core`].
pub(crate) async fn embeddings_core(
    req: &HttpRequest,
    body: &web::Bytes,
    st: &web::Data<Shared>,
    model_override: Option<&str>,
) -> HttpResponse {
    let parsed: EmbeddingReq<'_> = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return bad_json(&e),
    };
    let model = match model_override.map_or_else(|| model_json(parsed.model), Ok) {
        Ok(m) => m,
        Err(m) => return invalid(m),
    };
    let inputs = match embedding_inputs(parsed.input) {
        Ok(i) => i,
        Err(m) => return invalid(m),
    };
    let dims = parsed.dimensions.unwrap_or(DEFAULT_DIMENSIONS);
    if dims == 0 || dims > MAX_DIMENSIONS {
        return invalid("`dimensions` must be between 1 and 65536");
    }
    let base64 = match parsed.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => return invalid("`encoding_format` must be \"float\" or \"base64\""),
    };
    if let Err(r) = gate(req, st, parsed.mock.as_ref(), Dialect::OpenAi, None).await {
        return r;
    }

    let per_vector = if base64 {
        dims * 4 * 4 / 3 + 8
    } else {
        dims * 12
    };
    let mut out = String::with_capacity(128 + model.len() + inputs.len() * (48 + per_vector));
    out.push_str(r#"{"object":"list","data":["#);
    let mut vector = Vec::with_capacity(dims);
    let mut bytes = Vec::new();
    let mut prompt = 0u64;
    for (i, (seed, tokens)) in inputs.iter().enumerate() {
        prompt += tokens;
        wire::embedding(*seed, dims, &mut vector);
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, r#"{{"object":"embedding","index":{i},"embedding":"#);
        if base64 {
            bytes.clear();
            bytes.extend(vector.iter().flat_map(|v| v.to_le_bytes()));
            out.push('"');
            wire::push_base64(&mut out, &bytes);
            out.push('"');
        } else {
            wire::push_f32_array(&mut out, &vector);
        }
        out.push('}');
    }
    let _ = write!(
        out,
        r#"],"model":{model},"usage":{{"prompt_tokens":{prompt},"total_tokens":{prompt}}}}}"#
    );
    json_response(StatusCode::OK, out)
}

// ------------------------------------------------------------------- models

async fn models(req: HttpRequest, st: web::Data<Shared>) -> HttpResponse {
    st.capture(&req, &web::Bytes::new());
    bump(&st.counters.requests);
    if let Err(r) = gate(&req, &st, None, Dialect::OpenAi, None).await {
        return r;
    }
    let body = format!(
        r#"{{"object":"list","data":[{{"id":"mock-gpt","object":"model","created":{},"owned_by":"tollgate-mock"}}]}}"#,
        wire::MODEL_CREATED
    );
    json_response(StatusCode::OK, body)
}

// ------------------------------------------------------------------ control

/// An OTLP/HTTP trace export: counted, not decoded, and answered with an
/// empty `ExportTraceServiceResponse` (zero protobuf bytes = full success).
/// The body is read chunk by chunk and never gathered: benchmarks run this
/// receiver on the gateway's cores, so what it costs is kept to reading
/// the socket.
async fn otlp_traces(mut body: web::Payload, st: web::Data<Shared>) -> HttpResponse {
    use futures_util::StreamExt as _;
    let mut len = 0u64;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => len += c.len() as u64,
            Err(e) => return HttpResponse::BadRequest().body(e.to_string()),
        }
    }
    bump(&st.counters.otlp_exports);
    st.counters
        .otlp_bytes
        .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "application/x-protobuf"))
        .finish()
}

async fn stats(st: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(st.snapshot())
}

async fn last_request(st: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(st.last_request())
}

async fn get_behaviour(st: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(st.behaviour())
}

async fn set_behaviour(body: web::Bytes, st: web::Data<Shared>) -> HttpResponse {
    match serde_json::from_slice::<Behaviour>(&body) {
        Ok(b) => {
            st.set_behaviour(b.clone());
            HttpResponse::Ok().json(b)
        }
        Err(e) => bad_json(&e),
    }
}

async fn reset(st: web::Data<Shared>) -> HttpResponse {
    st.reset();
    HttpResponse::Ok().json(st.snapshot())
}
