//! The providers tollgate knows by name: which wire format each speaks, its
//! default base URL, how it takes its key and from which environment
//! variable LiteLLM users expect that key to come. Facts only; the
//! translation itself lives in the wire modules.

use serde::Deserialize;

/// A deployment's provider, as written in `config.toml` (`provider = …`) or
/// as the prefix of a LiteLLM-style model string (`anthropic/claude-…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// api.openai.com or anything speaking its API.
    Openai,
    /// vLLM, llama.cpp server, … at an `api_base` you give.
    #[serde(alias = "custom_openai")]
    OpenaiCompatible,
    /// The built-in fake provider.
    Mock,
    Azure,
    Anthropic,
    Gemini,
    Bedrock,
    Groq,
    Mistral,
    Deepseek,
    #[serde(alias = "together")]
    TogetherAi,
    #[serde(alias = "fireworks")]
    FireworksAi,
    Openrouter,
    Perplexity,
    Xai,
    Ollama,
    #[serde(alias = "hosted_vllm")]
    Vllm,
    LmStudio,
}

/// How a provider is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI's Chat Completions API: the body passes through.
    OpenAi,
    /// OpenAI's API under Azure's deployment URLs and `api-key` header.
    Azure,
    Anthropic,
    Gemini,
    Bedrock,
}

/// How the key reaches the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyHeader {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// `x-api-key: <key>` (Anthropic).
    XApiKey,
    /// `api-key: <key>` (Azure).
    ApiKey,
    /// `x-goog-api-key: <key>` (Gemini).
    GoogApiKey,
    /// Signed per request (Bedrock, SigV4).
    SigV4,
}

impl Provider {
    pub const ALL: [Provider; 18] = [
        Provider::Openai,
        Provider::OpenaiCompatible,
        Provider::Mock,
        Provider::Azure,
        Provider::Anthropic,
        Provider::Gemini,
        Provider::Bedrock,
        Provider::Groq,
        Provider::Mistral,
        Provider::Deepseek,
        Provider::TogetherAi,
        Provider::FireworksAi,
        Provider::Openrouter,
        Provider::Perplexity,
        Provider::Xai,
        Provider::Ollama,
        Provider::Vllm,
        Provider::LmStudio,
    ];

    /// The name used in config, model-string prefixes and the price map.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Openai => "openai",
            Provider::OpenaiCompatible => "openai_compatible",
            Provider::Mock => "mock",
            Provider::Azure => "azure",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gemini",
            Provider::Bedrock => "bedrock",
            Provider::Groq => "groq",
            Provider::Mistral => "mistral",
            Provider::Deepseek => "deepseek",
            Provider::TogetherAi => "together_ai",
            Provider::FireworksAi => "fireworks_ai",
            Provider::Openrouter => "openrouter",
            Provider::Perplexity => "perplexity",
            Provider::Xai => "xai",
            Provider::Ollama => "ollama",
            Provider::Vllm => "vllm",
            Provider::LmStudio => "lm_studio",
        }
    }

    /// A model-string prefix (`anthropic/…`, LiteLLM's names and ours).
    pub fn from_prefix(prefix: &str) -> Option<Provider> {
        let p = match prefix {
            "together" => Provider::TogetherAi,
            "fireworks" => Provider::FireworksAi,
            "hosted_vllm" => Provider::Vllm,
            "custom_openai" => Provider::OpenaiCompatible,
            "ollama_chat" => Provider::Ollama,
            "vertex_ai_gemini" | "google" => Provider::Gemini,
            "bedrock_converse" => Provider::Bedrock,
            other => return Provider::ALL.into_iter().find(|p| p.name() == other),
        };
        Some(p)
    }

    pub fn wire(self) -> Wire {
        match self {
            Provider::Azure => Wire::Azure,
            Provider::Anthropic => Wire::Anthropic,
            Provider::Gemini => Wire::Gemini,
            Provider::Bedrock => Wire::Bedrock,
            _ => Wire::OpenAi,
        }
    }

    /// Base URL when the deployment gives none. `None`: `api_base` is
    /// required (self-hosted servers, Azure resources) or built per region.
    pub fn default_api_base(self) -> Option<&'static str> {
        Some(match self {
            Provider::Openai => "https://api.openai.com/v1",
            Provider::Anthropic => "https://api.anthropic.com",
            Provider::Gemini => "https://generativelanguage.googleapis.com",
            Provider::Groq => "https://api.groq.com/openai/v1",
            Provider::Mistral => "https://api.mistral.ai/v1",
            Provider::Deepseek => "https://api.deepseek.com/v1",
            Provider::TogetherAi => "https://api.together.xyz/v1",
            Provider::FireworksAi => "https://api.fireworks.ai/inference/v1",
            Provider::Openrouter => "https://openrouter.ai/api/v1",
            Provider::Perplexity => "https://api.perplexity.ai",
            Provider::Xai => "https://api.x.ai/v1",
            Provider::Ollama => "http://127.0.0.1:11434/v1",
            Provider::Vllm => "http://127.0.0.1:8000/v1",
            Provider::LmStudio => "http://127.0.0.1:1234/v1",
            Provider::OpenaiCompatible | Provider::Mock | Provider::Azure | Provider::Bedrock => {
                return None
            }
        })
    }

    /// The environment variable LiteLLM reads the key from, used when a
    /// deployment sets no `api_key`.
    pub fn key_env(self) -> Option<&'static str> {
        Some(match self {
            Provider::Openai => "OPENAI_API_KEY",
            Provider::Azure => "AZURE_API_KEY",
            Provider::Anthropic => "ANTHROPIC_API_KEY",
            Provider::Gemini => "GEMINI_API_KEY",
            Provider::Groq => "GROQ_API_KEY",
            Provider::Mistral => "MISTRAL_API_KEY",
            Provider::Deepseek => "DEEPSEEK_API_KEY",
            Provider::TogetherAi => "TOGETHERAI_API_KEY",
            Provider::FireworksAi => "FIREWORKS_AI_API_KEY",
            Provider::Openrouter => "OPENROUTER_API_KEY",
            Provider::Perplexity => "PERPLEXITYAI_API_KEY",
            Provider::Xai => "XAI_API_KEY",
            Provider::OpenaiCompatible
            | Provider::Mock
            | Provider::Bedrock
            | Provider::Ollama
            | Provider::Vllm
            | Provider::LmStudio => return None,
        })
    }

    pub fn key_header(self) -> KeyHeader {
        match self {
            Provider::Anthropic => KeyHeader::XApiKey,
            Provider::Azure => KeyHeader::ApiKey,
            Provider::Gemini => KeyHeader::GoogApiKey,
            Provider::Bedrock => KeyHeader::SigV4,
            _ => KeyHeader::Bearer,
        }
    }

    /// Does a call without any key make sense (local servers)?
    pub fn key_optional(self) -> bool {
        matches!(
            self,
            Provider::OpenaiCompatible
                | Provider::Mock
                | Provider::Ollama
                | Provider::Vllm
                | Provider::LmStudio
                | Provider::Bedrock
        )
    }
}

/// Splits a LiteLLM-style model string: `anthropic/claude-3-5-haiku` →
/// (Anthropic, `claude-3-5-haiku`). Only a known provider prefix counts:
/// `meta-llama/Llama-3-8B` is a model name with a slash in it.
pub fn split_model(model: &str) -> Option<(Provider, &str)> {
    let (prefix, rest) = model.split_once('/')?;
    let provider = Provider::from_prefix(prefix)?;
    (!rest.is_empty()).then_some((provider, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_strings_name_their_provider_only_with_a_known_prefix() {
        assert_eq!(
            split_model("anthropic/claude-3-5-haiku-latest"),
            Some((Provider::Anthropic, "claude-3-5-haiku-latest"))
        );
        assert_eq!(
            split_model("hosted_vllm/meta-llama/Llama-3-8B"),
            Some((Provider::Vllm, "meta-llama/Llama-3-8B"))
        );
        assert_eq!(
            split_model("bedrock/anthropic.claude-3-haiku-20240307-v1:0"),
            Some((Provider::Bedrock, "anthropic.claude-3-haiku-20240307-v1:0"))
        );
        assert_eq!(split_model("meta-llama/Llama-3-8B"), None);
        assert_eq!(split_model("gpt-4o"), None);
        assert_eq!(split_model("openai/"), None);
    }

    #[test]
    fn every_provider_name_parses_back() {
        for p in Provider::ALL {
            assert_eq!(Provider::from_prefix(p.name()), Some(p), "{p:?}");
        }
    }
}
