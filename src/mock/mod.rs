//! `tollgate::mock` — a fast fake LLM provider: OpenAI-compatible, and also
//! speaking the native wire formats of Anthropic, Gemini, AWS Bedrock
//! (Converse) and Azure OpenAI, so provider adapters can be tested end to
//! end over real HTTP.
//!
//! Used by tests (spawned in-process on port 0 with [`start`]), by demos (the
//! gateway's `serve` starts one for the shipped offline model) and by
//! benchmarks (`tollgate mock-upstream --port N`, see [`run`]).
//!
//! # Routes
//! OpenAI (each with and without the `/v1` prefix):
//! * `POST /v1/chat/completions`, `POST /v1/completions` — streaming or not.
//! * `POST /v1/embeddings`, `GET /v1/models`.
//!
//! Native providers (details in the sections below):
//! * Anthropic: `POST /v1/messages` (and `/messages`).
//! * Gemini: `POST /v1beta/models/{model}:{method}` (and `/v1/models/…`),
//!   method `generateContent`, `streamGenerateContent`, `countTokens`,
//!   `embedContent`, `batchEmbedContents`.
//! * Bedrock: `POST /model/{modelId}/converse`,
//!   `POST /model/{modelId}/converse-stream`.
//! * Azure OpenAI: `POST /openai/deployments/{deployment}/chat/completions`,
//!   `…/completions`, `…/embeddings`; `POST /openai/v1/chat/completions`,
//!   `/openai/v1/completions`, `/openai/v1/embeddings`.
//!
//! Control: `GET /mock/stats`, `GET|POST /mock/behaviour`,
//! `GET /mock/last_request`, `POST /mock/reset`. Anything else: 404 with an
//! OpenAI-shaped error.
//!
//! # Deterministic answers (every route)
//! * Reply text: `"This is a mock response from tollgate."` split into
//!   `chunks` pieces (default 5). With 7 or fewer pieces the words of the
//!   sentence are spread over the pieces; with more, every piece is one word
//!   and the sentence repeats. Completion / output tokens = number of pieces
//!   sent, streaming or not. A token limit (`max_tokens`,
//!   `max_completion_tokens`, Anthropic `max_tokens`, Gemini
//!   `generationConfig.maxOutputTokens`, Bedrock `inferenceConfig.maxTokens`)
//!   smaller than that cuts the reply to that many pieces, with the
//!   provider's "length" finish (`"length"`, `"max_tokens"`, `"MAX_TOKENS"`).
//! * Prompt tokens = max(1, characters / 4), where characters is the total
//!   length of every message `content` string (or `text` of content parts /
//!   blocks; counted as written in the JSON, so an escape such as `\n`
//!   counts as 2). Native routes add the system prompt (Anthropic `system`
//!   string or text blocks, Gemini `systemInstruction.parts[].text`, Bedrock
//!   `system[].text`); Gemini counts `contents[].parts[].text`. For
//!   `/v1/completions` the same over the prompt string(s); token-array
//!   prompts count one per token. Embeddings use the same rule per input.
//! * Tool calls (native routes only): the input / args are always
//!   `{"location":"Paris"}`, split into P = clamp(chunks, 2, 20) pieces when
//!   streamed (Anthropic `partial_json`, Bedrock `toolUse.input`); a tool
//!   call's output tokens are P (streaming or not). A tool call is answered
//!   when the request declares at least one tool, its last turn is the
//!   user's and carries no tool result (Anthropic `tool_result` block,
//!   Bedrock `toolResult`, Gemini `functionResponse`), the tool choice is
//!   not "none", and either the choice forces a tool (Anthropic `any` /
//!   `tool`, Gemini mode `ANY`, Bedrock `any` / `tool`) or the last turn's
//!   text contains "use a tool" (any case). The tool called is the forced
//!   one (Anthropic `tool_choice.name`, Bedrock `toolChoice.tool.name`,
//!   Gemini `allowedFunctionNames[0]` with mode ANY), else the first
//!   declared. Token limits do not cut tool calls.
//!
//! # Behaviour knobs
//! Per request, highest precedence first: headers `x-mock-latency-ms`,
//! `x-mock-status`, `x-mock-retry-after`, `x-mock-retry-after-ms`,
//! `x-mock-chunks`, `x-mock-chunk-interval-ms`, `x-mock-fault`,
//! `x-mock-error`; then a top-level body field `"mock": {…Behaviour
//! fields…, "error": "context"}`; then the run-time defaults
//! ([`MockServer::set_behaviour`], `POST /mock/behaviour`). Merged field by
//! field. A 2xx `status` in a header/body patch clears an error status from
//! the defaults; `fault: "none"` clears a default fault. An invalid knob
//! value is a 400 in the route's error shape. The knobs apply to every
//! inference route, native ones included.
//!
//! Faults (`x-mock-fault`): `drop|hang|cut|bad_shape|html|garbage|
//! garbage_mid|overloaded_mid|throttle_mid|safety|blocked|none`.
//!
//! Order of effects (after the route's own auth and request checks, which
//! come first): `latency_ms` sleep, then `hang` (never answers), `drop`
//! (response head, then the body errors so the connection breaks), `cut`
//! (streams: about half the content chunks / deltas, then the connection
//! breaks; not streaming: same as `drop`), `bad_shape` (200, JSON that is
//! not an answer of the route's format), `html` (200, an HTML page), then an
//! error `status` (in the route's error shape, with `retry-after` /
//! `retry-after-ms` headers from the knobs), then the normal answer.
//! `garbage` / `garbage_mid` put an unparsable event (SSE data that is not
//! JSON; for Bedrock 16 bytes that are no valid frame) first / halfway into
//! a stream, and the stream goes on. `overloaded_mid` (Anthropic streams),
//! `throttle_mid` (Bedrock streams), `safety` and `blocked` (Gemini) are
//! described with their provider and ignored by the other routes. "Halfway"
//! is before content delta `n / 2` of the `n` the stream would carry
//! (Anthropic counts thinking, signature, text and JSON deltas).
//!
//! `x-mock-error: context` with status 400: the provider's "prompt too long"
//! error: OpenAI/Azure `code: "context_length_exceeded"`, message "This
//! model's maximum context length is 128000 tokens. …"; Anthropic
//! `invalid_request_error` "prompt is too long: 250000 tokens > 200000
//! maximum"; Gemini `INVALID_ARGUMENT` "The input token count (250000)
//! exceeds the maximum number of tokens allowed (1048576)."; Bedrock
//! `ValidationException` "Input is too long for requested model.". Other
//! injected errors have the message `mock: injected error (status N)`.
//!
//! # OpenAI errors
//! `{"error":{"message","type","param":null,"code"}}`: 429
//! `rate_limit_error` / `rate_limit_exceeded`, other 4xx
//! `invalid_request_error`, 5xx and 3xx `server_error`.
//!
//! # Anthropic: `POST /v1/messages`
//! * Checks, in order: header `x-api-key` (missing/empty → 401
//!   `authentication_error` "x-api-key header is required"), header
//!   `anthropic-version` (missing → 400 "anthropic-version: header is
//!   required"), JSON body, `model` (non-empty string), `max_tokens`
//!   (missing → 400 "max_tokens: Field required"), `messages` (array).
//! * Errors: `{"type":"error","error":{"type":T,"message":M}}` with T by
//!   status: 400 `invalid_request_error`, 401 `authentication_error`, 403
//!   `permission_error`, 404 `not_found_error`, 413 `request_too_large`,
//!   429 `rate_limit_error`, 529 `overloaded_error`, other 5xx `api_error`,
//!   other 4xx / 3xx `invalid_request_error`.
//! * Answer: `{"id":"msg_mock<20 hex>","type":"message","role":"assistant",
//!   "model":<request model>,"content":[…],"stop_reason":"end_turn"|
//!   "max_tokens"|"tool_use","stop_sequence":null,"usage":{"input_tokens":N,
//!   "cache_creation_input_tokens":0,"cache_read_input_tokens":0,
//!   "output_tokens":M}}`. Content: with `thinking.type == "enabled"` first
//!   `{"type":"thinking","thinking":"Mock reasoning.","signature":"sig"}`
//!   (2 output tokens, not cut by `max_tokens`); then `{"type":"text",
//!   "text":…}` or `{"type":"tool_use","id":"toolu_mock1","name":…,
//!   "input":{"location":"Paris"}}`.
//! * `"stream": true` → `text/event-stream`, events `event: <type>\ndata:
//!   <json>\n\n`: `message_start` (message as above with `content: []`,
//!   `stop_reason: null`, usage `output_tokens: 1`); per block
//!   `content_block_start` (`{"type":"thinking","thinking":""}`,
//!   `{"type":"text","text":""}` or the tool_use block with `input: {}`),
//!   then — after the first block start only — `ping` (`{"type": "ping"}`);
//!   deltas `content_block_delta` (`thinking_delta` "Mock" and
//!   " reasoning." then `signature_delta` "sig"; one `text_delta` per piece;
//!   `input_json_delta` `partial_json` pieces); `content_block_stop`; the
//!   thinking block is index 0 and the main block index 1 (else 0); then
//!   `message_delta` (`{"type":"message_delta","delta":{"stop_reason":…,
//!   "stop_sequence":null},"usage":{"output_tokens":M}}`) and
//!   `message_stop`. Deltas wait the chunk interval.
//! * `x-mock-fault: overloaded_mid` (streams): halfway, `event: error` /
//!   `data: {"type":"error","error":{"type":"overloaded_error",
//!   "message":"Overloaded"}}`, then the body ends (no message_delta /
//!   message_stop).
//!
//! # Gemini: `POST /v1beta/models/{model}:{method}`
//! * The `{model}:{method}` segment is split at its last `:` (a `%3A` is
//!   decoded first). Auth: header `x-goog-api-key` or query `key=`
//!   (non-empty), else 403 PERMISSION_DENIED. Unknown method → 404.
//! * Errors: `{"error":{"code":N,"message":M,"status":S}}`, S by status:
//!   400 INVALID_ARGUMENT, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404
//!   NOT_FOUND, 409 ABORTED, 429 RESOURCE_EXHAUSTED, 499 CANCELLED, 500
//!   INTERNAL, 501 UNIMPLEMENTED, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED,
//!   other 4xx FAILED_PRECONDITION, else UNKNOWN.
//! * `generateContent`: `contents` required and non-empty (400). Answer
//!   `{"candidates":[{"content":{"parts":[{"text":…}],"role":"model"},
//!   "finishReason":"STOP"|"MAX_TOKENS","index":0}],"usageMetadata":
//!   {"promptTokenCount":N,"candidatesTokenCount":M,"totalTokenCount":N+M},
//!   "modelVersion":<model from the path>,"responseId":"mock<20 hex>"}`.
//!   `candidatesTokenCount` is left out when 0 (as Google does). Tool call:
//!   the part is `{"functionCall":{"name":…,"args":{"location":"Paris"}}}`,
//!   finishReason `STOP`. Tools are read from
//!   `tools[].functionDeclarations[].name` and
//!   `toolConfig.functionCallingConfig.{mode,allowedFunctionNames}`
//!   (camelCase or snake_case).
//! * `x-mock-fault: safety`: the candidate is `{"finishReason":"SAFETY",
//!   "safetyRatings":[…],"index":0}` with no `content`; `blocked`: no
//!   `candidates`, `"promptFeedback":{"blockReason":"SAFETY",
//!   "safetyRatings":[…]}` (usage without candidatesTokenCount).
//! * `streamGenerateContent?alt=sse` → `text/event-stream`, one
//!   `data: <GenerateContentResponse>\r\n\r\n` event per piece (CRLF, as
//!   Google sends it), no `[DONE]`: the body just ends. Every chunk carries
//!   the same responseId and cumulative `usageMetadata`
//!   (candidatesTokenCount = pieces so far); the last piece's chunk carries
//!   `finishReason`. A tool call is one chunk. `safety`: half the pieces,
//!   then a chunk with the SAFETY candidate; `blocked`: one chunk. Without
//!   `alt=sse` the same chunks form one JSON array (`application/json`,
//!   `[` + chunk, `,\r\n` + chunk …, `]`).
//! * `countTokens` → `{"totalTokens":N}` (prompt rule above).
//! * `embedContent` (`content.parts[].text`, `outputDimensionality`,
//!   default 8) → `{"embedding":{"values":[…]}}`; `batchEmbedContents`
//!   (`requests[]` of those) → `{"embeddings":[{"values":[…]},…]}`. The
//!   vector depends only on the parts' text as written in the JSON: a
//!   single text part gives the same vector as `/v1/embeddings` for that
//!   string at the same dimensions.
//!
//! # Bedrock: `POST /model/{modelId}/converse[-stream]`
//! * `modelId` is percent-decoded (`%3A` → `:`) and not checked. Auth:
//!   `authorization` starting with `AWS4-HMAC-SHA256 Credential=` and an
//!   `x-amz-date` header, else 403 `{"message":"Missing Authentication
//!   Token"}` with `x-amzn-errortype: MissingAuthenticationTokenException`.
//!   The signature is not verified; it is recorded (see
//!   `/mock/last_request`, field `sigv4`). `messages` is required.
//! * Errors: `{"message":M}` with header `x-amzn-errortype` by status: 400
//!   ValidationException, 403 AccessDeniedException, 404
//!   ResourceNotFoundException, 408 ModelTimeoutException, 424
//!   ModelErrorException, 429 ThrottlingException, 503
//!   ServiceUnavailableException, other 4xx ValidationException, else
//!   InternalServerException. Every answer has an `x-amzn-requestid`.
//! * `converse` answer: `{"output":{"message":{"role":"assistant",
//!   "content":[{"text":…}]}},"stopReason":"end_turn"|"max_tokens"|
//!   "tool_use","usage":{"inputTokens":N,"outputTokens":M,"totalTokens":
//!   N+M},"metrics":{"latencyMs":1}}`; a tool call's content is
//!   `[{"toolUse":{"toolUseId":"tooluse_mock1","name":…,"input":
//!   {"location":"Paris"}}}]`. Tools: `toolConfig.tools[].toolSpec.name`,
//!   `toolConfig.toolChoice` `{"any":{}}` / `{"tool":{"name":…}}` /
//!   `{"auto":{}}`.
//! * `converse-stream` → `application/vnd.amazon.eventstream`, AWS
//!   event-stream messages (prelude: total length, headers length, prelude
//!   CRC32, u32 BE each; headers: name length u8, name, type 7, value
//!   length u16 BE, value; payload; message CRC32), headers `:event-type`,
//!   `:content-type: application/json`, `:message-type: event`. Events:
//!   `messageStart` `{"role":"assistant"}`; for a tool call
//!   `contentBlockStart` `{"contentBlockIndex":0,"start":{"toolUse":
//!   {"toolUseId":"tooluse_mock1","name":…}}}`; `contentBlockDelta`
//!   `{"contentBlockIndex":0,"delta":{"text":piece}}` or
//!   `{"contentBlockIndex":0,"delta":{"toolUse":{"input":"<partial json>"}}}`
//!   per piece (these wait the chunk interval); `contentBlockStop`
//!   `{"contentBlockIndex":0}`; `messageStop` `{"stopReason":…}`;
//!   `metadata` `{"usage":{"inputTokens","outputTokens","totalTokens"},
//!   "metrics":{"latencyMs":1}}`.
//! * `x-mock-fault: throttle_mid` (streams): halfway, a message with
//!   `:message-type: exception`, `:exception-type: throttlingException`,
//!   `:content-type: application/json`, payload `{"message":"Too many
//!   requests"}`; then the body ends.
//!
//! # Azure OpenAI
//! * `/openai/deployments/{deployment}/…`: query `api-version` required
//!   (missing/empty → 404 `{"error":{"code":"404","message":"Resource not
//!   found"}}`, checked first), then auth: header `api-key` or
//!   `Authorization: Bearer <token>` (else 401 `{"error":{"code":"401",
//!   "message":"Access denied due to invalid subscription key or wrong API
//!   endpoint. …"}}`). Then exactly the OpenAI route's behaviour, except
//!   that `model` in the body is not needed and the answer's `model` is the
//!   deployment name.
//! * `/openai/v1/…`: the same auth rule, no `api-version` needed, `model`
//!   from the body, as the OpenAI routes.
//!
//! # Request capture
//! `GET /mock/last_request` → `null` or the most recent inference request
//! (every route above except the control routes, whatever its outcome,
//! refused ones included): `{"method","path" (as sent, percent-encoding
//! kept),"query" (raw, "" if none),"headers":{lowercased name: value,
//! repeated headers joined with ", "},"body":<parsed JSON or null>}`, plus
//! `"sigv4":{"credential","signed_headers","signature"}` when
//! `authorization` is AWS SigV4. Also [`MockServer::last_request`].
//! `POST /mock/reset` clears it (and the counters and behaviour).
//!
//! # Stats
//! `requests` counts every inference-route request (all routes above except
//! the control routes), whatever its outcome; `chat` / `completions` /
//! `embeddings` per OpenAI route (Azure requests count there too);
//! `anthropic`, `gemini`, `bedrock`, `azure` per provider. `streams_started`
//! counts streaming bodies created, `streams_completed` those that sent
//! their normal end (`[DONE]`; Anthropic `message_stop`; Gemini's last
//! chunk / `]`; Bedrock `metadata`), `streams_cancelled` those dropped
//! before that (the client went away). A stream ended by the `cut` fault or
//! by an in-band error (`overloaded_mid`, `throttle_mid`) counts as neither.

mod anthropic;
mod azure;
mod bedrock;
mod behaviour;
mod capture;
mod gemini;
mod handlers;
mod stream;
#[cfg(test)]
mod tests;
mod wire;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::Poll;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use serde::{Deserialize, Serialize};

/// Largest request body the mock accepts (tests send big prompts).
const MAX_BODY: usize = 64 << 20;

/// How the mock server is started.
#[derive(Clone, Debug)]
pub struct MockOptions {
    /// Interface to bind; default `"127.0.0.1"`.
    pub host: String,
    /// Port; default 0 (ephemeral).
    pub port: u16,
    /// actix worker threads; default 1.
    pub workers: usize,
    /// Defaults for every request (changeable at run time).
    pub behaviour: Behaviour,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            host: "127.0.0.1".to_string(),
            port: 0,
            workers: 1,
            behaviour: Behaviour::default(),
        }
    }
}

/// What the mock does with a request. Every field has a "normal" default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct Behaviour {
    /// Delay before the response head (and so before the first chunk).
    pub latency_ms: u64,
    /// If set and not 2xx, answer with this status and an OpenAI-shaped error.
    pub status: Option<u16>,
    /// Sent verbatim as `retry-after` with an error status: seconds, an
    /// HTTP date, or garbage such as `1e20` (a number or a string in JSON).
    #[serde(deserialize_with = "behaviour::text_or_number")]
    pub retry_after: Option<String>,
    /// Sent verbatim as `retry-after-ms` with an error status.
    #[serde(deserialize_with = "behaviour::text_or_number")]
    pub retry_after_ms: Option<String>,
    /// Number of content pieces in a reply (default 5).
    pub chunks: Option<usize>,
    /// Delay before each content chunk of a stream.
    pub chunk_interval_ms: u64,
    /// Connection-level fault.
    pub fault: Option<Fault>,
}

/// Connection-level faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Send the response head, then break the connection.
    Drop,
    /// Never answer (sleeps an hour).
    Hang,
    /// Streams: send about half the chunks, then break the connection.
    Cut,
    /// 200 with valid JSON that is not a completion (`choices`/`data` not a
    /// list); for a stream request too, instead of SSE.
    BadShape,
    /// 200 with an HTML page (`text/html`), stream or not.
    Html,
    /// Streams: the first event's data is not JSON.
    Garbage,
    /// Streams: about half the chunks, then an event whose data is not JSON
    /// (the stream goes on after it).
    GarbageMid,
    /// Anthropic streams: about half the deltas, then an `overloaded_error`
    /// error event, then the body ends. Ignored elsewhere.
    OverloadedMid,
    /// Bedrock `converse-stream`: about half the deltas, then a
    /// `throttlingException` exception message, then the body ends.
    /// Ignored elsewhere.
    ThrottleMid,
    /// Gemini: the candidate ends with `finishReason: "SAFETY"` and no
    /// content (streams: after about half the text). Ignored elsewhere.
    Safety,
    /// Gemini: the prompt is blocked (`promptFeedback.blockReason`, no
    /// candidates). Ignored elsewhere.
    Blocked,
}

/// A copy of the mock's counters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub chat: u64,
    pub completions: u64,
    pub embeddings: u64,
    /// Anthropic Messages API requests (`/v1/messages`).
    pub anthropic: u64,
    /// Gemini requests (`/v1beta/models/…`, `/v1/models/…`).
    pub gemini: u64,
    /// Bedrock Converse requests (`/model/…/converse[-stream]`).
    pub bedrock: u64,
    /// Azure OpenAI requests (`/openai/…`); also counted in `chat` /
    /// `completions` / `embeddings`.
    pub azure: u64,
    pub streams_started: u64,
    pub streams_completed: u64,
    pub streams_cancelled: u64,
    /// OTLP/HTTP trace exports received (`/v1/traces`, Langfuse's
    /// `/api/public/otel/v1/traces`) and their bytes: the mock doubles as
    /// a receiver that costs next to nothing, for benchmarks.
    pub otlp_exports: u64,
    pub otlp_bytes: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) chat: AtomicU64,
    pub(crate) completions: AtomicU64,
    pub(crate) embeddings: AtomicU64,
    pub(crate) anthropic: AtomicU64,
    pub(crate) gemini: AtomicU64,
    pub(crate) bedrock: AtomicU64,
    pub(crate) azure: AtomicU64,
    pub(crate) streams_started: AtomicU64,
    pub(crate) streams_completed: AtomicU64,
    pub(crate) streams_cancelled: AtomicU64,
    pub(crate) otlp_exports: AtomicU64,
    pub(crate) otlp_bytes: AtomicU64,
}

/// State shared by every worker of one mock server.
pub(crate) struct Shared {
    pub(crate) counters: Counters,
    behaviour: RwLock<Behaviour>,
    initial: Behaviour,
    last: Mutex<Option<capture::Captured>>,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Shared {
    fn new(initial: Behaviour) -> Self {
        Shared {
            counters: Counters::default(),
            behaviour: RwLock::new(initial.clone()),
            initial,
            last: Mutex::new(None),
        }
    }

    pub(crate) fn behaviour(&self) -> Behaviour {
        match self.behaviour.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn set_behaviour(&self, b: Behaviour) {
        match self.behaviour.write() {
            Ok(mut g) => *g = b,
            Err(poisoned) => *poisoned.into_inner() = b,
        }
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: l(&c.requests),
            chat: l(&c.chat),
            completions: l(&c.completions),
            embeddings: l(&c.embeddings),
            anthropic: l(&c.anthropic),
            gemini: l(&c.gemini),
            bedrock: l(&c.bedrock),
            azure: l(&c.azure),
            streams_started: l(&c.streams_started),
            streams_completed: l(&c.streams_completed),
            streams_cancelled: l(&c.streams_cancelled),
            otlp_exports: l(&c.otlp_exports),
            otlp_bytes: l(&c.otlp_bytes),
        }
    }

    pub(crate) fn reset(&self) {
        let c = &self.counters;
        for a in [
            &c.requests,
            &c.chat,
            &c.completions,
            &c.embeddings,
            &c.anthropic,
            &c.gemini,
            &c.bedrock,
            &c.azure,
            &c.streams_started,
            &c.streams_completed,
            &c.streams_cancelled,
            &c.otlp_exports,
            &c.otlp_bytes,
        ] {
            a.store(0, Ordering::Relaxed);
        }
        self.set_behaviour(self.initial.clone());
        self.clear_last();
    }

    /// Keeps `req` as the most recent inference request.
    pub(crate) fn capture(&self, req: &actix_web::HttpRequest, body: &web::Bytes) {
        let new = Some(capture::Captured::new(req, body));
        let old = match self.last.lock() {
            Ok(mut g) => std::mem::replace(&mut *g, new),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), new),
        };
        drop(old); // outside the lock
    }

    pub(crate) fn last_request(&self) -> Option<serde_json::Value> {
        match self.last.lock() {
            Ok(g) => g.as_ref().map(capture::Captured::to_json),
            Err(poisoned) => poisoned
                .into_inner()
                .as_ref()
                .map(capture::Captured::to_json),
        }
    }

    pub(crate) fn clear_last(&self) {
        let old = match self.last.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        drop(old);
    }
}

/// A running mock server. Dropping it does NOT stop it (it runs until
/// [`MockServer::stop`] or until the actix System stops).
pub struct MockServer {
    /// The bound address (the real port when started on port 0).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    handle: ServerHandle,
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockServer {
    /// Base URL including `/v1`, e.g. `http://127.0.0.1:PORT/v1`. An
    /// unspecified bind address (`0.0.0.0` / `::`) is shown as loopback.
    pub fn url(&self) -> String {
        format!("{}/v1", self.base_url())
    }

    /// Base URL without a path, e.g. `http://127.0.0.1:PORT` (Gemini,
    /// Bedrock and Azure clients add their own paths).
    pub fn base_url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            match addr {
                SocketAddr::V4(_) => addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into()),
                SocketAddr::V6(_) => addr.set_ip(std::net::Ipv6Addr::LOCALHOST.into()),
            }
        }
        format!("http://{addr}")
    }

    /// Cheap read of the counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.snapshot()
    }

    /// Replace the run-time default behaviour.
    pub fn set_behaviour(&self, b: Behaviour) {
        self.shared.set_behaviour(b);
    }

    /// The most recent inference request on any route, as served by
    /// `GET /mock/last_request` (see the module docs); `None` before the
    /// first one or after a reset.
    pub fn last_request(&self) -> Option<serde_json::Value> {
        self.shared.last_request()
    }

    /// Forget the captured request (counters and behaviour are kept).
    pub fn clear_last_request(&self) {
        self.shared.clear_last();
    }

    /// Graceful stop: stop accepting, give open connections up to 1 s.
    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

fn build(
    opts: &MockOptions,
    shared: Arc<Shared>,
    signals: bool,
) -> io::Result<(actix_web::dev::Server, SocketAddr)> {
    let data = web::Data::from(shared);
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .configure(handlers::routes)
    })
    .workers(opts.workers.max(1))
    .backlog(4096)
    .shutdown_timeout(1);
    if !signals {
        server = server.disable_signals();
    }
    let server = server.bind((opts.host.as_str(), opts.port))?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| io::Error::other("mock: bind produced no address"))?;
    Ok((server.run(), addr))
}

/// Binds (port 0 allowed) and starts the server on the current actix System
/// (must be called inside one, e.g. under `#[actix_rt::test]`). Returns once
/// bound and the accept loop is running.
pub async fn start(opts: MockOptions) -> io::Result<MockServer> {
    let shared = Arc::new(Shared::new(opts.behaviour.clone()));
    let (mut server, addr) = build(&opts, shared.clone(), false)?;
    let handle = server.handle();
    // Poll once so the accept thread and workers start now (the server future
    // is lazy), surfacing a start-up error here instead of in the spawned task.
    let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut server).poll(cx))).await;
    if let Poll::Ready(result) = first {
        result?;
        return Err(io::Error::other("mock: server stopped during start-up"));
    }
    actix_rt::spawn(server);
    Ok(MockServer {
        addr,
        shared,
        handle,
    })
}

/// For the CLI `tollgate mock-upstream`: start and run until ctrl-c / SIGTERM.
/// Must be called inside an actix System (e.g. `#[actix_web::main]`).
pub async fn run(opts: MockOptions) -> io::Result<()> {
    let shared = Arc::new(Shared::new(opts.behaviour.clone()));
    let (server, addr) = build(&opts, shared, true)?;
    tracing::info!(%addr, workers = opts.workers.max(1), "mock upstream listening");
    server.await
}
