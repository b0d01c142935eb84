//! The read-only map of model groups and their deployments, built once from
//! the config and shared by every actor and handler (`Arc<Topology>`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};

use crate::config::{Config, Provider};
use crate::providers::Endpoint;

/// One upstream deployment, ready to call.
#[derive(Debug)]
pub struct DeploymentTarget {
    /// Index into `Topology::deployments`.
    pub idx: usize,
    pub id: String,
    pub group: Arc<str>,
    pub provider: Provider,
    pub upstream_model: String,
    /// The base URL (for logs and `x-litellm-model-api-base`).
    pub api_base: String,
    /// Full URL per endpoint (`Endpoint::index`), built once.
    pub urls: [String; 3],
    /// `Authorization: Bearer …`, marked sensitive so it is never logged.
    pub auth_header: Option<HeaderValue>,
    pub extra_headers: Vec<(HeaderName, HeaderValue)>,
    pub timeout: Duration,
    pub stream_idle_timeout: Duration,
    pub weight: f64,
    /// The deployment's own limits (the provider's quota), fleet-wide.
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub input_cost_per_token: f64,
    pub output_cost_per_token: f64,
}

#[derive(Debug)]
pub struct Group {
    pub idx: usize,
    pub name: Arc<str>,
    pub deployments: Vec<usize>,
    /// The dearest prices among its deployments: a request's cost is
    /// estimated (for budgets) before it is known where it goes.
    pub max_input_cost_per_token: f64,
    pub max_output_cost_per_token: f64,
}

#[derive(Debug, Default)]
pub struct Topology {
    pub groups: Vec<Group>,
    pub by_name: HashMap<String, usize>,
    pub deployments: Vec<Arc<DeploymentTarget>>,
}

impl Topology {
    /// `mock_url` is where the built-in mock listens, for `provider = "mock"`.
    pub fn build(config: &Config, mock_url: Option<&str>) -> Topology {
        let mut t = Topology::default();
        for (name, group) in &config.models {
            let group_name: Arc<str> = Arc::from(name.as_str());
            let gidx = t.groups.len();
            let mut members = Vec::with_capacity(group.deployments.len());
            for (i, d) in group.deployments.iter().enumerate() {
                let idx = t.deployments.len();
                let base_url = match (d.provider, &d.api_base) {
                    (_, Some(base)) => base.clone(),
                    (Provider::Mock, None) => {
                        mock_url.unwrap_or("http://127.0.0.1:1/v1").to_string()
                    }
                    (_, None) => "https://api.openai.com/v1".to_string(),
                };
                let auth_header = d.resolved_api_key.as_ref().and_then(|k| {
                    let mut v = HeaderValue::from_str(&format!("Bearer {}", k.expose())).ok()?;
                    v.set_sensitive(true);
                    Some(v)
                });
                let extra_headers = d
                    .extra_headers
                    .iter()
                    .filter_map(|(k, v)| {
                        Some((
                            HeaderName::from_bytes(k.as_bytes()).ok()?,
                            HeaderValue::from_str(v).ok()?,
                        ))
                    })
                    .collect();
                // Explicit prices win; else the price map; else 0, said once.
                let listed = crate::pricing::lookup(d.provider, &d.model).unwrap_or_default();
                let price = crate::pricing::ModelPrice {
                    input_cost_per_token: d
                        .input_cost_per_token
                        .unwrap_or(listed.input_cost_per_token),
                    output_cost_per_token: d
                        .output_cost_per_token
                        .unwrap_or(listed.output_cost_per_token),
                    ..listed
                };
                if price.input_cost_per_token == 0.0
                    && price.output_cost_per_token == 0.0
                    && d.input_cost_per_token.is_none()
                    && d.output_cost_per_token.is_none()
                {
                    tracing::warn!(model_group = %name, model = %d.model, "no price known for this deployment (set input_cost_per_token / output_cost_per_token): its spend is recorded as 0");
                }
                let urls = [
                    Endpoint::ChatCompletions,
                    Endpoint::Completions,
                    Endpoint::Embeddings,
                ]
                .map(|e| format!("{base_url}{}", e.path()));
                t.deployments.push(Arc::new(DeploymentTarget {
                    urls,
                    api_base: base_url.clone(),
                    idx,
                    id: d.id.clone().unwrap_or_else(|| format!("{name}-{i}")),
                    group: group_name.clone(),
                    provider: d.provider,
                    upstream_model: d.model.clone(),

                    auth_header,
                    extra_headers,
                    timeout: d.timeout(&config.router),
                    stream_idle_timeout: Duration::from_secs(
                        config.router.stream_idle_timeout_secs.max(1),
                    ),
                    weight: d.weight,
                    rpm: d.rpm.map(u64::from),
                    tpm: d.tpm,
                    input_cost_per_token: price.input_cost_per_token,
                    output_cost_per_token: price.output_cost_per_token,
                }));
                members.push(idx);
            }
            t.by_name.insert(name.clone(), gidx);
            let max_of = |f: fn(&DeploymentTarget) -> f64| {
                members
                    .iter()
                    .map(|&i| f(&t.deployments[i]))
                    .fold(0.0, f64::max)
            };
            t.groups.push(Group {
                idx: gidx,
                name: group_name,
                max_input_cost_per_token: max_of(|d| d.input_cost_per_token),
                max_output_cost_per_token: max_of(|d| d.output_cost_per_token),
                deployments: members,
            });
        }
        t
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.by_name.get(name).map(|&i| &self.groups[i])
    }
}
