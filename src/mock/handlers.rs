//! Route handlers. Requests are read through small borrowed structs and
//! answers are formatted straight into a `String`.

use std::fmt::Write as _;
use std::time::Duration;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::behaviour::{resolve, BehaviourPatch, Effective};
use super::stream::{BrokenBody, Kind, SseStream, StreamPlan};
use super::wire::{self, push_id, push_reply, push_usage, raw_str_chars, tokens_for_chars};
use super::{bump, Behaviour, Fault, Shared};

const JSON: &str = "application/json";
const SSE: &str = "text/event-stream";
const DEFAULT_DIMENSIONS: usize = 8;
const MAX_DIMENSIONS: usize = 65_536;

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
    cfg.route("/mock/stats", web::get().to(stats))
        .route("/mock/behaviour", web::get().to(get_behaviour))
        .route("/mock/behaviour", web::post().to(set_behaviour))
        .route("/mock/reset", web::post().to(reset))
        .default_service(web::to(not_found));
}

// ---------------------------------------------------------------- responses

fn json_response(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((CONTENT_TYPE, JSON))
        .body(body)
}

fn invalid(message: &str) -> HttpResponse {
    json_response(
        StatusCode::BAD_REQUEST,
        wire::error_body(message, "invalid_request_error", None),
    )
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    let msg = format!("mock: no route for {} {}", req.method(), req.path());
    json_response(
        StatusCode::NOT_FOUND,
        wire::error_body(&msg, "invalid_request_error", Some("unknown_url")),
    )
}

/// The injected error answer for `status` (already checked to be 300..=599).
fn status_error(status: u16, eff: &Effective) -> HttpResponse {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (kind, err_code) = match status {
        429 => ("rate_limit_error", Some("rate_limit_exceeded")),
        400..=499 => ("invalid_request_error", None),
        _ => ("server_error", None),
    };
    let msg = format!("mock: injected error (status {status})");
    let mut resp = HttpResponse::build(code);
    resp.insert_header((CONTENT_TYPE, JSON));
    if let Some(v) = &eff.retry_after {
        resp.insert_header((RETRY_AFTER, v.as_str()));
    }
    if let Some(v) = &eff.retry_after_ms {
        resp.insert_header(("retry-after-ms", v.as_str()));
    }
    resp.body(wire::error_body(&msg, kind, err_code))
}

/// Response head, then a body that errors: the connection breaks.
fn drop_response(streaming: bool) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, if streaming { SSE } else { JSON }))
        .streaming(BrokenBody::new())
}

/// Resolves the behaviour and plays latency, faults and error status.
/// `Ok` means: answer normally with this behaviour.
async fn gate(
    req: &HttpRequest,
    st: &Shared,
    patch: Option<&BehaviourPatch>,
    streaming: bool,
) -> Result<Effective, HttpResponse> {
    let eff = resolve(&st.behaviour(), patch, req.headers()).map_err(|m| invalid(&m))?;
    if eff.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(eff.latency_ms)).await;
    }
    match eff.fault {
        Some(Fault::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Err(json_response(
                StatusCode::GATEWAY_TIMEOUT,
                wire::error_body("mock: hung", "server_error", None),
            ));
        }
        Some(Fault::Drop) => return Err(drop_response(streaming)),
        Some(Fault::Cut) if !streaming => return Err(drop_response(false)),
        Some(Fault::BadShape) => {
            return Err(json_response(
                StatusCode::OK,
                r#"{"id":"x","object":"chat.completion","choices":{"oops":true},"data":"nope","usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#.into(),
            ))
        }
        Some(Fault::Html) => {
            return Err(HttpResponse::Ok()
                .insert_header((CONTENT_TYPE, "text/html"))
                .body("<html><body><h1>Down for maintenance</h1></body></html>"))
        }
        _ => {}
    }
    match eff.status {
        Some(s) => Err(status_error(s, &eff)),
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
fn plan_length(total: usize, limit: Option<u64>) -> (usize, &'static str) {
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

#[derive(Deserialize)]
struct PartLite<'a> {
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
}

/// Characters of every message's content (string, or `text` of its parts).
fn message_chars(messages: &RawValue) -> Result<usize, &'static str> {
    if !messages.get().starts_with('[') {
        return Err("`messages` must be an array");
    }
    let msgs: Vec<MsgLite<'_>> = serde_json::from_str(messages.get())
        .map_err(|_| "`messages` must be an array of message objects")?;
    let mut chars = 0;
    for content in msgs.iter().filter_map(|m| m.content) {
        if content.get().starts_with('[') {
            if let Ok(parts) = serde_json::from_str::<Vec<PartLite<'_>>>(content.get()) {
                chars += parts
                    .iter()
                    .filter_map(|p| p.text)
                    .map(raw_str_chars)
                    .sum::<usize>();
            }
        } else {
            chars += raw_str_chars(content);
        }
    }
    Ok(chars)
}

async fn chat(req: HttpRequest, body: web::Bytes, st: web::Data<Shared>) -> HttpResponse {
    bump(&st.counters.requests);
    bump(&st.counters.chat);
    let parsed: ChatReq<'_> = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad_json(&e),
    };
    let model = match model_json(parsed.model) {
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
    let eff = match gate(&req, &st, parsed.mock.as_ref(), streaming).await {
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
            &st,
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
    bump(&st.counters.requests);
    bump(&st.counters.completions);
    let parsed: CompletionReq<'_> = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad_json(&e),
    };
    let model = match model_json(parsed.model) {
        Ok(m) => m,
        Err(m) => return invalid(m),
    };
    let prompt = match prompt_tokens(parsed.prompt) {
        Ok(p) => p,
        Err(m) => return invalid(m),
    };
    let streaming = parsed.stream.unwrap_or(false);
    let eff = match gate(&req, &st, parsed.mock.as_ref(), streaming).await {
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
            &st,
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
    bump(&st.counters.requests);
    bump(&st.counters.embeddings);
    let parsed: EmbeddingReq<'_> = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad_json(&e),
    };
    let model = match model_json(parsed.model) {
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
    if let Err(r) = gate(&req, &st, parsed.mock.as_ref(), false).await {
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
            out.push('[');
            for (j, v) in vector.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{v}");
            }
            out.push(']');
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
    bump(&st.counters.requests);
    if let Err(r) = gate(&req, &st, None, false).await {
        return r;
    }
    let body = format!(
        r#"{{"object":"list","data":[{{"id":"mock-gpt","object":"model","created":{},"owned_by":"tollgate-mock"}}]}}"#,
        wire::MODEL_CREATED
    );
    json_response(StatusCode::OK, body)
}

// ------------------------------------------------------------------ control

async fn stats(st: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(st.snapshot())
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
