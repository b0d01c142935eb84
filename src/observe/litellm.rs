//! LiteLLM's Prometheus metric names and labels (`litellm_*`), beside
//! tollgate's own, so dashboards built for LiteLLM work unchanged. On with
//! `logging.litellm_metrics = true` (LiteLLM too needs its `prometheus`
//! callback turned on). Values LiteLLM would show as Python's `None` are
//! `"None"` here too, so its dashboards' filters match.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::access::KeyInfo;
use crate::topology::DeploymentTarget;

type Labels = Vec<(&'static str, String)>;
type Hist = Family<Labels, Histogram, fn() -> Histogram>;

/// LiteLLM's `LATENCY_BUCKETS`.
const LATENCY_BUCKETS: [f64; 35] = [
    0.005, 0.00625, 0.0125, 0.025, 0.05, 0.1, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0,
    5.5, 6.0, 6.5, 7.0, 7.5, 8.0, 8.5, 9.0, 9.5, 10.0, 15.0, 20.0, 25.0, 30.0, 60.0, 120.0, 180.0,
    240.0, 300.0,
];

fn latency() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

pub struct LiteLlmMetrics {
    enabled: AtomicBool,
    pub registry: Registry,
    requests: Family<Labels, Counter>,
    proxy_total: Family<Labels, Counter>,
    proxy_failed: Family<Labels, Counter>,
    spend: Family<Labels, Counter<f64, AtomicU64>>,
    total_tokens: Family<Labels, Counter>,
    input_tokens: Family<Labels, Counter>,
    output_tokens: Family<Labels, Counter>,
    total_latency: Hist,
    api_latency: Hist,
    ttft: Hist,
    overhead: Hist,
    deployment_state: Family<Labels, Gauge>,
    deployment_success: Family<Labels, Counter>,
    deployment_failure: Family<Labels, Counter>,
    deployment_total: Family<Labels, Counter>,
    deployment_cooled_down: Family<Labels, Counter>,
    remaining_team_budget: Family<Labels, Gauge<f64, AtomicU64>>,
    remaining_key_budget: Family<Labels, Gauge<f64, AtomicU64>>,
    remaining_model_requests: Family<Labels, Gauge>,
    remaining_model_tokens: Family<Labels, Gauge>,
}

impl Default for LiteLlmMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn none(v: Option<&str>) -> String {
    v.unwrap_or("None").to_string()
}

/// What one finished request tells these metrics.
pub struct Observation<'a> {
    pub key: Option<&'a KeyInfo>,
    pub end_user: Option<&'a str>,
    pub requested_model: &'a str,
    pub deployment: Option<&'a DeploymentTarget>,
    pub status: u16,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost: f64,
    pub total: Duration,
    pub upstream: Duration,
    pub ttft: Option<Duration>,
    /// Left of the key's `model_rpm_limit` / `model_tpm_limit` for this
    /// model group after admitting this request.
    pub key_model_remaining: (Option<u64>, Option<u64>),
}

impl LiteLlmMetrics {
    pub fn new() -> Self {
        let h: fn() -> Histogram = latency;
        let mut m = LiteLlmMetrics {
            enabled: AtomicBool::new(false),
            registry: Registry::default(),
            requests: Family::default(),
            proxy_total: Family::default(),
            proxy_failed: Family::default(),
            spend: Family::default(),
            total_tokens: Family::default(),
            input_tokens: Family::default(),
            output_tokens: Family::default(),
            total_latency: Family::new_with_constructor(h),
            api_latency: Family::new_with_constructor(h),
            ttft: Family::new_with_constructor(h),
            overhead: Family::new_with_constructor(h),
            deployment_state: Family::default(),
            deployment_success: Family::default(),
            deployment_failure: Family::default(),
            deployment_total: Family::default(),
            deployment_cooled_down: Family::default(),
            remaining_team_budget: Family::default(),
            remaining_key_budget: Family::default(),
            remaining_model_requests: Family::default(),
            remaining_model_tokens: Family::default(),
        };
        let r = &mut m.registry;
        r.register(
            "litellm_requests_metric",
            "Total LLM calls to litellm",
            m.requests.clone(),
        );
        r.register(
            "litellm_proxy_total_requests_metric",
            "Total requests made to the proxy server",
            m.proxy_total.clone(),
        );
        r.register(
            "litellm_proxy_failed_requests_metric",
            "Total failed responses from proxy",
            m.proxy_failed.clone(),
        );
        r.register(
            "litellm_spend_metric",
            "Total spend on LLM requests",
            m.spend.clone(),
        );
        r.register(
            "litellm_total_tokens_metric",
            "Total number of input + output tokens from LLM requests",
            m.total_tokens.clone(),
        );
        r.register(
            "litellm_input_tokens_metric",
            "Total number of input tokens from LLM requests",
            m.input_tokens.clone(),
        );
        r.register(
            "litellm_output_tokens_metric",
            "Total number of output tokens from LLM requests",
            m.output_tokens.clone(),
        );
        r.register(
            "litellm_request_total_latency_metric",
            "Total latency (seconds) for a request to LiteLLM",
            m.total_latency.clone(),
        );
        r.register(
            "litellm_llm_api_latency_metric",
            "Total latency (seconds) for a model's LLM API call",
            m.api_latency.clone(),
        );
        r.register(
            "litellm_llm_api_time_to_first_token_metric",
            "Time to first token for a model's LLM API call",
            m.ttft.clone(),
        );
        r.register(
            "litellm_overhead_latency_metric",
            "Latency overhead (seconds) added by LiteLLM processing",
            m.overhead.clone(),
        );
        r.register("litellm_deployment_state", "LLM Deployment Analytics - The state of the deployment: 0 = healthy, 1 = partial outage, 2 = complete outage", m.deployment_state.clone());
        r.register(
            "litellm_deployment_success_responses",
            "LLM Deployment Analytics - Total number of successful LLM API calls via litellm",
            m.deployment_success.clone(),
        );
        r.register("litellm_deployment_failure_responses", "LLM Deployment Analytics - Total number of failed LLM API calls for a specific LLM deployment", m.deployment_failure.clone());
        r.register("litellm_deployment_total_requests", "LLM Deployment Analytics - Total number of LLM API calls via litellm - success + failure", m.deployment_total.clone());
        r.register("litellm_deployment_cooled_down", "LLM Deployment Analytics - Number of times a deployment has been cooled down by LiteLLM load balancing logic", m.deployment_cooled_down.clone());
        r.register(
            "litellm_remaining_team_budget_metric",
            "Remaining budget for team",
            m.remaining_team_budget.clone(),
        );
        r.register(
            "litellm_remaining_api_key_budget_metric",
            "Remaining budget for api key",
            m.remaining_key_budget.clone(),
        );
        r.register(
            "litellm_remaining_api_key_requests_for_model",
            "Remaining Requests API Key can make for model (model based rpm limit on key)",
            m.remaining_model_requests.clone(),
        );
        r.register(
            "litellm_remaining_api_key_tokens_for_model",
            "Remaining Tokens API Key can make for model (model based tpm limit on key)",
            m.remaining_model_tokens.clone(),
        );
        m
    }

    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    fn deployment_labels(d: &DeploymentTarget) -> Labels {
        vec![
            ("litellm_model_name", d.upstream_model.clone()),
            ("model_id", d.id.clone()),
            ("api_base", d.api_base.clone()),
            ("api_provider", d.provider.name().to_string()),
        ]
    }

    /// A deployment removed at run time leaves `litellm_deployment_state`.
    pub fn forget_deployment(&self, d: &DeploymentTarget) {
        self.deployment_state.remove(&Self::deployment_labels(d));
    }

    /// A deployment's state: 0 healthy, 2 cooled down (complete outage).
    pub fn deployment_state(&self, d: &DeploymentTarget, state: i64) {
        if self.enabled() {
            self.deployment_state
                .get_or_create(&Self::deployment_labels(d))
                .set(state);
        }
    }

    pub fn deployment_cooled_down(&self, d: &DeploymentTarget, status: Option<u16>) {
        if self.enabled() {
            let mut l = Self::deployment_labels(d);
            l.push((
                "exception_status",
                status.map_or("None".into(), |s| s.to_string()),
            ));
            self.deployment_cooled_down.get_or_create(&l).inc();
            self.deployment_state(d, 2);
        }
    }

    pub fn observe(&self, o: &Observation<'_>) {
        let k = o.key;
        let hashed = none(k.map(|k| k.id.as_str()));
        let alias = none(k.and_then(|k| k.alias.as_deref()));
        let team = none(k.and_then(|k| k.team_id.as_deref()));
        let team_alias = none(k.and_then(|k| k.team.as_ref()?.alias.as_deref()));
        let user = none(k.and_then(|k| k.user_id.as_deref()));
        let end_user = none(o.end_user);
        let model = none(o.deployment.map(|d| d.upstream_model.as_str()));
        let requested = o.requested_model.to_string();
        let base: Labels = vec![
            ("end_user", end_user.clone()),
            ("hashed_api_key", hashed.clone()),
            ("api_key_alias", alias.clone()),
            ("team", team.clone()),
            ("team_alias", team_alias.clone()),
            ("user", user.clone()),
        ];
        let with = |extra: &[(&'static str, &String)]| {
            let mut l = base.clone();
            l.extend(extra.iter().map(|(k, v)| (*k, (*v).clone())));
            l
        };
        let status = o.status.to_string();
        self.proxy_total
            .get_or_create(&with(&[
                ("requested_model", &requested),
                ("status_code", &status),
            ]))
            .inc();
        if o.status != 200 {
            let class = match o.status {
                400 => "BadRequestError",
                401 => "AuthenticationError",
                403 => "PermissionDeniedError",
                404 => "NotFoundError",
                408 | 504 => "Timeout",
                429 => "RateLimitError",
                499 => "ClientDisconnected",
                503 => "ServiceUnavailableError",
                _ => "APIError",
            }
            .to_string();
            self.proxy_failed
                .get_or_create(&with(&[
                    ("requested_model", &requested),
                    ("exception_status", &status),
                    ("exception_class", &class),
                ]))
                .inc();
        }
        let Some(d) = o.deployment else {
            return;
        };
        // Below: requests that reached an upstream.
        let per_model = with(&[("model", &model)]);
        let per_model_req = with(&[("model", &model), ("requested_model", &requested)]);
        if o.status == 200 {
            self.requests.get_or_create(&per_model).inc();
        }
        self.spend.get_or_create(&per_model).inc_by(o.cost);
        let tokens = o.prompt_tokens + o.completion_tokens;
        self.total_tokens
            .get_or_create(&per_model_req)
            .inc_by(tokens);
        self.input_tokens
            .get_or_create(&per_model_req)
            .inc_by(o.prompt_tokens);
        self.output_tokens
            .get_or_create(&per_model_req)
            .inc_by(o.completion_tokens);
        self.total_latency
            .get_or_create(&per_model_req)
            .observe(o.total.as_secs_f64());
        self.api_latency
            .get_or_create(&per_model_req)
            .observe(o.upstream.as_secs_f64());
        if let Some(t) = o.ttft {
            let l = vec![
                ("model", model.clone()),
                ("hashed_api_key", hashed.clone()),
                ("api_key_alias", alias.clone()),
                ("team", team.clone()),
                ("team_alias", team_alias.clone()),
            ];
            self.ttft.get_or_create(&l).observe(t.as_secs_f64());
        }
        let mut dl = Self::deployment_labels(d);
        self.overhead
            .get_or_create(&{
                let mut l = vec![("model_group", d.group.to_string())];
                l.extend(dl.iter().filter(|(k, _)| *k != "model_id").cloned());
                l.push(("hashed_api_key", hashed.clone()));
                l.push(("api_key_alias", alias.clone()));
                l
            })
            .observe(o.total.saturating_sub(o.upstream).as_secs_f64());
        dl.push(("requested_model", requested.clone()));
        self.deployment_total.get_or_create(&dl).inc();
        if o.status == 200 {
            self.deployment_success.get_or_create(&dl).inc();
        } else {
            dl.push(("exception_status", status));
            self.deployment_failure.get_or_create(&dl).inc();
        }
        if let (Some(_), (requests, tokens)) = (k, o.key_model_remaining) {
            let labels = vec![
                ("hashed_api_key", hashed.clone()),
                ("api_key_alias", alias.clone()),
                ("model", d.group.to_string()),
            ];
            if let Some(n) = requests {
                self.remaining_model_requests
                    .get_or_create(&labels)
                    .set(n as i64);
            }
            if let Some(n) = tokens {
                self.remaining_model_tokens
                    .get_or_create(&labels)
                    .set(n as i64);
            }
        }
        if let Some(k) = k {
            if let Some(max) = k.max_budget {
                self.remaining_key_budget
                    .get_or_create(&vec![("hashed_api_key", hashed), ("api_key_alias", alias)])
                    .set(max - k.spend - o.cost);
            }
            if let Some(t) = &k.team {
                if let Some(max) = t.max_budget {
                    self.remaining_team_budget
                        .get_or_create(&vec![("team", t.id.clone()), ("team_alias", team_alias)])
                        .set(max - t.spend - o.cost);
                }
            }
        }
    }
}
