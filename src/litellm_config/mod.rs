//! A LiteLLM proxy config (`config.yaml`) translated into tollgate's config.
//!
//! Pure: YAML text in (plus a way to read environment variables, passed
//! in), tollgate's TOML text out, with every LiteLLM setting it could not
//! carry over named by its path (`litellm_settings.cache_params.type`,
//! `model_list[2].litellm_params.vertex_project`) and the reason. The TOML
//! then takes the one road every config takes, [`Config::from_toml`], so
//! there is a single place where values are checked.
//!
//! Secrets given as `os.environ/NAME` become tollgate's `env:NAME`, read
//! when the gateway starts. A field tollgate reads literally (`api_base`,
//! a port, a number) but that the YAML gives as `os.environ/NAME` is read
//! now, at translation, and a note says so.

use std::fmt;

use serde_norway::{Mapping, Value};
use toml::Table;

use crate::config::{Config, ConfigError};

mod deployment;
mod settings;
use crate::providers::catalog::Provider;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("not valid YAML: {0}")]
    Yaml(String),
    #[error("LiteLLM config error at `{path}`: {message}")]
    Invalid { path: String, message: String },
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> ImportError {
    ImportError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

/// A LiteLLM setting the translation left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// Where it sits in the YAML, e.g. `litellm_settings.cache_params.type`.
    pub path: String,
    pub reason: String,
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// The translated config and what did not make it across.
#[derive(Debug, Clone)]
pub struct Imported {
    /// tollgate's config, as TOML (no comments).
    pub toml: String,
    pub ignored: Vec<Ignored>,
    /// Things carried over with a caveat the user should know.
    pub notes: Vec<String>,
}

impl Imported {
    /// Parses and validates the translated config: the same path as a
    /// `config.toml` (secrets resolved, values checked).
    pub fn config(&self) -> Result<Config, ConfigError> {
        Config::from_toml(&self.toml)
    }

    pub fn is_ignored(&self, path: &str) -> bool {
        self.ignored.iter().any(|i| i.path == path)
    }

    /// The TOML with a comment header naming what was not carried over.
    pub fn annotated_toml(&self) -> String {
        let mut out = String::from(
            "# tollgate config translated from a LiteLLM proxy config (tollgate import-litellm).\n",
        );
        if !self.ignored.is_empty() {
            out.push_str("#\n# LiteLLM settings not carried over:\n");
            for i in &self.ignored {
                out.push_str(&format!("#   {i}\n"));
            }
        }
        if !self.notes.is_empty() {
            out.push_str("#\n# Notes:\n");
            for n in &self.notes {
                out.push_str(&format!("#   {n}\n"));
            }
        }
        out.push('\n');
        out.push_str(&self.toml);
        out
    }
}

/// Does this text look like a LiteLLM config (YAML with a `model_list`)?
pub fn looks_like_litellm(text: &str) -> bool {
    matches!(
        serde_norway::from_str::<Value>(text),
        Ok(Value::Mapping(m)) if m.contains_key("model_list")
    )
}

/// Translates with the process environment for `os.environ/NAME` values
/// tollgate reads literally.
pub fn translate(yaml: &str) -> Result<Imported, ImportError> {
    translate_with_env(yaml, &|name| {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    })
}

/// Translates a LiteLLM proxy config. `env` answers for `os.environ/NAME`
/// in fields tollgate does not resolve itself.
pub fn translate_with_env(
    yaml: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Imported, ImportError> {
    let mut root: Value =
        serde_norway::from_str(yaml).map_err(|e| ImportError::Yaml(e.to_string()))?;
    root.apply_merge()
        .map_err(|e| ImportError::Yaml(e.to_string()))?;
    let root = match root {
        Value::Mapping(m) => m,
        Value::Null => Mapping::new(),
        other => {
            return Err(invalid(
                "(top level)",
                format!(
                    "must be a mapping of sections (model_list, router_settings, …), not {}",
                    kind(&other)
                ),
            ))
        }
    };
    let mut t = Translator {
        env,
        out: Table::new(),
        groups: Vec::new(),
        any_tags: false,
        destinations: Vec::new(),
        ignored: Vec::new(),
        notes: Vec::new(),
    };
    let mut sections = Vec::new();
    for (k, v) in &root {
        sections.push((key_name("(top level)", k)?, v));
    }
    // model_list first, so fallbacks can be checked against its groups;
    // router_settings after litellm_settings, so it wins where both speak.
    let order = [
        "model_list",
        "litellm_settings",
        "router_settings",
        "general_settings",
    ];
    for name in order {
        if let Some((_, v)) = sections.iter().find(|(k, _)| k == name) {
            match name {
                "model_list" => t.model_list(v)?,
                "litellm_settings" => t.litellm_settings(v)?,
                "router_settings" => t.router_settings(v)?,
                _ => t.general_settings(v)?,
            }
        }
    }
    for (name, v) in sections {
        if order.contains(&name.as_str()) {
            continue;
        }
        let reason = if name == "environment_variables" {
            "tollgate does not set environment variables from its config: export them where it runs"
        } else {
            "not a LiteLLM section tollgate reads"
        };
        t.ignore(&name, v, reason);
    }
    t.finish()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn key_name(path: &str, k: &Value) -> Result<String, ImportError> {
    match k {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(invalid(
            path,
            format!("keys must be names, found {}", kind(other)),
        )),
    }
}

fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn mapping<'v>(path: &str, v: &'v Value) -> Result<Option<&'v Mapping>, ImportError> {
    match v {
        Value::Null => Ok(None),
        Value::Mapping(m) => Ok(Some(m)),
        other => Err(invalid(
            path,
            format!("must be a mapping, not {}", kind(other)),
        )),
    }
}

/// Entries of a mapping with their names and paths.
fn entries<'v>(
    path: &str,
    m: &'v Mapping,
) -> Result<Vec<(String, String, &'v Value)>, ImportError> {
    let mut out = Vec::with_capacity(m.len());
    for (k, v) in m {
        let name = key_name(path, k)?;
        let p = child(path, &name);
        out.push((name, p, v));
    }
    Ok(out)
}

fn toml_int(path: &str, n: u64) -> Result<toml::Value, ImportError> {
    i64::try_from(n)
        .map(toml::Value::Integer)
        .map_err(|_| invalid(path, "is too large"))
}

const ENV_PREFIX: &str = "os.environ/";

/// Known LiteLLM error classes, by their `retry_policy` /
/// `allowed_fails_policy` names, and tollgate's.
const ERROR_CLASSES: [(&str, &str); 6] = [
    ("BadRequestError", "bad_request"),
    ("AuthenticationError", "authentication"),
    ("TimeoutError", "timeout"),
    ("RateLimitError", "rate_limit"),
    ("ContentPolicyViolationError", "content_policy"),
    ("InternalServerError", "internal_server"),
];

/// Why a known-but-unsupported `litellm_params` key is left behind.
fn param_reason(key: &str) -> &'static str {
    match key {
        "stream_timeout" => {
            "tollgate has one stream idle timeout for every deployment: router.stream_idle_timeout_secs"
        }
        "temperature" | "max_tokens" | "max_completion_tokens" | "top_p" | "top_k"
        | "frequency_penalty" | "presence_penalty" | "stop" | "seed" | "n" | "response_format"
        | "tool_choice" | "tools" | "user" | "logprobs" | "top_logprobs" | "reasoning_effort"
        | "extra_body" => "default request parameters are not added to requests",
        "vertex_project" | "vertex_location" | "vertex_credentials" => {
            "Vertex AI credentials: tollgate speaks to Gemini with an api_key"
        }
        "organization" => {
            "not sent: add extra_headers = { OpenAI-Organization = \"…\" } to the deployment"
        }
        "max_retries" | "num_retries" => "per-deployment retries: use router.num_retries",
        "max_parallel_requests" => "no per-deployment limit on requests in flight",
        "mock_response" => "canned answers: use provider = \"mock\"",
        "use_in_pass_through" | "use_litellm_proxy" | "merge_reasoning_content_in_choices" => {
            "LiteLLM-specific behaviour"
        }
        k if k.starts_with("aws_") => "AWS credentials other than keys, session token and region",
        _ => "no tollgate equivalent",
    }
}

/// Bare model names LiteLLM knows the provider of without a prefix.
fn infer_provider(model: &str) -> Option<Provider> {
    let o_series = model.strip_prefix('o').is_some_and(|rest| {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0 && (rest.len() == digits || rest.as_bytes()[digits] == b'-')
    });
    if o_series
        || [
            "gpt-",
            "chatgpt-",
            "text-embedding-",
            "ft:gpt-",
            "dall-e-",
            "davinci-",
            "babbage-",
        ]
        .iter()
        .any(|p| model.starts_with(p))
    {
        Some(Provider::Openai)
    } else if model.starts_with("claude-") {
        Some(Provider::Anthropic)
    } else {
        None
    }
}

struct Translator<'e> {
    env: &'e dyn Fn(&str) -> Option<String>,
    /// Everything but `models`.
    out: Table,
    /// Model groups in the order LiteLLM lists them: name, deployments,
    /// per-group retry policy.
    groups: Vec<(String, Vec<Table>, Option<Table>)>,
    any_tags: bool,
    /// LiteLLM callback name → destination, one per kind.
    destinations: Vec<(&'static str, Table)>,
    ignored: Vec<Ignored>,
    notes: Vec<String>,
}

impl Translator<'_> {
    // ---- reporting -------------------------------------------------------

    /// Reports `v` at `path` as not carried over: each leaf of a mapping
    /// by its own path; a list or a scalar as one.
    fn ignore(&mut self, path: &str, v: &Value, reason: &str) {
        match v {
            Value::Null => {}
            Value::Mapping(m) if !m.is_empty() => {
                for (k, v) in m {
                    let name = match key_name(path, k) {
                        Ok(n) => n,
                        Err(_) => "?".into(),
                    };
                    self.ignore(&child(path, &name), v, reason);
                }
            }
            _ => self.ignored.push(Ignored {
                path: path.to_string(),
                reason: reason.to_string(),
            }),
        }
    }

    fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    // ---- values ----------------------------------------------------------

    /// `os.environ/NAME` in a field tollgate reads literally: the value
    /// now. Anything else as it is.
    fn resolved(&mut self, path: &str, v: &Value) -> Result<Value, ImportError> {
        let Value::String(s) = v else {
            return Ok(v.clone());
        };
        let Some(name) = s.strip_prefix(ENV_PREFIX) else {
            return Ok(v.clone());
        };
        match (self.env)(name) {
            Some(value) => {
                self.note(format!(
                    "{path}: tollgate reads this field literally, so {name} was read at translation"
                ));
                Ok(Value::String(value))
            }
            None => Err(invalid(
                path,
                format!(
                    "{s}: {name} is not set (tollgate reads this field literally, so its value is taken at translation)"
                ),
            )),
        }
    }

    fn text(&mut self, path: &str, v: &Value) -> Result<String, ImportError> {
        match self.resolved(path, v)? {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(invalid(
                path,
                format!("must be a string, not {}", kind(&other)),
            )),
        }
    }

    /// A secret: `os.environ/NAME` becomes `env:NAME`, resolved by tollgate
    /// at start-up; a literal stays literal.
    fn secret(&self, path: &str, v: &Value) -> Result<String, ImportError> {
        match v {
            Value::String(s) => Ok(match s.strip_prefix(ENV_PREFIX) {
                Some(name) => format!("env:{name}"),
                None => s.clone(),
            }),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(invalid(
                path,
                format!("must be a string, not {}", kind(other)),
            )),
        }
    }

    fn float(&mut self, path: &str, v: &Value) -> Result<f64, ImportError> {
        let n = match self.resolved(path, v)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        n.filter(|n| n.is_finite())
            .ok_or_else(|| invalid(path, "must be a number"))
    }

    fn uint(&mut self, path: &str, v: &Value) -> Result<u64, ImportError> {
        let whole = |f: f64| (f.is_finite() && f >= 0.0 && f.fract() == 0.0).then_some(f as u64);
        let n = match self.resolved(path, v)? {
            Value::Number(n) => n.as_u64().or_else(|| n.as_f64().and_then(whole)),
            Value::String(s) => {
                let s = s.trim();
                s.parse::<u64>()
                    .ok()
                    .or_else(|| s.parse::<f64>().ok().and_then(whole))
            }
            _ => None,
        };
        n.ok_or_else(|| invalid(path, "must be a whole number, 0 or more"))
    }

    fn uint32(&mut self, path: &str, v: &Value) -> Result<u32, ImportError> {
        let n = self.uint(path, v)?;
        u32::try_from(n).map_err(|_| invalid(path, "is too large"))
    }

    /// Seconds, possibly fractional: rounded up to whole seconds, at least 1.
    fn seconds(&mut self, path: &str, v: &Value) -> Result<u64, ImportError> {
        let s = self.float(path, v)?;
        if s < 0.0 {
            return Err(invalid(path, "must not be negative"));
        }
        if s > u64::MAX as f64 / 2.0 {
            return Err(invalid(path, "is too large"));
        }
        let whole = s.ceil().max(1.0) as u64;
        if s.fract() != 0.0 || s < 1.0 {
            self.note(format!(
                "{path}: {s} s rounded to {whole} s (tollgate counts whole seconds)"
            ));
        }
        Ok(whole)
    }

    fn boolean(&mut self, path: &str, v: &Value) -> Result<bool, ImportError> {
        match self.resolved(path, v)? {
            Value::Bool(b) => Ok(b),
            // YAML 1.1 (PyYAML, which LiteLLM reads with) spellings.
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "y" | "1" => Ok(true),
                "false" | "no" | "off" | "n" | "0" => Ok(false),
                _ => Err(invalid(path, "must be true or false")),
            },
            _ => Err(invalid(path, "must be true or false")),
        }
    }

    /// A list of names (one name alone counts as a list of one).
    fn names(&mut self, path: &str, v: &Value) -> Result<Vec<String>, ImportError> {
        match v {
            Value::Null => Ok(Vec::new()),
            Value::Sequence(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(self.text(&format!("{path}[{i}]"), item)?);
                }
                Ok(out)
            }
            single => Ok(vec![self.text(path, single)?]),
        }
    }

    // ---- output ----------------------------------------------------------

    /// Sets `out.a.b.c = value`, making the tables on the way.
    fn set(&mut self, keys: &[&str], value: toml::Value) {
        let Some((last, parents)) = keys.split_last() else {
            return;
        };
        let mut table = &mut self.out;
        for k in parents {
            let entry = table
                .entry(k.to_string())
                .or_insert_with(|| toml::Value::Table(Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(Table::new());
            }
            let toml::Value::Table(t) = entry else {
                return;
            };
            table = t;
        }
        table.insert(last.to_string(), value);
    }

    fn get(&self, keys: &[&str]) -> Option<&toml::Value> {
        let (last, parents) = keys.split_last()?;
        let mut table = &self.out;
        for k in parents {
            table = table.get(*k)?.as_table()?;
        }
        table.get(*last)
    }

    fn group_exists(&self, name: &str) -> bool {
        self.groups.iter().any(|(n, _, _)| n == name)
    }

    // ---- the result --------------------------------------------------------

    fn finish(mut self) -> Result<Imported, ImportError> {
        // LiteLLM routes by tags only when asked to; tollgate by default.
        if self.any_tags && self.get(&["router", "enable_tag_filtering"]).is_none() {
            self.set(&["router", "enable_tag_filtering"], false.into());
            self.note(
                "router.enable_tag_filtering = false, as LiteLLM without enable_tag_filtering: deployment tags do not steer requests"
                    .into(),
            );
        }
        // tollgate also bounds a request's attempts together (600 s by
        // default); never below the longest single attempt.
        let longest = self
            .groups
            .iter()
            .flat_map(|(_, deps, _)| deps.iter())
            .filter_map(|d| d.get("timeout_secs").and_then(toml::Value::as_integer))
            .chain(
                self.get(&["router", "timeout_secs"])
                    .and_then(toml::Value::as_integer),
            )
            .max()
            .unwrap_or(0);
        if longest > 600 {
            self.set(
                &["router", "request_timeout_secs"],
                toml::Value::Integer(longest),
            );
        }
        let destinations: Vec<toml::Value> = std::mem::take(&mut self.destinations)
            .into_iter()
            .map(|(_, t)| toml::Value::Table(t))
            .collect();
        if !destinations.is_empty() {
            self.set(
                &["logging", "destinations"],
                toml::Value::Array(destinations),
            );
        }

        let mut models = Table::new();
        for (name, deps, retry) in std::mem::take(&mut self.groups) {
            let mut g = Table::new();
            g.insert(
                "deployments".into(),
                toml::Value::Array(deps.into_iter().map(toml::Value::Table).collect()),
            );
            if let Some(r) = retry {
                g.insert("retry_policy".into(), toml::Value::Table(r));
            }
            models.insert(name, toml::Value::Table(g));
        }
        let to_text = |t: &Table| {
            toml::to_string(t)
                .map_err(|e| invalid("(translation)", format!("cannot write TOML: {e}")))
        };
        let mut text = to_text(&self.out)?;
        if !models.is_empty() {
            let mut wrapper = Table::new();
            wrapper.insert("models".into(), toml::Value::Table(models));
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&to_text(&wrapper)?);
        }
        // The translation must fit tollgate's schema (unknown keys, types):
        // a failure here is a bug in this module, said plainly.
        if let Err(e) = toml::from_str::<Config>(&text) {
            return Err(invalid(
                "(translation)",
                format!("the translated config does not fit tollgate's schema: {e}"),
            ));
        }
        Ok(Imported {
            toml: text,
            ignored: self.ignored,
            notes: self.notes,
        })
    }
}

#[cfg(test)]
mod tests;
