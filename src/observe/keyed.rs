//! Key- and team-based logging (LiteLLM's): a key's or its team's
//! `metadata.logging` names its own Langfuse project, e.g.
//!
//! ```json
//! {"logging": [{"callback_name": "langfuse", "callback_type": "success",
//!   "callback_vars": {"langfuse_public_key": "pk-…",
//!                     "langfuse_secret_key": "os.environ/TEAM_A_LANGFUSE_SECRET",
//!                     "langfuse_host": "https://cloud.langfuse.com"}}]}
//! ```
//!
//! On with `logging.key_logging = true`. The [`KeyedHub`] actor owns one
//! sink per project, made the first time a request names it (at most
//! [`MAX_PROJECTS`]); requests reach it with `try_send` like any sink.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::SinkSettings;
use super::otlp::{Flavor, OtlpExporter};
use super::record::LogRecord;
use super::sink::{Enqueue, SinkActor, SinkMeters};
use crate::config::Secret;
use crate::metrics::Metrics;

/// Sinks the hub keeps at most; records for more projects are dropped
/// (and counted under `destination="key-logging"`).
pub const MAX_PROJECTS: usize = 64;

/// One Langfuse project named by a key's or team's metadata. The secret is
/// kept as written (a literal, or `os.environ/NAME` as LiteLLM writes it)
/// and resolved when the project's sink is made.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLogging {
    pub host: String,
    pub public_key: String,
    pub secret_key: String,
    /// Which requests go there (`callback_type`).
    #[serde(default)]
    pub on: Events,
}

/// LiteLLM's `callback_type`: successes, failures, or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Events {
    Success,
    Failure,
    #[default]
    SuccessAndFailure,
}

impl Events {
    pub fn parse(s: &str) -> Option<Events> {
        match s {
            "success" => Some(Events::Success),
            "failure" => Some(Events::Failure),
            "success_and_failure" => Some(Events::SuccessAndFailure),
            _ => None,
        }
    }

    /// A `logging` entry's `callback_type`; both when unset or unknown.
    pub fn of_entry(entry: &Value) -> Events {
        entry
            .get("callback_type")
            .and_then(Value::as_str)
            .and_then(Events::parse)
            .unwrap_or_default()
    }

    pub fn takes(self, success: bool) -> bool {
        match self {
            Events::Success => success,
            Events::Failure => !success,
            Events::SuccessAndFailure => true,
        }
    }

    fn union(self, other: Events) -> Events {
        if self == other {
            self
        } else {
            Events::SuccessAndFailure
        }
    }
}

impl fmt::Debug for KeyLogging {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyLogging")
            .field("host", &self.host)
            .field("public_key", &self.public_key)
            .field("secret_key", &"***")
            .field("on", &self.on)
            .finish()
    }
}

fn langfuse_entry(vars: &Value, on: Events) -> Option<KeyLogging> {
    let s = |k: &str| vars.get(k).and_then(Value::as_str).map(str::to_string);
    Some(KeyLogging {
        host: s("langfuse_host").unwrap_or_else(|| "https://cloud.langfuse.com".into()),
        public_key: s("langfuse_public_key")?,
        secret_key: s("langfuse_secret_key").or_else(|| s("langfuse_secret"))?,
        on,
    })
}

/// The callback names that are Langfuse projects.
pub fn is_langfuse(name: &str) -> bool {
    matches!(name, "langfuse" | "langfuse_otel")
}

/// Whether a `callback_vars` entry is a credential, masked when shown.
pub fn is_secret_var(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["secret", "api_key", "password", "token", "service_account"]
        .iter()
        .any(|s| n.contains(s))
}

/// Masks the credentials among `callback_vars`.
pub fn mask_vars(vars: &mut serde_json::Map<String, Value>) {
    for (k, v) in vars.iter_mut() {
        if is_secret_var(k) && v.is_string() {
            *v = Value::String("***REDACTED***".into());
        }
    }
}

/// `metadata` with the credentials of its logging entries masked, for
/// management answers (team and key info show metadata).
pub fn mask_secrets(mut metadata: Value) -> Value {
    fn mask_in(vars: Option<&mut Value>) {
        if let Some(Value::Object(vars)) = vars {
            mask_vars(vars);
        }
    }
    if let Some(Value::Array(entries)) = metadata.get_mut("logging") {
        for e in entries {
            mask_in(e.get_mut("callback_vars"));
        }
    }
    if let Some(cs) = metadata.get_mut("callback_settings") {
        mask_in(cs.get_mut("callback_vars"));
    }
    metadata
}

/// The Langfuse projects a key's or team's `metadata` (JSON text) names:
/// `logging` entries with `callback_name = "langfuse"` (or
/// `langfuse_otel`), and a team's `callback_settings` as LiteLLM's
/// `/team/{id}/callback` stores them.
pub fn parse(metadata: &str) -> Vec<KeyLogging> {
    let Ok(Value::Object(m)) = serde_json::from_str::<Value>(metadata) else {
        return Vec::new();
    };
    let mut out: Vec<KeyLogging> = Vec::new();
    let mut add = |l: KeyLogging| {
        // One project named for successes and for failures is one sink
        // taking both, not two sinks sending some records twice.
        match out.iter_mut().find(|o| {
            (&o.host, &o.public_key, &o.secret_key) == (&l.host, &l.public_key, &l.secret_key)
        }) {
            Some(o) => o.on = o.on.union(l.on),
            None => out.push(l),
        }
    };
    if let Some(Value::Array(entries)) = m.get("logging") {
        for e in entries {
            let name = e.get("callback_name").and_then(Value::as_str);
            if !name.is_some_and(is_langfuse) {
                continue;
            }
            let on = Events::of_entry(e);
            if let Some(l) = e.get("callback_vars").and_then(|v| langfuse_entry(v, on)) {
                add(l);
            }
        }
    }
    if let Some(cs) = m.get("callback_settings") {
        let named = |list: &str| {
            cs.get(list)
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|c| c.as_str().is_some_and(is_langfuse)))
        };
        let on = match (named("success_callback"), named("failure_callback")) {
            (true, true) => Some(Events::SuccessAndFailure),
            (true, false) => Some(Events::Success),
            (false, true) => Some(Events::Failure),
            (false, false) => None,
        };
        if let Some(on) = on {
            if let Some(l) = cs.get("callback_vars").and_then(|v| langfuse_entry(v, on)) {
                add(l);
            }
        }
    }
    out
}

/// The metadata key `/team/{id}/disable_logging` sets (LiteLLM only
/// empties the team's callbacks; tollgate also keeps the team's requests
/// out of the global destinations, which is what turning logging off for
/// a team is for).
pub const LOGGING_DISABLED: &str = "logging_disabled";

/// Whether a team's metadata (JSON text) turns its logging off.
pub fn logging_disabled(metadata: &str) -> bool {
    // Cheap before parsing: most teams never set it.
    metadata.contains(LOGGING_DISABLED)
        && serde_json::from_str::<Value>(metadata)
            .is_ok_and(|m| m.get(LOGGING_DISABLED) == Some(&Value::Bool(true)))
}

/// `os.environ/NAME` (LiteLLM) or `env:NAME` (tollgate) from the
/// environment; anything else literally.
fn resolve(v: &str) -> Option<String> {
    match v
        .strip_prefix("os.environ/")
        .or_else(|| v.strip_prefix("env:"))
    {
        Some(name) => std::env::var(name).ok().filter(|x| !x.is_empty()),
        None => Some(v.to_string()),
    }
}

/// The sink settings of key/team destinations: the destination defaults.
pub fn default_settings() -> SinkSettings {
    SinkSettings {
        batch_size: 100,
        flush_interval: std::time::Duration::from_millis(1000),
        queue_size: 10_000,
        max_retries: 5,
        retry_backoff: std::time::Duration::from_millis(500),
        max_backoff: std::time::Duration::from_secs(30),
        timeout: std::time::Duration::from_secs(10),
    }
}

type ProjectSink = (Recipient<Enqueue<Arc<LogRecord>>>, SinkMeters);

pub struct KeyedHub {
    /// By (host, public key).
    sinks: HashMap<(String, String), ProjectSink>,
    settings: SinkSettings,
    redact: bool,
    metrics: Arc<Metrics>,
    overflow: SinkMeters,
}

impl KeyedHub {
    pub fn new(settings: SinkSettings, redact: bool, metrics: Arc<Metrics>) -> Self {
        let overflow = super::meters(&metrics, "key-logging");
        KeyedHub {
            sinks: HashMap::new(),
            settings,
            redact,
            metrics,
            overflow,
        }
    }

    fn sink(&mut self, l: &KeyLogging) -> Option<&ProjectSink> {
        let id = (l.host.clone(), l.public_key.clone());
        if !self.sinks.contains_key(&id) {
            if self.sinks.len() >= MAX_PROJECTS {
                return None;
            }
            let host = l.host.trim_end_matches('/');
            let ok_host = url::Url::parse(host)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            let (Some(pk), Some(sk)) = (resolve(&l.public_key), resolve(&l.secret_key)) else {
                tracing::warn!(host = %l.host, public_key = %l.public_key, "key/team logging: a Langfuse key is missing (unset environment variable?); records dropped");
                return None;
            };
            if !ok_host {
                tracing::warn!(host = %l.host, "key/team logging: langfuse_host is not an http(s) URL; records dropped");
                return None;
            }
            use base64::Engine as _;
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{pk}:{sk}"));
            let name = format!("langfuse:{host}:{}", l.public_key);
            let meters = super::meters(&self.metrics, &name);
            let addr = SinkActor::new(
                name,
                format!("{host}/api/public/otel/v1/traces"),
                vec![(
                    "authorization".into(),
                    Secret::new(format!("Basic {basic}")),
                )],
                self.settings,
                OtlpExporter::new(Flavor::Langfuse, self.redact),
                meters.clone(),
            )
            .start();
            self.sinks.insert(id.clone(), (addr.recipient(), meters));
        }
        self.sinks.get(&id)
    }
}

impl Actor for KeyedHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.settings.queue_size.min(16 * 1024));
    }
}

impl Supervised for KeyedHub {}

impl Handler<Enqueue<Arc<LogRecord>>> for KeyedHub {
    type Result = ();

    fn handle(&mut self, Enqueue(rec): Enqueue<Arc<LogRecord>>, _: &mut Context<Self>) {
        self.overflow.queued.dec();
        let Some(key) = rec.key.clone() else {
            return;
        };
        let success = rec.status == 200;
        for l in key.logging.iter().filter(|l| l.on.takes(success)) {
            match self.sink(l) {
                Some((tx, m)) => {
                    m.queued.inc();
                    if tx.try_send(Enqueue(rec.clone())).is_err() {
                        m.queued.dec();
                        m.dropped.inc();
                    }
                }
                None => {
                    self.overflow.dropped.inc();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn litellm_key_and_team_logging_metadata_is_read() {
        let key = r#"{"logging":[{"callback_name":"langfuse","callback_type":"success","callback_vars":{"langfuse_public_key":"pk-1","langfuse_secret_key":"os.environ/SK_1","langfuse_host":"http://lf:3000"}},{"callback_name":"gcs_bucket","callback_vars":{}}]}"#;
        assert_eq!(
            parse(key),
            vec![KeyLogging {
                host: "http://lf:3000".into(),
                public_key: "pk-1".into(),
                secret_key: "os.environ/SK_1".into(),
                on: Events::Success,
            }]
        );
        // One project for successes and for failures: one entry for both.
        let both = r#"{"logging":[{"callback_name":"langfuse","callback_type":"success","callback_vars":{"langfuse_public_key":"pk-1","langfuse_secret_key":"sk"}},{"callback_name":"langfuse","callback_type":"failure","callback_vars":{"langfuse_public_key":"pk-1","langfuse_secret_key":"sk"}}]}"#;
        let parsed = parse(both);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].on, Events::SuccessAndFailure);
        assert!(Events::Failure.takes(false) && !Events::Failure.takes(true));
        let team = r#"{"callback_settings":{"success_callback":["langfuse"],"callback_vars":{"langfuse_public_key":"pk-2","langfuse_secret_key":"sk-2"}}}"#;
        assert_eq!(parse(team)[0].host, "https://cloud.langfuse.com");
        assert!(parse("{}").is_empty());
        assert!(parse("not json").is_empty());
        assert!(!format!("{:?}", parse(team)).contains("sk-2"));
        let masked = mask_secrets(serde_json::from_str(team).unwrap()).to_string();
        assert!(
            !masked.contains("sk-2") && masked.contains("pk-2"),
            "{masked}"
        );
    }
}
