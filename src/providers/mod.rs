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

    pub fn can_stream(self) -> bool {
        !matches!(self, Endpoint::Embeddings)
    }
}

/// Token counts as the upstream reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// Is an upstream status worth another attempt (on this or another deployment)?
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429) || status >= 500
}
