//! Pure translation between the gateway's OpenAI-shaped requests and each
//! provider's wire format. Nothing here does I/O: the ProviderActor calls
//! these functions around its HTTP client, and they are unit-tested with
//! fixtures taken from the providers' documentation.

pub mod openai;
pub mod sse;

use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    #[serde(deserialize_with = "clamped_count")]
    pub prompt_tokens: u64,
    #[serde(deserialize_with = "clamped_count")]
    pub completion_tokens: u64,
    #[serde(deserialize_with = "clamped_count")]
    pub total_tokens: u64,
}

/// More tokens than any request has had; larger upstream claims are lies.
pub const MAX_TOKENS: u64 = 1 << 40;

fn clamped_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Option::<u64>::deserialize(d).map(|n| n.unwrap_or(0).min(MAX_TOKENS))
}

/// Is an upstream status worth another attempt (on this or another deployment)?
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429) || status >= 500
}
