//! `config.toml`: schema, defaults and validation.
//!
//! Parsing is two steps: serde (with `deny_unknown_fields`, through
//! `serde_path_to_error` so a typo is reported with its full path), then
//! [`Config::validate`], which resolves `env:NAME` secrets and checks values,
//! again naming the path (`models.gpt-4o.deployments[1].api_base`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::routing::{AllowedFailsPolicy, RetryPolicy, Strategy};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config is not valid TOML: {0}")]
    Syntax(String),
    #[error("config error at `{path}`: {message}")]
    Invalid { path: String, message: String },
}

impl ConfigError {
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A secret string. Its `Debug`/`Display` never show the value, so it cannot
/// leak through logs or error messages by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A secret as written in the file (a literal or `env:NAME`): never shown
/// by `Debug`, so a printed config cannot leak it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct RawSecret(pub String);

impl fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawSecret(***)")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    /// Literal or `env:NAME`. Required for the management API; inference
    /// accepts it too.
    pub master_key: Option<String>,
    /// Keys defined in the file (the database-backed keys come on top).
    pub keys: Vec<StaticKey>,
    /// `sqlite://path`, `postgres://…`, or `env:NAME`. Unset: no database
    /// (config keys only; the management API answers 503).
    pub database_url: Option<String>,
    /// `redis://…` or `env:NAME`: shared key cache and cross-replica
    /// invalidation. Unset: one replica, exact on its own.
    pub redis_url: Option<String>,
    pub storage: StorageConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub router: RouterConfig,
    pub logging: LoggingConfig,
    pub spend: SpendConfig,
    /// Parameters a provider does not take are dropped instead of refused
    /// (LiteLLM's `drop_params`); a deployment's own setting wins.
    pub drop_params: bool,
    /// The built-in fake provider, started in-process when a deployment uses
    /// `provider = "mock"`.
    pub mock_upstream: MockUpstreamConfig,
    /// Model groups by public name.
    pub models: BTreeMap<String, ModelGroup>,

    /// Test-only: honour `x-tollgate-crash: <actor>` on inference requests
    /// (the named actor panics). Settable from code only, never from a file.
    #[serde(skip)]
    pub fault_injection: bool,

    /// Resolved secrets, filled by `validate`.
    #[serde(skip)]
    pub resolved_master_key: Option<Secret>,
    #[serde(skip)]
    pub resolved_database_url: Option<Secret>,
    #[serde(skip)]
    pub resolved_redis_url: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// How long SIGTERM waits for in-flight requests and streams.
    pub shutdown_grace_secs: u64,
    pub keep_alive_secs: u64,
    /// Longest a client may take to send its whole request body (408 after).
    pub body_read_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "0.0.0.0".into(),
            port: 4000,
            workers: 0,
            max_body_bytes: 10 * 1024 * 1024,
            shutdown_grace_secs: 30,
            keep_alive_secs: 75,
            body_read_timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub db_pool_size: u32,
    /// Longest any database operation may take (pool wait included) before
    /// it counts as a failure and the database is treated as down.
    pub db_timeout_ms: u64,
    /// The same for Redis: it answers in well under a millisecond when
    /// healthy, so waiting long only taxes requests during an outage.
    pub redis_timeout_ms: u64,
    /// Prefix for every Redis key and channel, so deployments (and tests)
    /// can share one Redis.
    pub redis_prefix: String,
    /// Encrypts provider keys of models added through the API (literal or
    /// `env:NAME`; LiteLLM's `LITELLM_SALT_KEY`); unset: the master key.
    /// Changing it makes those models unreadable until re-added.
    pub salt_key: Option<RawSecret>,
    #[serde(skip)]
    pub resolved_salt_key: Option<Secret>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            db_pool_size: 10,
            db_timeout_ms: 1_000,
            redis_timeout_ms: 100,
            redis_prefix: "tollgate".into(),
            salt_key: None,
            resolved_salt_key: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// How long a looked-up key is trusted without asking the database.
    /// Changes made through the API invalidate at once regardless.
    pub cache_ttl_secs: u64,
    /// Keys cached per HTTP worker.
    pub cache_max_entries: usize,
    /// Database lookups of uncached keys in flight per HTTP worker; more
    /// wait in a queue. Keeps a flood of unknown keys from taking every
    /// database connection.
    pub max_concurrent_lookups: usize,
    /// Lookups allowed to wait per worker; beyond it, 503 at once.
    pub max_queued_lookups: usize,
    /// Teams any internal user may join themself (`/team/available`,
    /// then `/team/member_add` with their own id): LiteLLM's
    /// `default_internal_user_params.available_teams`.
    pub available_teams: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            cache_ttl_secs: 60,
            cache_max_entries: 100_000,
            max_concurrent_lookups: 4,
            max_queued_lookups: 1_024,
            available_teams: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticKey {
    /// Literal or `env:NAME`.
    pub key: String,
    pub alias: Option<String>,
    /// Model groups this key may call; empty means all. `*` and `prefix/*`
    /// wildcards are allowed.
    #[serde(default)]
    pub models: Vec<String>,
    pub rpm_limit: Option<u32>,
    #[serde(skip)]
    pub resolved: Option<Secret>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Requests per minute across all callers (and all replicas).
    pub global_rpm: Option<u32>,
    /// Tokens per minute across all callers.
    pub global_tpm: Option<u64>,
    /// Requests in flight across all callers.
    pub global_max_parallel_requests: Option<u64>,
    /// Requests per minute for a key that sets no limit of its own.
    pub default_key_rpm: Option<u32>,
    /// Tokens per minute for a key that sets no limit of its own.
    pub default_key_tpm: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// Extra attempts after the first failed one.
    pub num_retries: u32,
    /// Base of the exponential backoff between attempts.
    pub retry_backoff_ms: u64,
    /// Longest `retry-after` the gateway will wait out itself before retrying.
    pub max_retry_wait_ms: u64,
    /// Consecutive failures that put a deployment into cooldown.
    pub allowed_fails: u32,
    pub cooldown_secs: u64,
    /// Default upstream timeout per attempt (time to the whole body, or
    /// to a stream's first event).
    pub timeout_secs: u64,
    /// Overall deadline per request across every attempt and the waits
    /// between them. A request's own `timeout` can only shorten it.
    pub request_timeout_secs: u64,
    /// Longest silence allowed between two chunks of a stream.
    pub stream_idle_timeout_secs: u64,
    /// LiteLLM's fallbacks: model group → groups tried in order once the
    /// group's own attempts have failed (rate limits, 5xx, timeouts,
    /// unreachable or misconfigured upstreams).
    pub fallbacks: BTreeMap<String, Vec<String>>,
    /// Used instead when the prompt did not fit the model's context window.
    pub context_window_fallbacks: BTreeMap<String, Vec<String>>,
    /// Used instead when the provider refused the content.
    pub content_policy_fallbacks: BTreeMap<String, Vec<String>>,
    /// For every group without `fallbacks` of its own.
    pub default_fallbacks: Vec<String>,
    /// How a deployment is chosen (a group may set its own).
    pub routing_strategy: Strategy,
    /// Retries per error class (LiteLLM's `retry_policy`).
    pub retry_policy: RetryPolicy,
    /// Failures per error class before a deployment cools down.
    pub allowed_fails_policy: AllowedFailsPolicy,
    /// Never take a deployment out of rotation for failed requests
    /// (LiteLLM's `disable_cooldowns`): failures are still counted and
    /// retried, but a group's only deployment is never refused for
    /// `cooldown_secs` because of a burst of transient errors. Failed
    /// background health checks still take a deployment out.
    pub disable_cooldowns: bool,
    /// Count a large prompt's tokens and skip deployments whose context
    /// window it does not fit (LiteLLM's pre-call checks). Costs nothing
    /// for prompts smaller in bytes than the smallest window.
    pub enable_pre_call_checks: bool,
    /// Route by deployment `tags` (LiteLLM's tag routing).
    pub enable_tag_filtering: bool,
    /// Probe every deployment on an interval; a failed probe takes it out
    /// of rotation until a probe succeeds, and `/health` answers from the
    /// latest round instead of probing.
    pub background_health_checks: bool,
    pub health_check_interval_secs: u64,
    /// Longest a probe may take.
    pub health_check_timeout_secs: u64,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            num_retries: 2,
            retry_backoff_ms: 50,
            max_retry_wait_ms: 5_000,
            allowed_fails: 3,
            cooldown_secs: 30,
            timeout_secs: 600,
            request_timeout_secs: 600,
            stream_idle_timeout_secs: 300,
            fallbacks: BTreeMap::new(),
            context_window_fallbacks: BTreeMap::new(),
            content_policy_fallbacks: BTreeMap::new(),
            default_fallbacks: Vec::new(),
            routing_strategy: Strategy::default(),
            retry_policy: RetryPolicy::default(),
            allowed_fails_policy: AllowedFailsPolicy::default(),
            disable_cooldowns: false,
            enable_pre_call_checks: true,
            enable_tag_filtering: true,
            background_health_checks: false,
            health_check_interval_secs: 300,
            health_check_timeout_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// tracing filter, e.g. "info" or "tollgate=debug,actix_web=info".
    pub level: String,
    /// Where the one-line-per-request JSON log goes: "stdout", "off", or a file path.
    pub request_log: String,
    /// Never ship prompts or outputs to any destination (LiteLLM's
    /// `turn_off_message_logging`).
    pub turn_off_message_logging: bool,
    /// Also expose LiteLLM's `litellm_*` metric families on `/metrics`.
    pub litellm_metrics: bool,
    /// A tracing span per request, so every log line names its request id.
    pub request_spans: bool,
    /// Honour keys' and teams' `metadata.logging` (their own Langfuse
    /// projects, LiteLLM's key/team-based logging).
    pub key_logging: bool,
    /// Langfuse, OpenTelemetry and webhook destinations (README: Logging).
    pub destinations: Vec<crate::observe::config::DestinationConfig>,
    /// Alerts to a Slack-compatible webhook.
    pub alerts: Option<crate::observe::config::AlertsConfig>,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".into(),
            request_log: "stdout".into(),
            turn_off_message_logging: false,
            litellm_metrics: false,
            request_spans: true,
            key_logging: false,
            destinations: Vec::new(),
            alerts: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpendConfig {
    /// Directory of the spend spool (the local write-ahead log of
    /// settlements). Default `tollgate-spool` in the working directory
    /// when a database is configured. One per gateway process.
    pub spool_dir: Option<String>,
    /// Spool size at which new requests are refused (503) rather than
    /// served without a durable record of their cost; a warning is logged
    /// at 80 %.
    pub spool_max_bytes: u64,
    /// How often settled spend is written to the database (one
    /// transaction per write). Each write adds to every key, user, team
    /// and key×model its rows touch, whatever their number: a longer
    /// interval makes those increments rarer per request, and spend shows
    /// in `/key/info` up to this much later.
    pub flush_interval_ms: u64,
    /// Most settlements per transaction (a backlog after an outage is
    /// written in pieces of this size).
    pub max_batch: usize,
    /// HTTP status of a budget refusal: 400 (LiteLLM's long-standing
    /// answer) or 429 (its newer one). The error type is `budget_exceeded`.
    pub budget_exceeded_status: u16,
    /// Completion tokens assumed when a request sets no `max_tokens`, to
    /// reserve its cost against a budget before it runs.
    pub default_max_tokens: u64,
    /// How often budgets whose period ended (`budget_duration`) are reset.
    /// Every replica checks; each period is reset exactly once.
    pub budget_reset_interval_secs: u64,
}

impl Default for SpendConfig {
    fn default() -> Self {
        SpendConfig {
            spool_dir: None,
            spool_max_bytes: 1 << 30,
            flush_interval_ms: 1_000,
            max_batch: 50_000,
            budget_exceeded_status: 400,
            default_max_tokens: 1_024,
            budget_reset_interval_secs: 10,
        }
    }
}

impl SpendConfig {
    pub fn spool_path(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(self.spool_dir.as_deref().unwrap_or("tollgate-spool"))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockUpstreamConfig {
    /// Port for the built-in mock; 0 picks a free one.
    pub port: u16,
    pub latency_ms: u64,
    pub chunks: Option<usize>,
    pub chunk_interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelGroup {
    pub deployments: Vec<Deployment>,
    /// Overrides `router.routing_strategy` for this group.
    pub routing_strategy: Option<Strategy>,
    /// Overrides `router.retry_policy` for this group (LiteLLM's
    /// `model_group_retry_policy`).
    pub retry_policy: Option<RetryPolicy>,
}

pub use crate::providers::catalog::Provider;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// Stable id for headers, logs and metrics; defaults to `<group>-<index>`.
    pub id: Option<String>,
    /// Omitted: taken from a LiteLLM-style model string (`anthropic/…`).
    /// Read it through `provider()` once validated.
    pub provider: Option<Provider>,
    /// The model name the upstream knows (for Azure, the deployment name;
    /// for Bedrock, the model or inference-profile id).
    pub model: String,
    /// Base URL including the version path, e.g. `https://api.openai.com/v1`.
    pub api_base: Option<String>,
    /// Literal or `env:NAME`.
    pub api_key: Option<RawSecret>,
    /// Share of traffic under simple-shuffle (and the draw of
    /// power-of-two-choices); unset: `rpm`, else `tpm`, else 1.
    pub weight: Option<f64>,
    /// Priority tier: the lowest `order` among the healthy deployments
    /// takes the traffic; unset comes after every set one.
    pub order: Option<u32>,
    /// Tags requests can select this deployment by (LiteLLM's tag
    /// routing; `default` takes untagged requests).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Context window in tokens; unset: the price map's, if it knows the
    /// model.
    pub max_input_tokens: Option<u64>,
    /// Access groups this deployment's model group belongs to: a key or
    /// team whose `models` names one may call it (LiteLLM's
    /// `model_info.access_groups`).
    #[serde(default)]
    pub access_groups: Vec<String>,
    /// What the deployment serves, for health probes: `chat` (default),
    /// `completion` or `embedding` (LiteLLM's `model_info.mode`).
    pub mode: Option<String>,
    pub timeout_secs: Option<u64>,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    /// USD per token; unset: the price map (`data/model_prices.json`).
    pub input_cost_per_token: Option<f64>,
    pub output_cost_per_token: Option<f64>,
    /// USD per cached prompt token read / written (Anthropic prompt
    /// caching, OpenAI cached input); unset: the price map, else the
    /// input price.
    pub cache_read_input_token_cost: Option<f64>,
    pub cache_creation_input_token_cost: Option<f64>,
    /// Headers added to every upstream request.
    #[serde(default)]
    pub extra_headers: BTreeMap<String, String>,
    /// Parameters the provider does not take are dropped instead of
    /// refused with a 400; unset: the top-level `drop_params`.
    pub drop_params: Option<bool>,
    /// Azure: the `api-version` query parameter.
    pub api_version: Option<String>,
    /// Azure: a Microsoft Entra ID bearer token (literal or `env:NAME`)
    /// instead of `api_key`.
    pub azure_ad_token: Option<RawSecret>,
    /// Bedrock: region and credentials (literal or `env:NAME`); unset:
    /// `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
    pub aws_region: Option<String>,
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<RawSecret>,
    pub aws_session_token: Option<RawSecret>,

    /// Models added at run time: the stored revision (0 for the config's).
    #[serde(skip)]
    pub revision: i64,
    #[serde(skip)]
    pub resolved_api_key: Option<Secret>,
    #[serde(skip)]
    pub resolved_aws: Option<AwsCredentials>,
}

/// Bedrock's signing credentials, resolved at start-up.
#[derive(Debug, Clone)]
pub struct AwsCredentials {
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl Deployment {
    /// The provider, explicit or from the model string; set by validation.
    pub fn provider(&self) -> Provider {
        self.provider.unwrap_or(Provider::OpenaiCompatible)
    }

    pub fn timeout(&self, router: &RouterConfig) -> Duration {
        Duration::from_secs(self.timeout_secs.unwrap_or(router.timeout_secs))
    }
}

/// Resolves `env:NAME` to the variable's value; anything else is a literal.
pub(crate) fn resolve_secret(path: &str, raw: &str) -> Result<Secret, ConfigError> {
    match raw.strip_prefix("env:") {
        Some(name) => match std::env::var(name) {
            Ok(v) if !v.is_empty() => Ok(Secret(v)),
            Ok(_) => Err(ConfigError::at(
                path,
                format!("environment variable {name} is empty"),
            )),
            Err(_) => Err(ConfigError::at(
                path,
                format!("environment variable {name} is not set"),
            )),
        },
        None if raw.is_empty() => Err(ConfigError::at(path, "must not be empty")),
        None => Ok(Secret(raw.to_string())),
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text)
    }

    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax(e.to_string()))?;
        let mut config: Config = serde_path_to_error::deserialize(table).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::at(path, e.inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values and resolves secrets. Called by `from_toml`; call it
    /// again after changing a config in code.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        self.resolved_master_key = match &self.master_key {
            Some(raw) => {
                let secret = resolve_secret("master_key", raw)?;
                if secret.expose().len() < 8 {
                    return Err(ConfigError::at(
                        "master_key",
                        "must be at least 8 characters",
                    ));
                }
                Some(secret)
            }
            None => None,
        };
        self.storage.resolved_salt_key = match &self.storage.salt_key {
            Some(raw) => Some(resolve_secret("storage.salt_key", &raw.0)?),
            None => None,
        };
        self.resolved_database_url = match &self.database_url {
            Some(raw) => {
                let url = resolve_secret("database_url", raw)?;
                let u = url.expose();
                let is_pg = u.starts_with("postgres://") || u.starts_with("postgresql://");
                if !is_pg && (u.contains("://") && !u.starts_with("sqlite://")) {
                    return Err(ConfigError::at(
                        "database_url",
                        "must be postgres://…, sqlite://path or a file path",
                    ));
                }
                Some(url)
            }
            None => None,
        };
        self.resolved_redis_url = match &self.redis_url {
            Some(raw) => {
                let url = resolve_secret("redis_url", raw)?;
                if !(url.expose().starts_with("redis://") || url.expose().starts_with("rediss://"))
                {
                    return Err(ConfigError::at(
                        "redis_url",
                        "must start with redis:// or rediss://",
                    ));
                }
                Some(url)
            }
            None => None,
        };
        crate::observe::config::validate(&mut self.logging.destinations, &mut self.logging.alerts)?;
        if self.storage.db_pool_size == 0 {
            return Err(ConfigError::at(
                "storage.db_pool_size",
                "must be greater than 0",
            ));
        }
        for (i, key) in self.keys.iter_mut().enumerate() {
            let path = format!("keys[{i}].key");
            let secret = resolve_secret(&path, &key.key)?;
            if secret.expose().len() < 8 {
                return Err(ConfigError::at(path, "must be at least 8 characters"));
            }
            key.resolved = Some(secret);
            if key.rpm_limit == Some(0) {
                return Err(ConfigError::at(
                    format!("keys[{i}].rpm_limit"),
                    "must be greater than 0",
                ));
            }
        }
        let l = &self.limits;
        for (path, limit) in [
            ("limits.global_rpm", l.global_rpm.map(u64::from)),
            ("limits.global_tpm", l.global_tpm),
            (
                "limits.global_max_parallel_requests",
                l.global_max_parallel_requests,
            ),
            ("limits.default_key_rpm", l.default_key_rpm.map(u64::from)),
            ("limits.default_key_tpm", l.default_key_tpm),
        ] {
            positive_limit(path, limit)?;
        }
        if self.router.allowed_fails == 0 {
            return Err(ConfigError::at(
                "router.allowed_fails",
                "must be greater than 0",
            ));
        }
        self.check_bounds()?;
        let mut ids = std::collections::HashSet::new();
        for (name, group) in self.models.iter_mut() {
            if name.is_empty() {
                return Err(ConfigError::at("models", "a model name must not be empty"));
            }
            if group.deployments.is_empty() {
                return Err(ConfigError::at(
                    format!("models.{name}.deployments"),
                    "needs at least one deployment",
                ));
            }
            for (i, d) in group.deployments.iter_mut().enumerate() {
                let path = format!("models.{name}.deployments[{i}]");
                validate_deployment(&path, d)?;
                let id = d.id.get_or_insert_with(|| format!("{name}-{i}")).clone();
                if !ids.insert(id.clone()) {
                    return Err(ConfigError::at(
                        format!("{path}.id"),
                        format!("duplicate deployment id `{id}`"),
                    ));
                }
            }
        }
        self.check_fallbacks()
    }

    /// Every group a fallback names, on either side, must exist.
    fn check_fallbacks(&self) -> Result<(), ConfigError> {
        let r = &self.router;
        let known = |path: String, name: &str| {
            if self.models.contains_key(name) {
                Ok(())
            } else {
                Err(ConfigError::at(path, format!("no model group `{name}`")))
            }
        };
        for (field, map) in [
            ("fallbacks", &r.fallbacks),
            ("context_window_fallbacks", &r.context_window_fallbacks),
            ("content_policy_fallbacks", &r.content_policy_fallbacks),
        ] {
            for (group, targets) in map {
                known(format!("router.{field}.{group}"), group)?;
                for (i, t) in targets.iter().enumerate() {
                    known(format!("router.{field}.{group}[{i}]"), t)?;
                }
            }
        }
        for (i, t) in r.default_fallbacks.iter().enumerate() {
            known(format!("router.default_fallbacks[{i}]"), t)?;
        }
        Ok(())
    }
}

/// The longest any configured duration may be: a day. Durations are added
/// to `Instant`s and multiplied by attempts; an absurd value would overflow
/// them at run time instead of failing here, at start-up.
pub const MAX_DURATION_SECS: u64 = 86_400;

fn in_range(path: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::at(
            path,
            format!("must be between {min} and {max} (got {value})"),
        ))
    }
}

impl Config {
    /// Every duration and count that feeds timers or arithmetic, bounded.
    fn check_bounds(&self) -> Result<(), ConfigError> {
        let day = MAX_DURATION_SECS;
        if !matches!(self.spend.budget_exceeded_status, 400 | 429) {
            return Err(ConfigError::at(
                "spend.budget_exceeded_status",
                "must be 400 or 429",
            ));
        }
        let checks: [(&str, u64, u64, u64); 26] = [
            (
                "router.health_check_interval_secs",
                self.router.health_check_interval_secs,
                1,
                day,
            ),
            (
                "router.health_check_timeout_secs",
                self.router.health_check_timeout_secs,
                1,
                600,
            ),
            (
                "spend.budget_reset_interval_secs",
                self.spend.budget_reset_interval_secs,
                1,
                3_600,
            ),
            (
                "spend.spool_max_bytes",
                self.spend.spool_max_bytes,
                1 << 20,
                1 << 40,
            ),
            (
                "spend.flush_interval_ms",
                self.spend.flush_interval_ms,
                10,
                60_000,
            ),
            ("spend.max_batch", self.spend.max_batch as u64, 1, 100_000),
            (
                "spend.default_max_tokens",
                self.spend.default_max_tokens,
                1,
                10_000_000,
            ),
            (
                "server.shutdown_grace_secs",
                self.server.shutdown_grace_secs,
                0,
                3_600,
            ),
            (
                "server.keep_alive_secs",
                self.server.keep_alive_secs,
                0,
                3_600,
            ),
            ("server.workers", self.server.workers as u64, 0, 1_024),
            (
                "server.max_body_bytes",
                self.server.max_body_bytes as u64,
                1_024,
                1 << 30,
            ),
            ("auth.cache_ttl_secs", self.auth.cache_ttl_secs, 1, day),
            (
                "auth.max_concurrent_lookups",
                self.auth.max_concurrent_lookups as u64,
                1,
                1_024,
            ),
            (
                "auth.max_queued_lookups",
                self.auth.max_queued_lookups as u64,
                0,
                1_000_000,
            ),
            (
                "storage.db_timeout_ms",
                self.storage.db_timeout_ms,
                10,
                60_000,
            ),
            (
                "storage.redis_timeout_ms",
                self.storage.redis_timeout_ms,
                5,
                10_000,
            ),
            (
                "router.num_retries",
                u64::from(self.router.num_retries),
                0,
                20,
            ),
            (
                "router.retry_backoff_ms",
                self.router.retry_backoff_ms,
                0,
                60_000,
            ),
            (
                "router.max_retry_wait_ms",
                self.router.max_retry_wait_ms,
                0,
                3_600_000,
            ),
            ("router.cooldown_secs", self.router.cooldown_secs, 1, day),
            ("router.timeout_secs", self.router.timeout_secs, 1, day),
            (
                "router.request_timeout_secs",
                self.router.request_timeout_secs,
                1,
                day,
            ),
            (
                "server.body_read_timeout_secs",
                self.server.body_read_timeout_secs,
                1,
                3_600,
            ),
            (
                "router.stream_idle_timeout_secs",
                self.router.stream_idle_timeout_secs,
                1,
                day,
            ),
            (
                "mock_upstream.latency_ms",
                self.mock_upstream.latency_ms,
                0,
                3_600_000,
            ),
            (
                "mock_upstream.chunk_interval_ms",
                self.mock_upstream.chunk_interval_ms,
                0,
                3_600_000,
            ),
        ];
        for (path, value, min, max) in checks {
            in_range(path, value, min, max)?;
        }
        Ok(())
    }
}

/// A limit of 0 would refuse every request: a mistake, said at start-up.
fn positive_limit(path: &str, limit: Option<u64>) -> Result<(), ConfigError> {
    if limit == Some(0) {
        return Err(ConfigError::at(path, "must be greater than 0"));
    }
    Ok(())
}

pub(crate) fn validate_deployment(path: &str, d: &mut Deployment) -> Result<(), ConfigError> {
    if d.model.trim().is_empty() {
        return Err(ConfigError::at(
            format!("{path}.model"),
            "must not be empty",
        ));
    }
    if d.weight.is_some_and(|w| !(w.is_finite() && w > 0.0)) {
        return Err(ConfigError::at(
            format!("{path}.weight"),
            "must be a positive number",
        ));
    }
    for (field, v) in [
        ("input_cost_per_token", d.input_cost_per_token),
        ("output_cost_per_token", d.output_cost_per_token),
    ] {
        let Some(v) = v else { continue };
        if !(v.is_finite() && v >= 0.0) {
            return Err(ConfigError::at(
                format!("{path}.{field}"),
                "must be a non-negative number",
            ));
        }
    }
    if let Some(t) = d.timeout_secs {
        in_range(&format!("{path}.timeout_secs"), t, 1, MAX_DURATION_SECS)?;
    }
    if let Some(m) = &d.mode {
        if !matches!(m.as_str(), "chat" | "completion" | "embedding") {
            return Err(ConfigError::at(
                format!("{path}.mode"),
                "must be chat, completion or embedding",
            ));
        }
    }
    positive_limit(&format!("{path}.rpm"), d.rpm.map(u64::from))?;
    positive_limit(&format!("{path}.tpm"), d.tpm)?;
    resolve_provider(path, d)?;
    let provider = d.provider();
    for (field, v) in [
        ("cache_read_input_token_cost", d.cache_read_input_token_cost),
        (
            "cache_creation_input_token_cost",
            d.cache_creation_input_token_cost,
        ),
    ] {
        if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
            return Err(ConfigError::at(
                format!("{path}.{field}"),
                "must be a non-negative number",
            ));
        }
    }
    if provider == Provider::Bedrock {
        d.resolved_aws = Some(aws_credentials(path, d)?);
    }
    let base = match (&d.api_base, provider) {
        (Some(base), _) => Some(base.clone()),
        (None, Provider::Mock) => None,
        (None, Provider::Bedrock) => d
            .resolved_aws
            .as_ref()
            .map(|aws| format!("https://bedrock-runtime.{}.amazonaws.com", aws.region)),
        (None, p) => match p.default_api_base() {
            Some(base) => Some(base.to_string()),
            None => {
                return Err(ConfigError::at(
                    format!("{path}.api_base"),
                    format!("is required for provider `{}`", p.name()),
                ))
            }
        },
    };
    if let Some(base) = base {
        let parsed = url::Url::parse(&base).map_err(|e| {
            ConfigError::at(format!("{path}.api_base"), format!("not a valid URL: {e}"))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(ConfigError::at(
                format!("{path}.api_base"),
                "must be an http:// or https:// URL with a host",
            ));
        }
        d.api_base = Some(base.trim_end_matches('/').to_string());
    }
    d.resolved_api_key = match (&d.api_key, &d.azure_ad_token) {
        (Some(raw), _) => Some(resolve_secret(&format!("{path}.api_key"), &raw.0)?),
        (None, Some(raw)) => Some(resolve_secret(&format!("{path}.azure_ad_token"), &raw.0)?),
        // LiteLLM's convention: the provider's usual variable.
        (None, None) => provider
            .key_env()
            .and_then(|name| std::env::var(name).ok())
            .filter(|v| !v.is_empty())
            .map(Secret),
    };
    if d.resolved_api_key.is_none() && !provider.key_optional() {
        tracing::warn!(deployment = %path, provider = provider.name(), "no api_key (nor its usual environment variable) for this deployment: calls go out without credentials");
    }
    if let Some(v) = &d.api_version {
        if v.is_empty()
            || !v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(ConfigError::at(
                format!("{path}.api_version"),
                "must look like 2024-10-21 or preview",
            ));
        }
    }
    for (name, value) in &d.extra_headers {
        let valid = actix_web::http::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
            && actix_web::http::header::HeaderValue::from_str(value).is_ok();
        if !valid {
            return Err(ConfigError::at(
                format!("{path}.extra_headers.{name}"),
                "not a valid HTTP header",
            ));
        }
    }
    Ok(())
}

/// Fills `provider` from the model string when omitted, and strips a
/// provider prefix from the model (`anthropic/claude-…` → `claude-…`).
fn resolve_provider(path: &str, d: &mut Deployment) -> Result<(), ConfigError> {
    let split =
        crate::providers::catalog::split_model(&d.model).map(|(p, rest)| (p, rest.to_string()));
    match (d.provider, split) {
        (None, Some((p, rest))) => {
            d.provider = Some(p);
            d.model = rest;
        }
        // `provider = "anthropic"`, `model = "anthropic/claude-…"`.
        (Some(p), Some((q, rest))) if p == q => d.model = rest,
        (Some(_), _) => {}
        (None, None) => {
            return Err(ConfigError::at(
                format!("{path}.provider"),
                "is required (or give the model as provider/model, e.g. anthropic/claude-3-5-haiku-latest)",
            ))
        }
    }
    Ok(())
}

fn optional_secret(path: &str, raw: Option<&str>) -> Result<Option<Secret>, ConfigError> {
    raw.map(|r| resolve_secret(path, r)).transpose()
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn aws_credentials(path: &str, d: &Deployment) -> Result<AwsCredentials, ConfigError> {
    let region = match optional_secret(&format!("{path}.aws_region"), d.aws_region.as_deref())? {
        Some(r) => r.expose().to_string(),
        None => env_nonempty("AWS_REGION")
            .or_else(|| env_nonempty("AWS_DEFAULT_REGION"))
            .ok_or_else(|| {
                ConfigError::at(
                    format!("{path}.aws_region"),
                    "is required for provider `bedrock` (or set AWS_REGION)",
                )
            })?,
    };
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(ConfigError::at(
            format!("{path}.aws_region"),
            "must be a region name such as us-east-1",
        ));
    }
    let id = optional_secret(
        &format!("{path}.aws_access_key_id"),
        d.aws_access_key_id.as_deref(),
    )?
    .map(|s| s.expose().to_string())
    .or_else(|| env_nonempty("AWS_ACCESS_KEY_ID"));
    let secret = optional_secret(
        &format!("{path}.aws_secret_access_key"),
        d.aws_secret_access_key.as_ref().map(|r| r.0.as_str()),
    )?
    .or_else(|| env_nonempty("AWS_SECRET_ACCESS_KEY").map(Secret));
    let (Some(access_key_id), Some(secret_access_key)) = (id, secret) else {
        return Err(ConfigError::at(
            format!("{path}.aws_access_key_id"),
            "provider `bedrock` needs aws_access_key_id and aws_secret_access_key (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
        ));
    };
    let session_token = optional_secret(
        &format!("{path}.aws_session_token"),
        d.aws_session_token.as_ref().map(|r| r.0.as_str()),
    )?
    .or_else(|| env_nonempty("AWS_SESSION_TOKEN").map(Secret));
    Ok(AwsCredentials {
        region,
        access_key_id,
        secret_access_key,
        session_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn unknown_key_is_reported_with_its_path() {
        let e = err(r#"
            [models.gpt-4o]
            [[models.gpt-4o.deployments]]
            provider = "openai"
            model = "gpt-4o"
            [[models.gpt-4o.deployments]]
            provider = "openai"
            model = "gpt-4o"
            api_bsae = "http://x"
        "#);
        assert!(e.contains("models.gpt-4o.deployments[1]"), "{e}");
        assert!(e.contains("api_bsae"), "{e}");
    }

    #[test]
    fn a_limit_of_zero_is_a_start_up_error_naming_it() {
        let e = err("[limits]\nglobal_tpm = 0\n");
        assert!(e.contains("limits.global_tpm"), "{e}");
        let e = err("[limits]\nglobal_max_parallel_requests = 0\n");
        assert!(e.contains("limits.global_max_parallel_requests"), "{e}");
        let e = err(r#"
            [[models.m.deployments]]
            provider = "openai"
            model = "x"
            tpm = 0
        "#);
        assert!(e.contains("models.m.deployments[0].tpm"), "{e}");
    }

    #[test]
    fn bad_url_names_the_field() {
        let e = err(r#"
            [[models.m.deployments]]
            provider = "openai_compatible"
            model = "x"
            api_base = "not a url"
        "#);
        assert!(e.contains("models.m.deployments[0].api_base"), "{e}");
    }

    #[test]
    fn missing_env_var_is_named() {
        let e = err(r#"
            [[models.m.deployments]]
            provider = "openai"
            model = "gpt-4o"
            api_key = "env:TOLLGATE_TEST_SURELY_UNSET_VAR"
        "#);
        assert!(e.contains("models.m.deployments[0].api_key"), "{e}");
        assert!(e.contains("TOLLGATE_TEST_SURELY_UNSET_VAR"), "{e}");
    }

    #[test]
    fn wrong_type_is_reported() {
        let e = err("[server]\nport = \"eighty\"\n");
        assert!(e.contains("server.port"), "{e}");
    }

    #[test]
    fn defaults_fill_in_and_ids_are_assigned() {
        let c = Config::from_toml(
            r#"
            master_key = "sk-master-123"
            [[models.m.deployments]]
            provider = "mock"
            model = "mock-gpt"
        "#,
        )
        .unwrap();
        assert_eq!(c.server.port, 4000);
        assert_eq!(c.models["m"].deployments[0].id.as_deref(), Some("m-0"));
        assert_eq!(
            c.resolved_master_key.as_ref().map(|s| s.expose()),
            Some("sk-master-123")
        );
    }

    #[test]
    fn durations_that_would_overflow_timers_are_refused_at_start_up() {
        for (text, path) in [
            ("[router]\ntimeout_secs = 9223372036854775807\n", "router.timeout_secs"),
            ("[router]\ncooldown_secs = 10000000000\n", "router.cooldown_secs"),
            ("[router]\nstream_idle_timeout_secs = 0\n", "router.stream_idle_timeout_secs"),
            ("[server]\nshutdown_grace_secs = 99999999\n", "server.shutdown_grace_secs"),
            ("[auth]\ncache_ttl_secs = 0\n", "auth.cache_ttl_secs"),
            (
                "[[models.m.deployments]]\nprovider = \"mock\"\nmodel = \"x\"\ntimeout_secs = 9999999999\n",
                "models.m.deployments[0].timeout_secs",
            ),
        ] {
            let e = err(text);
            assert!(e.contains(path), "{path}: {e}");
        }
    }

    #[test]
    fn a_deployment_names_its_provider_or_a_model_string_does() {
        let c = Config::from_toml(
            "[[models.c.deployments]]\nmodel = \"anthropic/claude-3-5-haiku-latest\"\napi_key = \"k\"\n\
             [[models.g.deployments]]\nprovider = \"groq\"\nmodel = \"groq/llama-3.1-8b-instant\"\n",
        )
        .unwrap();
        let c0 = &c.models["c"].deployments[0];
        assert_eq!(c0.provider(), Provider::Anthropic);
        assert_eq!(c0.model, "claude-3-5-haiku-latest");
        assert_eq!(c0.api_base.as_deref(), Some("https://api.anthropic.com"));
        let g0 = &c.models["g"].deployments[0];
        assert_eq!(g0.model, "llama-3.1-8b-instant");
        assert_eq!(
            g0.api_base.as_deref(),
            Some("https://api.groq.com/openai/v1")
        );
        // A slash that names no provider is part of the model's name.
        let e = err("[[models.m.deployments]]\nmodel = \"meta-llama/Llama-3-8B\"\n");
        assert!(e.contains("models.m.deployments[0].provider"), "{e}");
        let e = err("[[models.m.deployments]]\nprovider = \"anthropc\"\nmodel = \"x\"\n");
        assert!(e.contains("provider"), "{e}");
    }

    #[test]
    fn providers_that_need_an_address_or_credentials_say_so_at_start_up() {
        let e = err("[[models.m.deployments]]\nprovider = \"azure\"\nmodel = \"gpt\"\n");
        assert!(
            e.contains("models.m.deployments[0].api_base") && e.contains("azure"),
            "{e}"
        );
        let e = err(
            "[[models.m.deployments]]\nprovider = \"bedrock\"\nmodel = \"x\"\naws_region = \"us-east-1\"\naws_access_key_id = \"AKIDEXAMPLE\"\n",
        );
        assert!(e.contains("aws_secret_access_key"), "{e}");
        let e = err(
            "[[models.m.deployments]]\nprovider = \"bedrock\"\nmodel = \"x\"\naws_region = \"us east\"\naws_access_key_id = \"A\"\naws_secret_access_key = \"S\"\n",
        );
        assert!(e.contains("aws_region"), "{e}");
        let c = Config::from_toml(
            "[[models.m.deployments]]\nprovider = \"bedrock\"\nmodel = \"anthropic.claude-3-haiku-20240307-v1:0\"\naws_region = \"eu-west-3\"\naws_access_key_id = \"AKIDEXAMPLE\"\naws_secret_access_key = \"very-secret\"\n",
        )
        .unwrap();
        let d = &c.models["m"].deployments[0];
        assert_eq!(
            d.api_base.as_deref(),
            Some("https://bedrock-runtime.eu-west-3.amazonaws.com")
        );
        assert!(!format!("{d:?}").contains("very-secret"));
        let e = err(
            "[[models.m.deployments]]\nprovider = \"azure\"\nmodel = \"g\"\napi_base = \"https://x.openai.azure.com\"\napi_version = \"2024-06-01&x=1\"\n",
        );
        assert!(e.contains("api_version"), "{e}");
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let s = Secret::new("sk-very-secret");
        assert!(!format!("{s:?}").contains("very-secret"));
    }
}
