//! `litellm_settings`, `router_settings` and `general_settings`.

use serde_norway::Value;
use toml::Table;

use super::{entries, invalid, mapping, toml_int, Ignored, ImportError, Translator};
use super::{kind, param_reason, ENV_PREFIX, ERROR_CLASSES};
use crate::routing::Strategy;

impl Translator<'_> {
    // ---- litellm_settings --------------------------------------------------

    pub(super) fn litellm_settings(&mut self, v: &Value) -> Result<(), ImportError> {
        let Some(m) = mapping("litellm_settings", v)? else {
            return Ok(());
        };
        for (key, p, v) in entries("litellm_settings", m)? {
            if v.is_null() {
                continue;
            }
            match key.as_str() {
                "fallbacks"
                | "context_window_fallbacks"
                | "content_policy_fallbacks"
                | "default_fallbacks" => self.fallbacks(&key, &p, v)?,
                "num_retries" => {
                    let n = self.uint32(&p, v)?;
                    self.set(&["router", "num_retries"], toml::Value::Integer(n.into()));
                }
                "request_timeout" => {
                    let n = self.seconds(&p, v)?;
                    self.set(&["router", "timeout_secs"], toml_int(&p, n)?);
                }
                "allowed_fails" => self.allowed_fails(&p, v)?,
                "drop_params" => {
                    let b = self.boolean(&p, v)?;
                    self.set(&["drop_params"], b.into());
                }
                "turn_off_message_logging" => {
                    let b = self.boolean(&p, v)?;
                    self.set(&["logging", "turn_off_message_logging"], b.into());
                }
                "callbacks" | "success_callback" | "failure_callback" => self.callbacks(&p, v)?,
                "cache" | "cache_params" => self.ignore(&p, v, "tollgate has no response cache"),
                "default_internal_user_params" => self.internal_user_params(&p, v)?,
                _ => self.ignore(&p, v, "no tollgate equivalent"),
            }
        }
        Ok(())
    }

    /// Of the defaults for new internal users, the teams they may join.
    fn internal_user_params(&mut self, path: &str, v: &Value) -> Result<(), ImportError> {
        let Some(m) = mapping(path, v)? else {
            return Ok(());
        };
        for (key, p, v) in entries(path, m)? {
            match key.as_str() {
                "available_teams" => {
                    let teams = self.names(&p, v)?;
                    self.set(
                        &["auth", "available_teams"],
                        toml::Value::Array(teams.into_iter().map(toml::Value::String).collect()),
                    );
                }
                _ => self.ignore(&p, v, "new users get LiteLLM's default role and no limits"),
            }
        }
        Ok(())
    }

    fn allowed_fails(&mut self, p: &str, v: &Value) -> Result<(), ImportError> {
        let n = self.uint32(p, v)?;
        if n == 0 {
            self.note(format!(
                "{p}: 0 became 1 (tollgate cools a deployment down after at least one failure)"
            ));
        }
        self.set(
            &["router", "allowed_fails"],
            toml::Value::Integer(n.max(1).into()),
        );
        Ok(())
    }

    /// LiteLLM's logging callbacks: the ones tollgate has become
    /// `[[logging.destinations]]` (or `litellm_metrics`).
    fn callbacks(&mut self, path: &str, v: &Value) -> Result<(), ImportError> {
        let names = self.names(path, v)?;
        let items: Vec<(String, String)> = match v {
            Value::Sequence(_) => names
                .into_iter()
                .enumerate()
                .map(|(i, n)| (format!("{path}[{i}]"), n))
                .collect(),
            _ => names.into_iter().map(|n| (path.to_string(), n)).collect(),
        };
        for (p, name) in items {
            match name.as_str() {
                "langfuse" | "langfuse_otel" => self.langfuse(),
                "otel" | "opentelemetry" => self.otel(),
                "prometheus" => self.set(&["logging", "litellm_metrics"], true.into()),
                _ => self.ignored.push(Ignored {
                    path: p,
                    reason: format!(
                        "callback `{name}`: tollgate logs to Langfuse, OpenTelemetry and webhooks"
                    ),
                }),
            }
        }
        Ok(())
    }

    fn langfuse(&mut self) {
        if self.destinations.iter().any(|(k, _)| *k == "langfuse") {
            return;
        }
        let mut d = Table::new();
        d.insert("kind".into(), "langfuse".into());
        d.insert("public_key".into(), "env:LANGFUSE_PUBLIC_KEY".into());
        d.insert("secret_key".into(), "env:LANGFUSE_SECRET_KEY".into());
        let host = ["LANGFUSE_OTEL_HOST", "LANGFUSE_HOST"]
            .into_iter()
            .find_map(|n| (self.env)(n).map(|v| (n, v)));
        match host {
            Some((name, host)) => {
                self.note(format!(
                    "langfuse: host taken from {name} at translation ({host})"
                ));
                d.insert("host".into(), host.into());
            }
            None => self.note(
                "langfuse: host https://cloud.langfuse.com (LANGFUSE_HOST was not set at translation)"
                    .into(),
            ),
        }
        self.destinations.push(("langfuse", d));
    }

    fn otel(&mut self) {
        if self.destinations.iter().any(|(k, _)| *k == "otel") {
            return;
        }
        let mut d = Table::new();
        d.insert("kind".into(), "otel".into());
        let found = [
            "OTEL_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .into_iter()
        .find_map(|n| (self.env)(n).map(|v| (n, v)));
        let endpoint = match found {
            Some((name, url)) => {
                let url = url.trim_end_matches('/').to_string();
                let url = if name == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
                    || url.ends_with("/v1/traces")
                {
                    url
                } else {
                    format!("{url}/v1/traces")
                };
                self.note(format!(
                    "otel: endpoint taken from {name} at translation ({url})"
                ));
                url
            }
            None => {
                let url = "http://localhost:4318/v1/traces".to_string();
                self.note(format!(
                    "otel: no OTEL_ENDPOINT at translation, so the OTLP/HTTP default {url}: set logging.destinations endpoint to your collector"
                ));
                url
            }
        };
        d.insert("endpoint".into(), endpoint.into());
        if (self.env)("OTEL_HEADERS").is_some()
            || (self.env)("OTEL_EXPORTER_OTLP_HEADERS").is_some()
        {
            self.note(
                "otel: OTEL_HEADERS are not carried over: put them in the destination's headers, values as env:NAME"
                    .into(),
            );
        }
        self.destinations.push(("otel", d));
    }

    /// `fallbacks: [{gpt-4o: [gpt-4o-mini, claude]}]` (LiteLLM's list of
    /// one-entry mappings; a plain mapping is taken too). `*` is every
    /// group: tollgate's `default_fallbacks`.
    fn fallbacks(&mut self, field: &str, path: &str, v: &Value) -> Result<(), ImportError> {
        if field == "default_fallbacks" {
            let targets = self.fallback_targets(path, v)?;
            self.set(&["router", "default_fallbacks"], targets.into());
            return Ok(());
        }
        let mut pairs: Vec<(String, String, &Value)> = Vec::new();
        match v {
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    let ip = format!("{path}[{i}]");
                    let Some(m) = mapping(&ip, item)? else {
                        continue;
                    };
                    for (k, p, v) in entries(&ip, m)? {
                        pairs.push((k, p, v));
                    }
                }
            }
            Value::Mapping(m) => {
                for (k, p, v) in entries(path, m)? {
                    pairs.push((k, p, v));
                }
            }
            other => {
                return Err(invalid(
                    path,
                    format!(
                        "must be a list like [{{model: [fallback, …]}}], not {}",
                        kind(other)
                    ),
                ))
            }
        }
        let mut map = match self.get(&["router", field]) {
            Some(toml::Value::Table(t)) => t.clone(),
            _ => Table::new(),
        };
        for (group, p, v) in pairs {
            let targets = self.fallback_targets(&p, v)?;
            if group == "*" {
                if field == "fallbacks" {
                    self.set(&["router", "default_fallbacks"], targets.into());
                } else {
                    self.ignore(
                        &p,
                        v,
                        "a `*` entry is taken for fallbacks only (router.default_fallbacks)",
                    );
                }
                continue;
            }
            if !self.group_exists(&group) {
                self.ignore(
                    &p,
                    v,
                    &format!("no model group `{group}` in the translated model_list"),
                );
                continue;
            }
            map.insert(group, targets.into());
        }
        if !map.is_empty() {
            self.set(&["router", field], toml::Value::Table(map));
        }
        Ok(())
    }

    /// The fallback groups that exist; the others reported.
    fn fallback_targets(&mut self, path: &str, v: &Value) -> Result<Vec<String>, ImportError> {
        let names = self.names(path, v)?;
        let mut out = Vec::new();
        for (i, name) in names.into_iter().enumerate() {
            if self.group_exists(&name) {
                out.push(name);
            } else {
                let p = match v {
                    Value::Sequence(_) => format!("{path}[{i}]"),
                    _ => path.to_string(),
                };
                self.ignored.push(Ignored {
                    path: p,
                    reason: format!("no model group `{name}` in the translated model_list"),
                });
            }
        }
        Ok(out)
    }

    // ---- router_settings ---------------------------------------------------

    pub(super) fn router_settings(&mut self, v: &Value) -> Result<(), ImportError> {
        let Some(m) = mapping("router_settings", v)? else {
            return Ok(());
        };
        let mut redis: Vec<(String, String, &Value)> = Vec::new();
        for (key, p, v) in entries("router_settings", m)? {
            if v.is_null() {
                continue;
            }
            match key.as_str() {
                "routing_strategy" => {
                    let s = self.text(&p, v)?;
                    match toml::Value::String(s.clone()).try_into::<Strategy>() {
                        Ok(strategy) => self.set(
                            &["router", "routing_strategy"],
                            strategy.name().into(),
                        ),
                        Err(_) => self.ignore(
                            &p,
                            v,
                            &format!("routing strategy `{s}` is not one tollgate has (simple-shuffle is used)"),
                        ),
                    }
                }
                "num_retries" => {
                    let n = self.uint32(&p, v)?;
                    self.set(&["router", "num_retries"], toml::Value::Integer(n.into()));
                }
                "timeout" => {
                    let n = self.seconds(&p, v)?;
                    self.set(&["router", "timeout_secs"], toml_int(&p, n)?);
                }
                "cooldown_time" => {
                    let n = self.seconds(&p, v)?;
                    self.set(&["router", "cooldown_secs"], toml_int(&p, n)?);
                }
                "allowed_fails" => self.allowed_fails(&p, v)?,
                "enable_pre_call_checks" | "enable_tag_filtering" | "disable_cooldowns" => {
                    let b = self.boolean(&p, v)?;
                    self.set(&["router", &key], b.into());
                }
                "retry_policy" => {
                    if let Some(t) = self.policy(&p, v, "Retries")? {
                        self.set(&["router", "retry_policy"], toml::Value::Table(t));
                    }
                }
                "allowed_fails_policy" => {
                    if let Some(t) = self.policy(&p, v, "AllowedFails")? {
                        self.set(&["router", "allowed_fails_policy"], toml::Value::Table(t));
                    }
                }
                "model_group_retry_policy" => {
                    let Some(groups) = mapping(&p, v)? else {
                        continue;
                    };
                    for (group, gp, gv) in entries(&p, groups)? {
                        if !self.group_exists(&group) {
                            self.ignore(
                                &gp,
                                gv,
                                &format!("no model group `{group}` in the translated model_list"),
                            );
                            continue;
                        }
                        if let Some(t) = self.policy(&gp, gv, "Retries")? {
                            if let Some(entry) =
                                self.groups.iter_mut().find(|(n, _, _)| *n == group)
                            {
                                entry.2 = Some(t);
                            }
                        }
                    }
                }
                "fallbacks"
                | "context_window_fallbacks"
                | "content_policy_fallbacks"
                | "default_fallbacks" => self.fallbacks(&key, &p, v)?,
                "redis_host" | "redis_port" | "redis_password" | "redis_url" => {
                    redis.push((key, p, v))
                }
                "stream_timeout" => self.ignore(&p, v, param_reason("stream_timeout")),
                _ => self.ignore(&p, v, "no tollgate equivalent"),
            }
        }
        self.redis(&redis)
    }

    /// A LiteLLM `retry_policy` / `allowed_fails_policy` mapping in
    /// tollgate's class names. `suffix` is `Retries` or `AllowedFails`.
    fn policy(
        &mut self,
        path: &str,
        v: &Value,
        suffix: &str,
    ) -> Result<Option<Table>, ImportError> {
        let Some(m) = mapping(path, v)? else {
            return Ok(None);
        };
        let mut t = Table::new();
        for (key, p, v) in entries(path, m)? {
            if v.is_null() {
                continue;
            }
            let class = ERROR_CLASSES
                .iter()
                .find(|(litellm, ours)| key.strip_suffix(suffix) == Some(*litellm) || key == *ours);
            match class {
                Some((_, ours)) => {
                    let n = self.uint32(&p, v)?;
                    t.insert(ours.to_string(), toml::Value::Integer(n.into()));
                }
                None => self.ignore(&p, v, "not an error class tollgate counts"),
            }
        }
        Ok((!t.is_empty()).then_some(t))
    }

    /// `redis_url`, or host/port/password put together into one URL.
    fn redis(&mut self, items: &[(String, String, &Value)]) -> Result<(), ImportError> {
        if items.is_empty() {
            return Ok(());
        }
        let find = |k: &str| items.iter().find(|(key, _, _)| key == k);
        if let Some((_, p, v)) = find("redis_url") {
            let url = self.secret(p, v)?;
            self.set(&["redis_url"], url.into());
            for (key, p, v) in items {
                if key != "redis_url" {
                    self.ignore(p, v, "redis_url is set too, and wins");
                }
            }
            return Ok(());
        }
        let Some((_, host_path, host_value)) = find("redis_host") else {
            for (_, p, v) in items {
                self.ignore(p, v, "no redis_host to go with it");
            }
            return Ok(());
        };
        let env_password = find("redis_password")
            .is_some_and(|(_, _, v)| matches!(v, Value::String(s) if s.starts_with(ENV_PREFIX)));
        if env_password {
            for (_, p, v) in items {
                self.ignore(
                    p,
                    v,
                    "tollgate takes Redis as one URL and the password is an environment variable: set redis_url = \"env:REDIS_URL\" with REDIS_URL=redis://:PASSWORD@HOST:PORT",
                );
            }
            return Ok(());
        }
        let host = self.text(host_path, host_value)?;
        let port = match find("redis_port") {
            Some((_, p, v)) => self.uint(p, v)?,
            None => 6379,
        };
        let auth = match find("redis_password") {
            Some((_, p, v)) => {
                let password = self.text(p, v)?;
                let encoded = percent_encoding::utf8_percent_encode(
                    &password,
                    percent_encoding::NON_ALPHANUMERIC,
                );
                format!(":{encoded}@")
            }
            None => String::new(),
        };
        self.set(
            &["redis_url"],
            format!("redis://{auth}{host}:{port}").into(),
        );
        self.note(
            "router_settings.redis_*: tollgate uses Redis for its shared key cache, rate limits and budgets across replicas"
                .into(),
        );
        Ok(())
    }

    // ---- general_settings --------------------------------------------------

    pub(super) fn general_settings(&mut self, v: &Value) -> Result<(), ImportError> {
        let Some(m) = mapping("general_settings", v)? else {
            return Ok(());
        };
        for (key, p, v) in entries("general_settings", m)? {
            if v.is_null() {
                continue;
            }
            match key.as_str() {
                "master_key" | "database_url" => {
                    let s = self.secret(&p, v)?;
                    self.set(&[&key], s.into());
                }
                "database_connection_pool_limit" => {
                    let n = self.uint32(&p, v)?;
                    self.set(&["storage", "db_pool_size"], toml::Value::Integer(n.into()));
                }
                "background_health_checks" => {
                    let b = self.boolean(&p, v)?;
                    self.set(&["router", "background_health_checks"], b.into());
                }
                "health_check_interval" => {
                    let n = self.seconds(&p, v)?;
                    self.set(&["router", "health_check_interval_secs"], toml_int(&p, n)?);
                }
                "global_max_parallel_requests" => {
                    let n = self.uint(&p, v)?;
                    self.set(
                        &["limits", "global_max_parallel_requests"],
                        toml_int(&p, n)?,
                    );
                }
                "alerting" => {
                    let names = self.names(&p, v)?;
                    for (i, name) in names.iter().enumerate() {
                        if name == "slack" {
                            self.set(
                                &["logging", "alerts", "webhook_url"],
                                "env:SLACK_WEBHOOK_URL".into(),
                            );
                        } else {
                            let ip = match v {
                                Value::Sequence(_) => format!("{p}[{i}]"),
                                _ => p.clone(),
                            };
                            self.ignored.push(Ignored {
                                path: ip,
                                reason: format!(
                                    "alerting `{name}`: tollgate alerts to a Slack-compatible webhook"
                                ),
                            });
                        }
                    }
                }
                "store_model_in_db" => self.ignore(
                    &p,
                    v,
                    "always on: with a database, models added through /model/new are stored in it",
                ),
                _ => self.ignore(&p, v, "no tollgate equivalent"),
            }
        }
        Ok(())
    }
}
