//! Gemini (Generative Language API): `POST /v1beta/models/{model}:{method}`
//! (and `/v1/models/…`) for `generateContent`, `streamGenerateContent`,
//! `countTokens`, `embedContent` and `batchEmbedContents`. See the module
//! docs of `mock` for the contract.

use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::behaviour::{BehaviourPatch, Effective};
use super::handlers::{
    gate, json_response, json_str, percent_decode, plan_length, query_param, read_turns,
    script_response, system_chars, tool_input_pieces, Dialect, Turns, DEFAULT_DIMENSIONS, JSON,
    MAX_DIMENSIONS, SSE, TOOL_INPUT,
};
use super::stream::Script;
use super::wire::{self, push_json_str, push_piece, push_reply, push_unique, tokens_for_chars};
use super::{bump, Fault, Shared};

const SAFETY_RATINGS: &str =
    r#"[{"category":"HARM_CATEGORY_DANGEROUS_CONTENT","probability":"HIGH","blocked":true}]"#;

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    for prefix in ["/v1beta", "/v1"] {
        cfg.route(
            &format!("{prefix}/models/{{tail}}"),
            web::post().to(dispatch),
        );
    }
}

/// Google's canonical status name for an HTTP status.
fn status_name(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        s if (400..500).contains(&s) => "FAILED_PRECONDITION",
        _ => "UNKNOWN",
    }
}

/// `{"error":{"code":N,"message":…,"status":"…"}}`.
pub(crate) fn error_body(status: u16, message: &str) -> String {
    let mut out = String::with_capacity(64 + message.len());
    let _ = write!(out, r#"{{"error":{{"code":{status},"message":"#);
    push_json_str(&mut out, message);
    let _ = write!(out, r#","status":"{}"}}}}"#, status_name(status));
    out
}

fn invalid(message: &str) -> HttpResponse {
    Dialect::Gemini.error(400, message)
}

async fn dispatch(req: HttpRequest, body: web::Bytes, st: web::Data<Shared>) -> HttpResponse {
    st.capture(&req, &body);
    bump(&st.counters.requests);
    bump(&st.counters.gemini);
    let has_key = req
        .headers()
        .get("x-goog-api-key")
        .is_some_and(|v| !v.is_empty())
        || query_param(req.query_string(), "key").is_some_and(|k| !k.is_empty());
    if !has_key {
        return Dialect::Gemini.error(
            403,
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
        );
    }
    let tail = percent_decode(req.match_info().get("tail").unwrap_or(""));
    let Some((model, method)) = tail.rsplit_once(':') else {
        return Dialect::Gemini.error(404, &format!("mock: no method in models/{tail}"));
    };
    let model = model.to_string();
    match method {
        "generateContent" => generate(&req, &body, st, &model, None).await,
        "streamGenerateContent" => {
            let sse = query_param(req.query_string(), "alt") == Some("sse");
            generate(&req, &body, st, &model, Some(sse)).await
        }
        "countTokens" => count_tokens(&req, &body, &st).await,
        "embedContent" => embed(&req, &body, &st, false).await,
        "batchEmbedContents" => embed(&req, &body, &st, true).await,
        _ => Dialect::Gemini.error(
            404,
            &format!("mock: unknown method {method} for models/{model}"),
        ),
    }
}

// ----------------------------------------------------------------- generate

#[derive(Deserialize, Default)]
struct GenConfig {
    #[serde(default, rename = "maxOutputTokens", alias = "max_output_tokens")]
    max_output_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct Tool {
    #[serde(
        default,
        rename = "functionDeclarations",
        alias = "function_declarations"
    )]
    function_declarations: Option<Vec<Named>>,
}

#[derive(Deserialize, Default)]
struct CallingConfig {
    #[serde(default)]
    mode: Option<String>,
    #[serde(
        default,
        rename = "allowedFunctionNames",
        alias = "allowed_function_names"
    )]
    allowed_function_names: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
struct ToolConfig {
    #[serde(
        default,
        rename = "functionCallingConfig",
        alias = "function_calling_config"
    )]
    function_calling_config: Option<CallingConfig>,
}

#[derive(Deserialize)]
struct GenerateReq<'a> {
    #[serde(borrow)]
    contents: Option<&'a RawValue>,
    #[serde(borrow, rename = "systemInstruction", alias = "system_instruction")]
    system_instruction: Option<&'a RawValue>,
    #[serde(rename = "generationConfig", alias = "generation_config")]
    generation_config: Option<GenConfig>,
    tools: Option<Vec<Tool>>,
    #[serde(rename = "toolConfig", alias = "tool_config")]
    tool_config: Option<ToolConfig>,
    mock: Option<BehaviourPatch>,
}

/// Reads `contents` (required, non-empty) and `systemInstruction`.
fn prompt(parsed: &GenerateReq<'_>, what: &str) -> Result<(Turns, u64), String> {
    let missing = || format!("* {what}.contents: contents is not specified");
    let contents = parsed.contents.ok_or_else(missing)?;
    if contents
        .get()
        .trim_start_matches('[')
        .trim_start()
        .starts_with(']')
    {
        return Err(missing());
    }
    let turns = read_turns(contents, true).map_err(|m| format!("* {what}.contents: {m}"))?;
    let tokens = tokens_for_chars(turns.chars + system_chars(parsed.system_instruction));
    Ok((turns, tokens))
}

enum Outcome {
    /// `emit` of `total` pieces; `finish` is STOP or MAX_TOKENS.
    Text {
        total: usize,
        emit: usize,
        finish: &'static str,
    },
    /// A functionCall part (name as a JSON literal); costs `tokens`.
    Call { name: String, tokens: u64 },
    /// finishReason SAFETY after `emit` of `total` pieces (streams only;
    /// a plain answer has no content).
    Safety { total: usize, emit: usize },
    /// promptFeedback.blockReason SAFETY, no candidates.
    Blocked,
}

struct Reply {
    model_json: String,
    /// `mock…`
    id: String,
    prompt_tokens: u64,
}

impl Reply {
    /// `"usageMetadata":{…}` (candidatesTokenCount left out when 0, as
    /// Google does) + modelVersion + responseId, closing the object.
    fn tail(&self, out: &mut String, candidates: u64) {
        let p = self.prompt_tokens;
        if candidates > 0 {
            let _ = write!(
                out,
                r#","usageMetadata":{{"promptTokenCount":{p},"candidatesTokenCount":{candidates},"totalTokenCount":{}}}"#,
                p + candidates
            );
        } else {
            let _ = write!(
                out,
                r#","usageMetadata":{{"promptTokenCount":{p},"totalTokenCount":{p}}}"#
            );
        }
        let _ = write!(
            out,
            r#","modelVersion":{},"responseId":"{}"}}"#,
            self.model_json, self.id
        );
    }

    /// A response with one candidate: `parts` (JSON array text) or no
    /// content, and an optional finishReason.
    fn candidate(&self, parts: Option<&str>, finish: Option<&str>, candidates: u64) -> String {
        let mut out = String::with_capacity(256);
        out.push_str(r#"{"candidates":[{"#);
        if let Some(parts) = parts {
            let _ = write!(out, r#""content":{{"parts":{parts},"role":"model"}},"#);
        }
        if let Some(f) = finish {
            let _ = write!(out, r#""finishReason":"{f}","#);
            if f == "SAFETY" {
                let _ = write!(out, r#""safetyRatings":{SAFETY_RATINGS},"#);
            }
        }
        out.push_str(r#""index":0}]"#);
        self.tail(&mut out, candidates);
        out
    }

    fn blocked(&self) -> String {
        let mut out = format!(
            r#"{{"promptFeedback":{{"blockReason":"SAFETY","safetyRatings":{SAFETY_RATINGS}}}"#
        );
        self.tail(&mut out, 0);
        out
    }
}

fn text_parts(total: usize, from: usize, to: usize) -> String {
    let mut p = String::from(r#"[{"text":""#);
    for i in from..to {
        push_piece(&mut p, total, i);
    }
    p.push_str(r#""}]"#);
    p
}

fn call_parts(name: &str) -> String {
    format!(r#"[{{"functionCall":{{"name":{name},"args":{TOOL_INPUT}}}}}]"#)
}

fn outcome(parsed: &GenerateReq<'_>, turns: &Turns, eff: &Effective) -> Outcome {
    let total = eff.chunks;
    let limit = parsed
        .generation_config
        .as_ref()
        .and_then(|g| g.max_output_tokens);
    let (emit, finish) = plan_length(total, limit);
    match eff.fault {
        Some(Fault::Blocked) => return Outcome::Blocked,
        Some(Fault::Safety) => return Outcome::Safety { total, emit },
        _ => {}
    }
    let declared: Vec<&str> = parsed
        .tools
        .iter()
        .flatten()
        .flat_map(|t| t.function_declarations.iter().flatten())
        .filter_map(|d| d.name.as_deref())
        .collect();
    let calling = parsed
        .tool_config
        .as_ref()
        .and_then(|t| t.function_calling_config.as_ref());
    let mode = calling.and_then(|c| c.mode.as_deref()).unwrap_or("AUTO");
    let forced = mode.eq_ignore_ascii_case("ANY");
    let call = !declared.is_empty()
        && turns.user_last
        && !mode.eq_ignore_ascii_case("NONE")
        && (forced || turns.asks_tool);
    if call {
        let name = calling
            .and_then(|c| c.allowed_function_names.as_ref())
            .and_then(|n| n.first())
            .map(String::as_str)
            .filter(|_| forced)
            .unwrap_or(declared[0]);
        return Outcome::Call {
            name: json_str(name),
            tokens: tool_input_pieces(total).len() as u64,
        };
    }
    Outcome::Text {
        total,
        emit,
        finish: if finish == "length" {
            "MAX_TOKENS"
        } else {
            "STOP"
        },
    }
}

/// `stream`: `None` for generateContent, `Some(sse)` for
/// streamGenerateContent (`alt=sse` or a JSON array).
async fn generate(
    req: &HttpRequest,
    body: &web::Bytes,
    st: web::Data<Shared>,
    model: &str,
    stream: Option<bool>,
) -> HttpResponse {
    let parsed: GenerateReq<'_> = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return invalid(&format!("mock: could not parse the JSON body: {e}")),
    };
    let (turns, prompt_tokens) = match prompt(&parsed, "GenerateContentRequest") {
        Ok(p) => p,
        Err(m) => return invalid(&m),
    };
    let content_type = match stream {
        Some(true) => Some(SSE),
        Some(false) => Some(JSON),
        None => None,
    };
    let eff = match gate(
        req,
        &st,
        parsed.mock.as_ref(),
        Dialect::Gemini,
        content_type,
    )
    .await
    {
        Ok(e) => e,
        Err(r) => return r,
    };
    let mut id = String::from("mock");
    push_unique(&mut id);
    let reply = Reply {
        model_json: json_str(model),
        id,
        prompt_tokens,
    };
    let outcome = outcome(&parsed, &turns, &eff);
    let Some(sse) = stream else {
        let out = match &outcome {
            Outcome::Text {
                total,
                emit,
                finish,
            } => {
                let mut parts = String::from(r#"[{"text":""#);
                push_reply(&mut parts, *total, *emit);
                parts.push_str(r#""}]"#);
                reply.candidate(Some(&parts), Some(*finish), *emit as u64)
            }
            Outcome::Call { name, tokens } => {
                reply.candidate(Some(&call_parts(name)), Some("STOP"), *tokens)
            }
            Outcome::Safety { .. } => reply.candidate(None, Some("SAFETY"), 0),
            Outcome::Blocked => reply.blocked(),
        };
        return json_response(StatusCode::OK, out);
    };

    let planned = match &outcome {
        Outcome::Text { emit, .. } => *emit,
        Outcome::Call { .. } => 1,
        Outcome::Safety { emit, .. } => emit / 2,
        Outcome::Blocked => 0,
    };
    let garbage: &'static [u8] = if sse {
        b"data: <html>upstream proxy error</html>\r\n\r\n"
    } else {
        b"<html>upstream proxy error</html>"
    };
    let mut script = Script::new(eff.fault, planned, garbage, None);
    let mut first = true;
    // SSE: `data: …\r\n\r\n` per response; otherwise the pieces of one
    // JSON array.
    let mut wrap = |json: String| -> Bytes {
        let out = if sse {
            format!("data: {json}\r\n\r\n")
        } else if first {
            format!("[{json}")
        } else {
            format!(",\r\n{json}")
        };
        first = false;
        Bytes::from(out)
    };
    match &outcome {
        Outcome::Text {
            total,
            emit,
            finish,
        } => {
            if *emit == 0 {
                script.frame(wrap(reply.candidate(
                    Some(&text_parts(*total, 0, 0)),
                    Some(*finish),
                    0,
                )));
            }
            for i in 0..*emit {
                let last = i + 1 == *emit;
                let chunk = reply.candidate(
                    Some(&text_parts(*total, i, i + 1)),
                    last.then_some(*finish),
                    i as u64 + 1,
                );
                script.delta(wrap(chunk));
            }
        }
        Outcome::Call { name, tokens } => {
            script.delta(wrap(reply.candidate(
                Some(&call_parts(name)),
                Some("STOP"),
                *tokens,
            )));
        }
        Outcome::Safety { total, .. } => {
            for i in 0..planned {
                let chunk =
                    reply.candidate(Some(&text_parts(*total, i, i + 1)), None, i as u64 + 1);
                script.delta(wrap(chunk));
            }
            script.frame(wrap(reply.candidate(None, Some("SAFETY"), planned as u64)));
        }
        Outcome::Blocked => script.frame(wrap(reply.blocked())),
    }
    if !sse {
        script.frame(Bytes::from_static(b"]"));
    }
    let ct = if sse { SSE } else { JSON };
    script_response(ct, script.finish(st, eff.chunk_interval_ms))
}

async fn count_tokens(req: &HttpRequest, body: &web::Bytes, st: &Shared) -> HttpResponse {
    let parsed: GenerateReq<'_> = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return invalid(&format!("mock: could not parse the JSON body: {e}")),
    };
    let (_, tokens) = match prompt(&parsed, "CountTokensRequest") {
        Ok(p) => p,
        Err(m) => return invalid(&m),
    };
    if let Err(r) = gate(req, st, parsed.mock.as_ref(), Dialect::Gemini, None).await {
        return r;
    }
    json_response(StatusCode::OK, format!(r#"{{"totalTokens":{tokens}}}"#))
}

// --------------------------------------------------------------- embeddings

#[derive(Deserialize)]
struct EmbedReq<'a> {
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(rename = "outputDimensionality", alias = "output_dimensionality")]
    output_dimensionality: Option<usize>,
    mock: Option<BehaviourPatch>,
}

#[derive(Deserialize)]
struct BatchReq<'a> {
    #[serde(borrow)]
    requests: Option<Vec<EmbedReq<'a>>>,
    mock: Option<BehaviourPatch>,
}

#[derive(Deserialize)]
struct ContentLite<'a> {
    #[serde(borrow, default)]
    parts: Option<Vec<TextLite<'a>>>,
}

#[derive(Deserialize)]
struct TextLite<'a> {
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
}

/// The vector seed of a content: FNV-1a over its parts' text as written in
/// the JSON (quotes included), so one text part embeds like the same string
/// on `/v1/embeddings`.
fn embed_seed(content: Option<&RawValue>, what: &str) -> Result<u64, String> {
    let missing = || format!("* {what}.content: content is not specified");
    let content = content.ok_or_else(missing)?;
    let parsed: ContentLite<'_> =
        serde_json::from_str(content.get()).map_err(|_| format!("* {what}.content: invalid"))?;
    let mut text = Vec::new();
    for p in parsed.parts.iter().flatten() {
        if let Some(t) = p.text {
            text.extend_from_slice(t.get().as_bytes());
        }
    }
    if text.is_empty() {
        return Err(missing());
    }
    Ok(wire::fnv1a(&text))
}

async fn embed(req: &HttpRequest, body: &web::Bytes, st: &Shared, batch: bool) -> HttpResponse {
    let (items, patch) = if batch {
        match serde_json::from_slice::<BatchReq<'_>>(body) {
            Ok(b) => match b.requests {
                Some(r) if !r.is_empty() => (r, b.mock),
                _ => {
                    return invalid(
                        "* BatchEmbedContentsRequest.requests: requests is not specified",
                    )
                }
            },
            Err(e) => return invalid(&format!("mock: could not parse the JSON body: {e}")),
        }
    } else {
        match serde_json::from_slice::<EmbedReq<'_>>(body) {
            Ok(mut r) => {
                let patch = r.mock.take();
                (vec![r], patch)
            }
            Err(e) => return invalid(&format!("mock: could not parse the JSON body: {e}")),
        }
    };
    let what = if batch {
        "BatchEmbedContentsRequest.requests[]"
    } else {
        "EmbedContentRequest"
    };
    let mut plan = Vec::with_capacity(items.len());
    for item in &items {
        let dims = item.output_dimensionality.unwrap_or(DEFAULT_DIMENSIONS);
        if dims == 0 || dims > MAX_DIMENSIONS {
            return invalid("outputDimensionality must be between 1 and 65536");
        }
        match embed_seed(item.content, what) {
            Ok(seed) => plan.push((seed, dims)),
            Err(m) => return invalid(&m),
        }
    }
    if let Err(r) = gate(req, st, patch.as_ref(), Dialect::Gemini, None).await {
        return r;
    }
    let mut out = String::with_capacity(32 + plan.iter().map(|(_, d)| d * 12 + 16).sum::<usize>());
    out.push_str(if batch {
        r#"{"embeddings":["#
    } else {
        r#"{"embedding":"#
    });
    let mut vector = Vec::new();
    for (i, (seed, dims)) in plan.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        wire::embedding(*seed, *dims, &mut vector);
        out.push_str(r#"{"values":"#);
        wire::push_f32_array(&mut out, &vector);
        out.push('}');
    }
    out.push_str(if batch { "]}" } else { "}" });
    json_response(StatusCode::OK, out)
}
