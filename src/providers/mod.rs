//! Pure translation between the gateway's OpenAI-shaped requests and each
//! provider's wire format. Nothing here does I/O: the ProviderActor calls
//! these functions around its HTTP client, and they are unit-tested with
//! fixtures taken from the providers' documentation.

pub mod anthropic;
pub mod anthropic_inbound;
pub mod bedrock;
pub mod catalog;
pub mod dispatch;
pub mod gemini;
pub mod openai;
pub mod params;
pub mod sse;

use bytes::Bytes;
use serde::Deserialize;

pub use catalog::{Provider, Wire};

/// What the wire modules' stream tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{AnswerCtx, StreamDecoder, StreamStep, Wire};
    use serde_json::Value;

    /// Feeds an upstream stream to `wire`'s decoder cut into pieces of
    /// `step` bytes; the steps and how the end was judged.
    pub fn feed(
        wire: Wire,
        ctx: AnswerCtx,
        bytes: &[u8],
        step: usize,
    ) -> (Vec<StreamStep>, Result<(), String>) {
        let mut d = StreamDecoder::new(wire, ctx);
        let mut out = Vec::new();
        for piece in bytes.chunks(step) {
            d.push(piece, &mut out).unwrap();
        }
        let end = d.finish(&mut out);
        (out, end)
    }

    /// The OpenAI chunks a client receives, parsed.
    pub fn chunks(steps: &[StreamStep]) -> Vec<Value> {
        steps
            .iter()
            .filter_map(|s| match s {
                StreamStep::Forward(b)
                | StreamStep::Usage {
                    forward: Some(b), ..
                } => {
                    let text = std::str::from_utf8(b).unwrap();
                    Some(serde_json::from_str(text.strip_prefix("data: ").unwrap().trim()).unwrap())
                }
                _ => None,
            })
            .collect()
    }
}
pub use dispatch::{inbound_body, outbound, upstream_error, Inbound, Outbound, StreamDecoder};

/// What the gateway makes of one upstream stream event, in OpenAI's
/// chunk vocabulary whatever the provider spoke.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamStep {
    /// Send these SSE bytes to the client.
    Forward(Bytes),
    /// A usage report; `forward` holds the usage chunk's bytes if the
    /// client asked for it (or the chunk also carries content).
    Usage {
        usage: Usage,
        forward: Option<Bytes>,
    },
    /// The end: send these bytes (`data: [DONE]`) and close the stream.
    Done(Bytes),
    /// Not JSON: never passed to a client, whose SDK would fail to parse it.
    Invalid,
    /// The upstream reported an error mid-stream; nothing follows.
    Failed(String),
}

/// What a translated answer needs to say about itself.
#[derive(Debug, Clone)]
pub struct AnswerCtx {
    /// `chatcmpl-…` id used when the provider gives none.
    pub id: String,
    /// Unix seconds, OpenAI's `created`.
    pub created: u64,
    /// The deployment's model name, as OpenAI answers carry it.
    pub model: String,
    /// The client asked for the usage chunk at the end of a stream.
    pub wants_usage: bool,
}

/// The inference endpoints the gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
}

impl Endpoint {
    /// Path below the provider's `api_base` (which includes `/v1`).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
        }
    }

    /// Short name for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
        }
    }

    /// Dense index for per-endpoint arrays.
    pub fn index(self) -> usize {
        match self {
            Endpoint::ChatCompletions => 0,
            Endpoint::Completions => 1,
            Endpoint::Embeddings => 2,
        }
    }

    /// LiteLLM's `call_type` in spend logs.
    pub fn call_type(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "acompletion",
            Endpoint::Completions => "atext_completion",
            Endpoint::Embeddings => "aembedding",
        }
    }

    pub fn can_stream(self) -> bool {
        !matches!(self, Endpoint::Embeddings)
    }
}

/// Token counts as the upstream reported them, each clamped to
/// `MAX_TOKENS` as it is parsed so sums of them can never overflow.
/// Deserializes from OpenAI's `usage` object (details included); the other
/// wire modules fill it from their own shapes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "WireUsage")]
pub struct Usage {
    /// Every prompt token, cached ones included (OpenAI's convention).
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Of `prompt_tokens`, read from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Of `prompt_tokens`, written to the provider's prompt cache
    /// (Anthropic prices these above plain input).
    pub cache_creation_tokens: u64,
    /// Of `completion_tokens`, spent on reasoning.
    pub reasoning_tokens: u64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireUsage {
    #[serde(deserialize_with = "clamped_count")]
    prompt_tokens: u64,
    #[serde(deserialize_with = "clamped_count")]
    completion_tokens: u64,
    #[serde(deserialize_with = "clamped_count")]
    total_tokens: u64,
    prompt_tokens_details: Option<WireDetails>,
    completion_tokens_details: Option<WireDetails>,
    /// LiteLLM's and DeepSeek's spelling of cache reads/writes.
    #[serde(deserialize_with = "clamped_count")]
    cache_creation_input_tokens: u64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireDetails {
    #[serde(deserialize_with = "clamped_count")]
    cached_tokens: u64,
    #[serde(deserialize_with = "clamped_count")]
    reasoning_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(w: WireUsage) -> Usage {
        Usage {
            prompt_tokens: w.prompt_tokens,
            completion_tokens: w.completion_tokens,
            total_tokens: w.total_tokens,
            cached_tokens: w
                .prompt_tokens_details
                .map_or(0, |d| d.cached_tokens)
                .min(w.prompt_tokens),
            cache_creation_tokens: w.cache_creation_input_tokens.min(w.prompt_tokens),
            reasoning_tokens: w
                .completion_tokens_details
                .map_or(0, |d| d.reasoning_tokens)
                .min(w.completion_tokens),
        }
    }
}

impl Usage {
    /// Usage from separate counts, clamped as parsing would.
    pub fn new(prompt: u64, completion: u64) -> Usage {
        let (prompt, completion) = (prompt.min(MAX_TOKENS), completion.min(MAX_TOKENS));
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            ..Usage::default()
        }
    }

    /// OpenAI's `usage` object, details included when non-zero.
    pub fn to_openai_json(&self) -> serde_json::Value {
        serde_json::to_value(self.openai()).unwrap_or_default()
    }

    /// OpenAI's `usage` object, to serialize in place.
    pub fn openai(&self) -> OpenAiUsage {
        let cache = self.cached_tokens > 0 || self.cache_creation_tokens > 0;
        OpenAiUsage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            total_tokens: self.prompt_tokens + self.completion_tokens,
            prompt_tokens_details: cache.then_some(Details {
                cached_tokens: Some(self.cached_tokens),
                reasoning_tokens: None,
            }),
            completion_tokens_details: (self.reasoning_tokens > 0).then_some(Details {
                cached_tokens: None,
                reasoning_tokens: Some(self.reasoning_tokens),
            }),
            cache_creation_input_tokens: (self.cache_creation_tokens > 0)
                .then_some(self.cache_creation_tokens),
            cache_read_input_tokens: (self.cache_creation_tokens > 0).then_some(self.cached_tokens),
        }
    }
}

/// OpenAI's `usage` as written (LiteLLM's cache fields beside it when a
/// cache was written).
#[derive(Debug, serde::Serialize)]
pub struct OpenAiUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<Details>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<Details>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_creation_input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_read_input_tokens: Option<u64>,
}

#[derive(Debug, serde::Serialize)]
struct Details {
    #[serde(skip_serializing_if = "Option::is_none")]
    cached_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_tokens: Option<u64>,
}

/// More tokens than any request has had; larger upstream claims are lies.
pub const MAX_TOKENS: u64 = 1 << 40;

pub(crate) fn clamped_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Option::<u64>::deserialize(d).map(|n| n.unwrap_or(0).min(MAX_TOKENS))
}

/// Is an upstream status worth another attempt (on this or another deployment)?
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429) || status >= 500
}
