//! An OpenAI chat request read into types, for the wire modules that
//! rebuild the body in their provider's shape (Anthropic, Gemini, Bedrock),
//! and the one rule for parameters a provider does not take: a 400 naming
//! them, or dropped when `drop_params` is on.

use serde::Deserialize;
use serde_json::Value;

use crate::error::GatewayError;
use crate::request::InferenceRequest;

/// The OpenAI chat parameters translated wires understand. Anything else
/// in the body is either gateway-only (ignored) or unsupported (see
/// [`ChatParams::read`]).
#[derive(Debug, Default, Deserialize)]
pub struct ChatParams {
    pub messages: Vec<Message>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// Not OpenAI's, but Anthropic, Gemini and others take it.
    pub top_k: Option<u64>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub stop: Option<Stop>,
    pub n: Option<u64>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub tools: Option<Vec<Tool>>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<ResponseFormat>,
    pub user: Option<String>,
    /// `low` / `medium` / `high` (OpenAI's o-series knob).
    pub reasoning_effort: Option<String>,
    /// Anthropic's extended-thinking object, passed as given.
    pub thinking: Option<Value>,
}

/// Fields the gateway reads itself or that only steer it: never sent to
/// a translated provider, never refused.
pub const GATEWAY_FIELDS: &[&str] = &[
    "model",
    "stream",
    "stream_options",
    "timeout",
    "metadata",
    "tags",
    "fallbacks",
    "num_retries",
    "mock_response",
    "caching",
    "drop_params",
];

impl ChatParams {
    /// Reads the body. `supported` names the OpenAI parameters (beyond
    /// `messages`) this provider takes; any other non-null parameter is
    /// refused with a 400 naming it, or dropped when `drop_params`.
    pub fn read(
        req: &InferenceRequest,
        provider: &str,
        supported: &[&str],
        drop_params: bool,
    ) -> Result<ChatParams, GatewayError> {
        // The kept fields, copied raw into one object and read in one pass:
        // no intermediate `Value` tree (a map and an allocation per node).
        let mut kept = Vec::with_capacity(
            req.body
                .0
                .iter()
                .map(|(k, v)| k.len() + v.get().len() + 4)
                .sum::<usize>()
                + 2,
        );
        kept.push(b'{');
        let mut unsupported = Vec::new();
        for (k, v) in &req.body.0 {
            let k = k.as_str();
            // A repeated field: the last one counts, as everywhere else.
            if !req.body.get(k).is_some_and(|last| std::ptr::eq(last, &**v)) {
                continue;
            }
            if k == "messages" || supported.contains(&k) {
                if kept.len() > 1 {
                    kept.push(b',');
                }
                let _ = serde_json::to_writer(&mut kept, k);
                kept.push(b':');
                kept.extend_from_slice(v.get().as_bytes());
            } else if GATEWAY_FIELDS.contains(&k) || v.get() == "null" {
                continue;
            } else if !drop_params {
                unsupported.push(k.to_string());
            }
        }
        kept.push(b'}');
        if !unsupported.is_empty() {
            return Err(unsupported_params(provider, &unsupported));
        }
        let mut de = serde_json::Deserializer::from_slice(&kept);
        serde_path_to_error::deserialize(&mut de).map_err(|e| GatewayError::InvalidRequest {
            message: format!("invalid `{}`: {}", e.path(), e.inner()),
            param: None,
        })
    }

    pub fn max_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    pub fn stop_sequences(&self) -> Vec<String> {
        match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        }
    }
}

/// The 400 for parameters `provider` does not take (LiteLLM's advice
/// included: they can be dropped instead).
pub fn unsupported_params(provider: &str, names: &[String]) -> GatewayError {
    GatewayError::InvalidRequest {
        message: format!(
            "{provider} does not support parameters: {}. To drop them, set `drop_params = true` in the config (globally or on the deployment).",
            names.join(", ")
        ),
        param: None,
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// On `tool` messages: which call this answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// Earlier thinking handed back (Anthropic requires it with tools).
    #[serde(default)]
    pub thinking_blocks: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    /// OpenAI's newer name for system instructions.
    Developer,
    User,
    Assistant,
    Tool,
    /// The deprecated function-calling answer; treated as `tool`.
    Function,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

impl Content {
    /// The text of every text part, joined (images and the like skipped).
    pub fn text(&self) -> String {
        match self {
            Content::Text(s) => s.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text { text, .. } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(""),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text {
        text: String,
        /// Anthropic prompt caching marker, passed through where taken.
        #[serde(default)]
        cache_control: Option<Value>,
    },
    ImageUrl {
        image_url: ImageUrl,
    },
    /// Anything else (`input_audio`, `file`, …): refused by the wire
    /// module that cannot carry it.
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ImageUrl {
    Url(String),
    Object {
        url: String,
        #[serde(default)]
        detail: Option<String>,
    },
}

impl ImageUrl {
    pub fn url(&self) -> &str {
        match self {
            ImageUrl::Url(u) | ImageUrl::Object { url: u, .. } => u,
        }
    }

    /// A `data:` URL split into (media type, base64 data).
    pub fn inline(&self) -> Option<(&str, &str)> {
        let rest = self.url().strip_prefix("data:")?;
        let (meta, data) = rest.split_once(',')?;
        let media = meta.strip_suffix(";base64")?;
        Some((media, data))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// JSON text, as OpenAI carries it.
    #[serde(default)]
    pub arguments: String,
}

impl FunctionCall {
    /// The arguments as a JSON object (providers that take structured
    /// input); text that is not JSON becomes `{}` rather than a failure,
    /// as a model's half-written call should not break the conversation.
    pub fn arguments_json(&self) -> Value {
        match serde_json::from_str::<Value>(&self.arguments) {
            Ok(v @ Value::Object(_)) => v,
            _ => Value::Object(Default::default()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Tool {
    pub function: FunctionDef,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// JSON Schema of the arguments; absent: an object with no properties.
    #[serde(default)]
    pub parameters: Option<Value>,
}

impl FunctionDef {
    pub fn schema(&self) -> Value {
        self.parameters
            .clone()
            .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    /// `none`, `auto`, `required`.
    Mode(String),
    /// `{"type":"function","function":{"name":…}}`.
    Named { function: NamedFunction },
}

#[derive(Debug, Clone, Deserialize)]
pub struct NamedFunction {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchema },
}

#[derive(Debug, Clone, Deserialize)]
pub struct JsonSchema {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub schema: Option<Value>,
    #[serde(default)]
    pub strict: Option<bool>,
}

/// OpenAI's `finish_reason` for answers that carried tool calls.
pub const FINISH_TOOL_CALLS: &str = "tool_calls";

/// A JSON string for an OpenAI chunk or answer; writing a `Value` to a
/// Vec cannot fail.
pub fn to_bytes(v: &Value) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Endpoint;

    fn req(body: &str) -> InferenceRequest {
        InferenceRequest::parse(Endpoint::ChatCompletions, body.as_bytes()).unwrap()
    }

    #[test]
    fn unsupported_parameters_are_named_or_dropped() {
        let r = req(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"logprobs":true,"seed":3,"metadata":{"a":1},"n":null}"#,
        );
        let err = ChatParams::read(&r, "anthropic", &["temperature"], false).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("logprobs, seed"), "{msg}");
        let named = msg
            .split("parameters: ")
            .nth(1)
            .unwrap()
            .split('.')
            .next()
            .unwrap();
        assert_eq!(
            named, "logprobs, seed",
            "metadata is the gateway's, n is null"
        );
        let p = ChatParams::read(&r, "anthropic", &["temperature"], true).unwrap();
        assert_eq!(p.messages.len(), 1);
        assert!(p.seed.is_none());
    }

    #[test]
    fn content_parts_and_tool_calls_are_typed() {
        let r = req(r#"{"model":"m","messages":[
                {"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBO"}}]},
                {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]},
                {"role":"tool","tool_call_id":"c1","content":"42"}]}"#);
        let p = ChatParams::read(&r, "x", &[], false).unwrap();
        let Some(Content::Parts(parts)) = &p.messages[0].content else {
            panic!("parts expected")
        };
        let Part::ImageUrl { image_url } = &parts[1] else {
            panic!("image expected")
        };
        assert_eq!(image_url.inline(), Some(("image/png", "iVBO")));
        let call = &p.messages[1].tool_calls.as_ref().unwrap()[0];
        assert_eq!(call.function.arguments_json()["x"], 1);
        assert_eq!(p.messages[2].role, Role::Tool);
    }

    #[test]
    fn a_repeated_parameter_counts_once_the_last_one_wins() {
        let r = req(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.1,"temperature":0.7}"#,
        );
        let p = ChatParams::read(&r, "x", &["temperature"], false).unwrap();
        assert_eq!(p.temperature, Some(0.7));
    }

    #[test]
    fn a_wrong_type_names_its_field() {
        let r =
            req(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":"hot"}"#);
        let msg = ChatParams::read(&r, "x", &["temperature"], false)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("temperature"), "{msg}");
    }
}
