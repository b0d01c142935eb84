//! `[[logging.destinations]]` and `[logging.alerts]`: where request logs,
//! traces and alerts go. Parsed with the rest of `config.toml`; checked and
//! its secrets resolved by [`validate`], called from `Config::validate`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, RawSecret, Secret};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationKind {
    /// Langfuse over its OpenTelemetry endpoint
    /// (`{host}/api/public/otel/v1/traces`, Basic auth public:secret).
    Langfuse,
    /// Any OTLP/HTTP (protobuf) trace collector.
    Otel,
    /// HTTP POST of batched JSON log records.
    Webhook,
}

impl DestinationKind {
    pub fn label(self) -> &'static str {
        match self {
            DestinationKind::Langfuse => "langfuse",
            DestinationKind::Otel => "otel",
            DestinationKind::Webhook => "webhook",
        }
    }
}

/// One log destination. Which fields apply depends on `kind`; the others
/// are refused at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    pub kind: DestinationKind,
    /// Shown in metrics (`destination` label) and logs; default: the kind,
    /// numbered if several share it.
    pub name: Option<String>,
    /// Langfuse: e.g. `https://cloud.langfuse.com`.
    pub host: Option<String>,
    /// Langfuse: literal or `env:NAME`.
    pub public_key: Option<RawSecret>,
    /// Langfuse: literal or `env:NAME`.
    pub secret_key: Option<RawSecret>,
    /// otel: the full traces URL, e.g. `http://collector:4318/v1/traces`;
    /// webhook: the URL records are POSTed to.
    pub endpoint: Option<String>,
    /// Extra request headers; values literal or `env:NAME`.
    #[serde(default)]
    pub headers: BTreeMap<String, RawSecret>,
    /// webhook: sign each body with HMAC-SHA256 under this secret (literal
    /// or `env:NAME`), sent as `x-tollgate-signature: sha256=<hex>`.
    pub hmac_secret: Option<RawSecret>,
    /// Only requests of these teams (team ids) — LiteLLM's team-based
    /// logging. Empty: every team.
    #[serde(default)]
    pub teams: Vec<String>,
    /// Only requests of these keys (alias or key name). Empty: every key.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Never ship prompts or outputs to this destination.
    #[serde(default)]
    pub turn_off_message_logging: bool,
    /// Records per POST.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// A partial batch goes out after this long.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Records held while the destination is slow or down; beyond it new
    /// records are dropped (and counted).
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    /// Tries of one batch after the first, with exponential backoff and
    /// jitter; then the batch is dropped (and counted).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Per POST.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,

    /// Filled by `validate`.
    #[serde(skip)]
    pub resolved: Option<ResolvedDestination>,
}

fn default_batch_size() -> usize {
    100
}
fn default_flush_interval_ms() -> u64 {
    1000
}
fn default_queue_size() -> usize {
    10_000
}
fn default_max_retries() -> u32 {
    5
}
fn default_retry_backoff_ms() -> u64 {
    500
}
fn default_max_backoff_ms() -> u64 {
    30_000
}
fn default_timeout_ms() -> u64 {
    10_000
}

/// What a destination's sink needs, secrets resolved.
#[derive(Debug, Clone)]
pub struct ResolvedDestination {
    pub name: String,
    pub url: String,
    /// Static headers, authorization included. Values are secrets: never
    /// logged.
    pub headers: Vec<(String, Secret)>,
    pub hmac_secret: Option<Secret>,
    pub sink: SinkSettings,
}

#[derive(Debug, Clone, Copy)]
pub struct SinkSettings {
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub queue_size: usize,
    pub max_retries: u32,
    pub retry_backoff: Duration,
    pub max_backoff: Duration,
    pub timeout: Duration,
}

/// `[logging.alerts]`: a Slack-compatible incoming webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Literal or `env:NAME` (a Slack webhook URL is a secret).
    pub webhook_url: RawSecret,
    /// The same alert (same kind, same subject) is sent at most once per
    /// this many seconds.
    #[serde(default = "default_repeat_secs")]
    pub repeat_secs: u64,
    /// Alerts gathered into one message for at most this long.
    #[serde(default = "default_alert_flush_ms")]
    pub flush_interval_ms: u64,
    #[serde(skip)]
    pub resolved_url: Option<Secret>,
}

fn default_repeat_secs() -> u64 {
    300
}
fn default_alert_flush_ms() -> u64 {
    1000
}

fn secret(path: &str, raw: &RawSecret) -> Result<Secret, ConfigError> {
    crate::config::resolve_secret(path, &raw.0)
}

fn http_url(path: &str, url: &str) -> Result<(), ConfigError> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(ConfigError::at(path, "must be an http:// or https:// URL")),
    }
}

/// Checks every destination and resolves its secrets and URL.
pub fn validate(
    destinations: &mut [DestinationConfig],
    alerts: &mut Option<AlertsConfig>,
) -> Result<(), ConfigError> {
    let mut names: Vec<String> = Vec::new();
    for (i, d) in destinations.iter_mut().enumerate() {
        let path = format!("logging.destinations[{i}]");
        let at = |field: &str| format!("{path}.{field}");
        let refuse = |field: &str, set: bool| {
            if set {
                Err(ConfigError::at(
                    at(field),
                    format!("does not apply to kind = \"{}\"", d.kind.label()),
                ))
            } else {
                Ok(())
            }
        };
        let mut headers = Vec::new();
        for (k, v) in &d.headers {
            if actix_web::http::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                return Err(ConfigError::at(
                    at("headers"),
                    format!("`{k}` is not a header name"),
                ));
            }
            headers.push((k.clone(), secret(&at(&format!("headers.{k}")), v)?));
        }
        let url = match d.kind {
            DestinationKind::Langfuse => {
                refuse("endpoint", d.endpoint.is_some())?;
                refuse("hmac_secret", d.hmac_secret.is_some())?;
                let host = d.host.as_deref().unwrap_or("https://cloud.langfuse.com");
                http_url(&at("host"), host)?;
                let (Some(pk), Some(sk)) = (&d.public_key, &d.secret_key) else {
                    return Err(ConfigError::at(
                        path,
                        "kind = \"langfuse\" needs public_key and secret_key",
                    ));
                };
                let pk = secret(&at("public_key"), pk)?;
                let sk = secret(&at("secret_key"), sk)?;
                use base64::Engine as _;
                let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                    "{}:{}",
                    pk.expose(),
                    sk.expose()
                ));
                headers.push((
                    "authorization".into(),
                    Secret::new(format!("Basic {basic}")),
                ));
                format!("{}/api/public/otel/v1/traces", host.trim_end_matches('/'))
            }
            DestinationKind::Otel | DestinationKind::Webhook => {
                refuse("host", d.host.is_some())?;
                refuse("public_key", d.public_key.is_some())?;
                refuse("secret_key", d.secret_key.is_some())?;
                if d.kind == DestinationKind::Otel {
                    refuse("hmac_secret", d.hmac_secret.is_some())?;
                }
                let Some(endpoint) = &d.endpoint else {
                    return Err(ConfigError::at(at("endpoint"), "is required"));
                };
                http_url(&at("endpoint"), endpoint)?;
                endpoint.clone()
            }
        };
        let hmac_secret = match &d.hmac_secret {
            Some(raw) => Some(secret(&at("hmac_secret"), raw)?),
            None => None,
        };
        if d.batch_size == 0 || d.batch_size > 10_000 {
            return Err(ConfigError::at(at("batch_size"), "must be 1 to 10000"));
        }
        if d.queue_size < d.batch_size || d.queue_size > 1_000_000 {
            return Err(ConfigError::at(
                at("queue_size"),
                "must be at least batch_size and at most 1000000",
            ));
        }
        if d.max_retries > 100 {
            return Err(ConfigError::at(at("max_retries"), "must be at most 100"));
        }
        for (field, v) in [
            ("flush_interval_ms", d.flush_interval_ms),
            ("retry_backoff_ms", d.retry_backoff_ms),
            ("max_backoff_ms", d.max_backoff_ms),
            ("timeout_ms", d.timeout_ms),
        ] {
            if v == 0 || v > crate::config::MAX_DURATION_SECS * 1000 {
                return Err(ConfigError::at(at(field), "must be 1 ms to 24 h"));
            }
        }
        let name = match &d.name {
            Some(n) if n.trim().is_empty() => {
                return Err(ConfigError::at(at("name"), "must not be empty"))
            }
            Some(n) => n.clone(),
            None => {
                let base = d.kind.label();
                let mut n = base.to_string();
                let mut k = 1;
                while names.contains(&n) {
                    k += 1;
                    n = format!("{base}-{k}");
                }
                n
            }
        };
        if names.contains(&name) {
            return Err(ConfigError::at(
                at("name"),
                format!("`{name}` is used twice"),
            ));
        }
        names.push(name.clone());
        d.resolved = Some(ResolvedDestination {
            name,
            url,
            headers,
            hmac_secret,
            sink: SinkSettings {
                batch_size: d.batch_size,
                flush_interval: Duration::from_millis(d.flush_interval_ms),
                queue_size: d.queue_size,
                max_retries: d.max_retries,
                retry_backoff: Duration::from_millis(d.retry_backoff_ms),
                max_backoff: Duration::from_millis(d.max_backoff_ms.max(d.retry_backoff_ms)),
                timeout: Duration::from_millis(d.timeout_ms),
            },
        });
    }
    if let Some(a) = alerts {
        let url = secret("logging.alerts.webhook_url", &a.webhook_url)?;
        http_url("logging.alerts.webhook_url", url.expose())?;
        if a.repeat_secs > crate::config::MAX_DURATION_SECS {
            return Err(ConfigError::at(
                "logging.alerts.repeat_secs",
                "must be at most 86400",
            ));
        }
        if a.flush_interval_ms == 0 || a.flush_interval_ms > 60_000 {
            return Err(ConfigError::at(
                "logging.alerts.flush_interval_ms",
                "must be 1 to 60000",
            ));
        }
        a.resolved_url = Some(url);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(extra: &str) -> Result<Config, String> {
        Config::from_toml(&format!("[logging]\n{extra}")).map_err(|e| e.to_string())
    }

    #[test]
    fn langfuse_gets_its_otel_url_and_basic_auth() {
        let c = load(
            "[[logging.destinations]]\nkind = \"langfuse\"\nhost = \"http://lf.local:3000/\"\npublic_key = \"pk-lf-1\"\nsecret_key = \"sk-lf-1\"\n",
        )
        .unwrap();
        let r = c.logging.destinations[0].resolved.as_ref().unwrap();
        assert_eq!(r.url, "http://lf.local:3000/api/public/otel/v1/traces");
        assert_eq!(r.name, "langfuse");
        let auth = r
            .headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap();
        // base64("pk-lf-1:sk-lf-1")
        assert_eq!(auth.1.expose(), "Basic cGstbGYtMTpzay1sZi0x");
    }

    #[test]
    fn fields_of_another_kind_and_missing_ones_are_refused() {
        let e = load("[[logging.destinations]]\nkind = \"otel\"\n").unwrap_err();
        assert!(e.contains("logging.destinations[0].endpoint"), "{e}");
        let e = load(
            "[[logging.destinations]]\nkind = \"otel\"\nendpoint = \"http://c:4318/v1/traces\"\nhmac_secret = \"x\"\n",
        )
        .unwrap_err();
        assert!(e.contains("hmac_secret"), "{e}");
        let e = load("[[logging.destinations]]\nkind = \"langfuse\"\npublic_key = \"a\"\n")
            .unwrap_err();
        assert!(e.contains("secret_key"), "{e}");
        let e = load("[[logging.destinations]]\nkind = \"webhook\"\nendpoint = \"ftp://x\"\n")
            .unwrap_err();
        assert!(e.contains("http"), "{e}");
    }

    #[test]
    fn unset_env_secret_is_named_and_never_shown() {
        let e = load(
            "[[logging.destinations]]\nkind = \"langfuse\"\npublic_key = \"env:TOLLGATE_TEST_NO_SUCH_PK\"\nsecret_key = \"sk-very-secret\"\n",
        )
        .unwrap_err();
        assert!(e.contains("TOLLGATE_TEST_NO_SUCH_PK"), "{e}");
        let c = load(
            "[[logging.destinations]]\nkind = \"langfuse\"\npublic_key = \"pk\"\nsecret_key = \"sk-very-secret\"\n",
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("sk-very-secret"));
    }

    #[test]
    fn names_default_to_the_kind_and_must_be_unique() {
        let c = load(
            "[[logging.destinations]]\nkind = \"webhook\"\nendpoint = \"http://a/\"\n[[logging.destinations]]\nkind = \"webhook\"\nendpoint = \"http://b/\"\n",
        )
        .unwrap();
        let names: Vec<_> = c
            .logging
            .destinations
            .iter()
            .map(|d| d.resolved.as_ref().unwrap().name.clone())
            .collect();
        assert_eq!(names, ["webhook", "webhook-2"]);
        let e = load(
            "[[logging.destinations]]\nkind = \"webhook\"\nname = \"x\"\nendpoint = \"http://a/\"\n[[logging.destinations]]\nkind = \"otel\"\nname = \"x\"\nendpoint = \"http://b/\"\n",
        )
        .unwrap_err();
        assert!(e.contains("used twice"), "{e}");
    }
}
