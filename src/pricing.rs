//! Cost of a request from its token usage and the deployment's prices,
//! and the price map those come from when the config sets none.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::config::Provider;
use crate::providers::Usage;
use crate::topology::DeploymentTarget;

/// Public list prices per model (USD per token), shipped with the gateway.
const PRICE_MAP: &str = include_str!("../data/model_prices.json");

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct ModelPrice {
    #[serde(default)]
    pub input_cost_per_token: f64,
    #[serde(default)]
    pub output_cost_per_token: f64,
    pub cache_read_input_token_cost: Option<f64>,
    pub cache_creation_input_token_cost: Option<f64>,
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
}

fn price_map() -> &'static HashMap<String, ModelPrice> {
    static MAP: OnceLock<HashMap<String, ModelPrice>> = OnceLock::new();
    MAP.get_or_init(|| {
        let raw: HashMap<String, serde_json::Value> =
            serde_json::from_str(PRICE_MAP).unwrap_or_default();
        raw.into_iter()
            .filter(|(k, _)| !k.starts_with('_'))
            .filter_map(|(k, v)| Some((k, serde_json::from_value(v).ok()?)))
            .collect()
    })
}

/// The list price of `model` as `provider` serves it: `provider/model`,
/// then `model` as written (LiteLLM-style `openai/gpt-4o` names), then the
/// bare name under any provider prefix.
pub fn lookup(provider: Provider, model: &str) -> Option<ModelPrice> {
    let map = price_map();
    let prefix = match provider {
        Provider::OpenaiCompatible
        | Provider::Mock
        | Provider::Ollama
        | Provider::Vllm
        | Provider::LmStudio => "",
        p => p.name(),
    };
    if !prefix.is_empty() {
        if let Some(p) = map.get(&format!("{prefix}/{model}")) {
            return Some(*p);
        }
    }
    if let Some(p) = map.get(model) {
        return Some(*p);
    }
    let bare = model.rsplit('/').next().unwrap_or(model);
    [
        "openai",
        "anthropic",
        "gemini",
        "mistral",
        "groq",
        "deepseek",
        "xai",
    ]
    .iter()
    .find_map(|p| map.get(&format!("{p}/{bare}")).copied())
}

/// Cached prompt tokens are priced at the cache prices (read, written);
/// the rest of the prompt at the input price.
pub fn cost_usd(target: &DeploymentTarget, usage: &Usage) -> f64 {
    let cached = usage.cached_tokens.min(usage.prompt_tokens);
    let written = usage
        .cache_creation_tokens
        .min(usage.prompt_tokens - cached);
    let plain = usage.prompt_tokens - cached - written;
    plain as f64 * target.input_cost_per_token
        + cached as f64 * target.cache_read_cost_per_token
        + written as f64 * target.cache_creation_cost_per_token
        + usage.completion_tokens as f64 * target.output_cost_per_token
}

/// A float as Python's `str()` writes it (LiteLLM's header values):
/// shortest round-trip digits, exponent form below 1e-4 or from 1e16
/// (`3.5e-05`), `.0` on whole numbers.
pub fn python_float(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "nan".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let abs = x.abs();
    if x == 0.0 || (1e-4..1e16).contains(&abs) {
        let s = format!("{x}");
        return if s.contains('.') { s } else { format!("{s}.0") };
    }
    let e = format!("{x:e}");
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_price_map_loads_and_answers_for_common_models() {
        assert!(price_map().len() > 100);
        let p = lookup(Provider::Openai, "gpt-4o").unwrap();
        assert!(p.input_cost_per_token > 0.0 && p.output_cost_per_token > p.input_cost_per_token);
        assert_eq!(
            lookup(
                Provider::OpenaiCompatible,
                "anthropic/claude-3-haiku-20240307"
            ),
            lookup(Provider::OpenaiCompatible, "claude-3-haiku-20240307")
        );
        assert!(lookup(Provider::Mock, "mock-gpt").is_none());
    }

    #[test]
    fn floats_print_as_python_prints_them() {
        assert_eq!(python_float(3.5e-5), "3.5e-05");
        assert_eq!(python_float(0.00012), "0.00012");
        assert_eq!(python_float(0.0), "0.0");
        assert_eq!(python_float(2.0), "2.0");
        assert_eq!(python_float(1e-7), "1e-07");
        assert_eq!(python_float(0.0008869999999999999), "0.0008869999999999999");
        assert_eq!(python_float(1.5e20), "1.5e+20");
    }
}
