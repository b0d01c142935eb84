//! The map of model groups and their deployments: built from the config and
//! the models added at run time, shared by every actor and handler as an
//! immutable snapshot that a change replaces whole (`SharedTopology`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};

use crate::config::{AwsCredentials, Config, Deployment, ModelGroup, Provider};
use crate::metrics::{GroupMeters, Metrics};
use crate::providers::catalog::KeyHeader;
use crate::providers::{anthropic, Endpoint, Wire};
use crate::routing::{RetryPolicy, Strategy};

/// One upstream deployment, ready to call.
#[derive(Debug)]
pub struct DeploymentTarget {
    /// Index into `Topology::deployments`.
    pub idx: usize,
    pub id: String,
    pub group: Arc<str>,
    pub provider: Provider,
    pub wire: Wire,
    pub upstream_model: String,
    /// The base URL (for logs and `x-litellm-model-api-base`).
    pub api_base: String,
    /// `api_base`'s host and port, for the spans' `server.*` attributes.
    pub server_address: Option<(String, Option<u16>)>,
    /// Full URL per endpoint (`Endpoint::index`), built once.
    pub urls: [String; 3],
    /// Chat completions when streamed, where the provider has its own URL
    /// for streams (Gemini, Bedrock).
    pub stream_url: String,
    /// The key as the provider takes it (`Authorization`, `x-api-key`, …),
    /// marked sensitive so it is never logged.
    pub auth_header: Option<(HeaderName, HeaderValue)>,
    /// Static headers: the provider's own (`anthropic-version`) and the
    /// config's `extra_headers`.
    pub extra_headers: Vec<(HeaderName, HeaderValue)>,
    /// Unsupported parameters are dropped instead of refused.
    pub drop_params: bool,
    /// Bedrock's signing credentials.
    pub aws: Option<AwsCredentials>,
    pub timeout: Duration,
    pub stream_idle_timeout: Duration,
    /// Share under weighted choices: `weight`, else `rpm`, else `tpm`, else 1.
    pub weight: f64,
    /// Priority tier (lower first); `u32::MAX` when unset.
    pub order: u32,
    pub tags: Vec<String>,
    /// Context window in tokens, when known.
    pub max_input_tokens: Option<u64>,
    pub access_groups: Vec<String>,
    /// Serves embeddings (probed with one).
    pub embedding: bool,
    /// 0 for the config's deployments; for those added at run time, their
    /// stored revision (a changed deployment is a new target).
    pub revision: i64,
    /// The deployment's own limits (the provider's quota), fleet-wide.
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub input_cost_per_token: f64,
    pub output_cost_per_token: f64,
    pub cache_read_cost_per_token: f64,
    pub cache_creation_cost_per_token: f64,
    /// Its values of the headers every answer carries, built once.
    pub reply_headers: crate::http::reply_headers::DeploymentHeaders,
}

impl DeploymentTarget {
    pub fn url(&self, endpoint: Endpoint, stream: bool) -> &str {
        if stream && endpoint == Endpoint::ChatCompletions {
            &self.stream_url
        } else {
            &self.urls[endpoint.index()]
        }
    }
}

/// Azure's API version when the deployment names none (the latest GA).
pub const AZURE_API_VERSION: &str = "2024-10-21";

/// A path segment: everything but RFC 3986's unreserved characters
/// escaped (Bedrock model ids carry `:`; SigV4 signs the escaped form).
pub fn segment(s: &str) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    const SET: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(s, SET).to_string()
}

/// Every endpoint's URL and the stream URL for one deployment.
fn urls(d: &Deployment, base: &str) -> ([String; 3], String) {
    let model = &d.model;
    let all = |f: &dyn Fn(Endpoint) -> String| {
        [
            Endpoint::ChatCompletions,
            Endpoint::Completions,
            Endpoint::Embeddings,
        ]
        .map(f)
    };
    match d.provider().wire() {
        Wire::OpenAi => {
            let u = all(&|e| format!("{base}{}", e.path()));
            let stream = u[0].clone();
            (u, stream)
        }
        Wire::Azure => {
            let version = d.api_version.as_deref().unwrap_or(AZURE_API_VERSION);
            // Azure's v1 API takes the model in the body, like OpenAI.
            let u = if base.ends_with("/openai/v1") {
                all(&|e| format!("{base}{}?api-version={version}", e.path()))
            } else {
                all(&|e| {
                    format!(
                        "{base}/openai/deployments/{}{}?api-version={version}",
                        segment(model),
                        e.path()
                    )
                })
            };
            let stream = u[0].clone();
            (u, stream)
        }
        Wire::Anthropic => {
            let root = base.strip_suffix("/v1").unwrap_or(base);
            let chat = format!("{root}/v1/messages");
            (all(&|_| chat.clone()), chat)
        }
        Wire::Gemini => {
            let root = base
                .strip_suffix("/v1beta")
                .or_else(|| base.strip_suffix("/v1"))
                .unwrap_or(base);
            let m = format!("{root}/v1beta/models/{}", segment(model));
            (
                [
                    format!("{m}:generateContent"),
                    format!("{m}:generateContent"),
                    format!("{m}:batchEmbedContents"),
                ],
                format!("{m}:streamGenerateContent?alt=sse"),
            )
        }
        Wire::Bedrock => {
            let m = format!("{base}/model/{}", segment(model));
            (
                all(&|_| format!("{m}/converse")),
                format!("{m}/converse-stream"),
            )
        }
    }
}

/// The key in the header the provider reads, marked sensitive.
fn auth_header(d: &Deployment) -> Option<(HeaderName, HeaderValue)> {
    let key = d.resolved_api_key.as_ref()?.expose();
    let (name, value) = match d.provider().key_header() {
        KeyHeader::Bearer => ("authorization", format!("Bearer {key}")),
        // An Entra ID token goes as a bearer token; a resource key as api-key.
        KeyHeader::ApiKey if d.api_key.is_none() && d.azure_ad_token.is_some() => {
            ("authorization", format!("Bearer {key}"))
        }
        KeyHeader::ApiKey => ("api-key", key.to_string()),
        KeyHeader::XApiKey => ("x-api-key", key.to_string()),
        KeyHeader::GoogApiKey => ("x-goog-api-key", key.to_string()),
        KeyHeader::SigV4 => return None,
    };
    let mut v = HeaderValue::from_str(&value).ok()?;
    v.set_sensitive(true);
    Some((HeaderName::from_static(name), v))
}

#[derive(Debug)]
pub struct Group {
    pub idx: usize,
    pub name: Arc<str>,
    pub deployments: Vec<usize>,
    pub strategy: Strategy,
    pub retry_policy: RetryPolicy,
    /// Some deployment carries tags (and tag routing is on).
    pub tagged: bool,
    /// The smallest known context window among its deployments, when
    /// pre-call checks are on.
    pub min_input_window: Option<u64>,
    /// Some deployment has a priority tier.
    pub ordered: bool,
    /// Access groups its deployments belong to (keys and teams granted one
    /// may call the group).
    pub access_groups: Vec<String>,
    /// The dearest prices among its deployments: a request's cost is
    /// estimated (for budgets) before it is known where it goes.
    pub max_input_cost_per_token: f64,
    pub max_output_cost_per_token: f64,
    /// Its request metrics (absent in unit tests' topologies).
    pub meters: Option<GroupMeters>,
}

/// The model groups and deployments at one moment. A change (a model added
/// at run time) builds a new one and swaps it in whole; requests keep the
/// snapshot they started with.
///
/// Indexes are stable across versions: a deployment keeps its index while
/// its definition is unchanged, a new or changed one gets a new index, and
/// a removed one stays (in no group) so that attempts still in flight can
/// report on it. Groups keep their index by name. Per-worker state indexed
/// by them (router, health) only ever grows.
#[derive(Debug, Default)]
pub struct Topology {
    pub version: u64,
    pub groups: Vec<Group>,
    pub by_name: HashMap<String, usize>,
    pub deployments: Vec<Arc<DeploymentTarget>>,
}

/// Where the topology lives: swapped whole, read lock-free.
pub type SharedTopology = Arc<arc_swap::ArcSwap<Topology>>;

impl Topology {
    /// `mock_url` is where the built-in mock listens, for `provider = "mock"`.
    pub fn build(config: &Config, mock_url: Option<&str>) -> Topology {
        Topology::assemble(config, &config.models, None, mock_url, None)
    }

    /// The topology of `models` (the config's and those added at run time,
    /// validated), keeping `prev`'s indexes for what did not change.
    pub fn assemble(
        config: &Config,
        models: &BTreeMap<String, ModelGroup>,
        prev: Option<&Topology>,
        mock_url: Option<&str>,
        metrics: Option<&Metrics>,
    ) -> Topology {
        let mut t = Topology {
            version: prev.map_or(1, |p| p.version + 1),
            ..Topology::default()
        };
        if let Some(p) = prev {
            // Every old deployment keeps its slot (as a tombstone unless
            // reused below); groups are rebuilt.
            t.deployments = p.deployments.clone();
        }
        let prev_by_id: HashMap<&str, usize> = prev
            .map(|p| {
                p.groups
                    .iter()
                    .flat_map(|g| g.deployments.iter())
                    .map(|&i| (p.deployments[i].id.as_str(), i))
                    .collect()
            })
            .unwrap_or_default();
        let mut group_slots: Vec<Option<Group>> = Vec::new();
        if let Some(p) = prev {
            group_slots.resize_with(p.groups.len(), || None);
        }
        let mut next_group = prev.map_or(0, |p| p.groups.len());
        for (name, group) in models {
            let group_name: Arc<str> = Arc::from(name.as_str());
            let gidx = match prev.and_then(|p| p.by_name.get(name)) {
                Some(&i) => i,
                None => {
                    next_group += 1;
                    group_slots.push(None);
                    next_group - 1
                }
            };
            let mut members = Vec::with_capacity(group.deployments.len());
            for (i, d) in group.deployments.iter().enumerate() {
                let id = d.id.clone().unwrap_or_else(|| format!("{name}-{i}"));
                let reused = prev_by_id.get(id.as_str()).copied().filter(|&old| {
                    let o = &t.deployments[old];
                    o.revision == d.revision && *o.group == **name
                });
                let idx = match reused {
                    Some(old) => old,
                    None => {
                        let idx = t.deployments.len();
                        t.deployments.push(Arc::new(target(
                            config,
                            &group_name,
                            id,
                            d,
                            idx,
                            mock_url,
                        )));
                        idx
                    }
                };
                members.push(idx);
            }
            t.by_name.insert(name.clone(), gidx);
            let members_of = |idx: &usize| &t.deployments[*idx];
            let max_of = |f: fn(&DeploymentTarget) -> f64| {
                members.iter().map(|i| f(members_of(i))).fold(0.0, f64::max)
            };
            let mut access_groups: Vec<String> = members
                .iter()
                .flat_map(|i| members_of(i).access_groups.iter().cloned())
                .collect();
            access_groups.sort_unstable();
            access_groups.dedup();
            group_slots[gidx] = Some(Group {
                idx: gidx,
                name: group_name,
                strategy: group
                    .routing_strategy
                    .unwrap_or(config.router.routing_strategy),
                retry_policy: group.retry_policy.unwrap_or(config.router.retry_policy),
                tagged: config.router.enable_tag_filtering
                    && members.iter().any(|i| !members_of(i).tags.is_empty()),
                min_input_window: if config.router.enable_pre_call_checks {
                    members
                        .iter()
                        .filter_map(|i| members_of(i).max_input_tokens)
                        .min()
                } else {
                    None
                },
                ordered: members.iter().any(|i| members_of(i).order != u32::MAX),
                access_groups,
                max_input_cost_per_token: max_of(|d| d.input_cost_per_token),
                max_output_cost_per_token: max_of(|d| d.output_cost_per_token),
                meters: metrics.map(|m| m.group(name)),
                deployments: members,
            });
        }
        // A group removed entirely keeps its index, empty and unnamed.
        t.groups = group_slots
            .into_iter()
            .enumerate()
            .map(|(idx, g)| {
                g.unwrap_or_else(|| {
                    let old = &prev.expect("only earlier groups can be missing").groups[idx];
                    Group {
                        idx,
                        name: old.name.clone(),
                        deployments: Vec::new(),
                        strategy: old.strategy,
                        retry_policy: old.retry_policy,
                        tagged: false,
                        min_input_window: None,
                        ordered: false,
                        access_groups: Vec::new(),
                        max_input_cost_per_token: 0.0,
                        max_output_cost_per_token: 0.0,
                        meters: old.meters.clone(),
                    }
                })
            })
            .collect();
        // Deployments that stopped serving leave /metrics (their gauges
        // would otherwise report a last state forever).
        if let (Some(p), Some(m)) = (prev, metrics) {
            let live = t.live_deployments();
            for i in p.groups.iter().flat_map(|g| g.deployments.iter()) {
                if !live.contains(i) {
                    m.forget_deployment(&p.deployments[*i]);
                }
            }
        }
        t
    }

    /// Indexes of the deployments some group serves (tombstones excluded).
    pub fn live_deployments(&self) -> std::collections::HashSet<usize> {
        self.groups
            .iter()
            .flat_map(|g| g.deployments.iter().copied())
            .collect()
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.by_name.get(name).map(|&i| &self.groups[i])
    }

    /// The groups that serve requests, in name order.
    pub fn live_groups(&self) -> impl Iterator<Item = &Group> {
        let mut names: Vec<(&String, &usize)> = self.by_name.iter().collect();
        names.sort_unstable();
        names.into_iter().map(|(_, &i)| &self.groups[i])
    }
}

/// One deployment, ready to call.
fn target(
    config: &Config,
    group_name: &Arc<str>,
    id: String,
    d: &Deployment,
    idx: usize,
    mock_url: Option<&str>,
) -> DeploymentTarget {
    let name = &**group_name;
    let base_url = match (d.provider(), &d.api_base) {
        (_, Some(base)) => base.clone(),
        (Provider::Mock, None) => mock_url.unwrap_or("http://127.0.0.1:1/v1").to_string(),
        (_, None) => "https://api.openai.com/v1".to_string(),
    };
    let auth_header = auth_header(d);
    let mut extra_headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
    if d.provider().wire() == Wire::Anthropic {
        extra_headers.push((
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(anthropic::API_VERSION),
        ));
    }
    extra_headers.extend(d.extra_headers.iter().filter_map(|(k, v)| {
        Some((
            HeaderName::from_bytes(k.as_bytes()).ok()?,
            HeaderValue::from_str(v).ok()?,
        ))
    }));
    // Explicit prices win; else the price map; else 0, said once.
    let listed = crate::pricing::lookup(d.provider(), &d.model).unwrap_or_default();
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
    let (urls, stream_url) = urls(d, &base_url);
    let reply_headers =
        crate::http::reply_headers::DeploymentHeaders::new(&id, group_name, &base_url);
    DeploymentTarget {
        reply_headers,
        urls,
        stream_url,
        wire: d.provider().wire(),
        drop_params: d.drop_params.unwrap_or(config.drop_params),
        aws: d.resolved_aws.clone(),
        server_address: url::Url::parse(&base_url)
            .ok()
            .and_then(|u| Some((u.host_str()?.to_string(), u.port_or_known_default()))),
        api_base: base_url,
        idx,
        id,
        group: group_name.clone(),
        provider: d.provider(),
        upstream_model: d.model.clone(),
        auth_header,
        extra_headers,
        timeout: d.timeout(&config.router),
        stream_idle_timeout: Duration::from_secs(config.router.stream_idle_timeout_secs.max(1)),
        weight: d
            .weight
            .or(d.rpm.map(f64::from))
            .or(d.tpm.map(|t| t as f64))
            .filter(|w| *w > 0.0)
            .unwrap_or(1.0),
        order: d.order.unwrap_or(u32::MAX),
        tags: d.tags.clone(),
        max_input_tokens: d.max_input_tokens.or(listed.max_input_tokens),
        access_groups: d.access_groups.clone(),
        embedding: d.mode.as_deref() == Some("embedding"),
        revision: d.revision,
        rpm: d.rpm.map(u64::from),
        tpm: d.tpm,
        input_cost_per_token: price.input_cost_per_token,
        output_cost_per_token: price.output_cost_per_token,
        cache_read_cost_per_token: d
            .cache_read_input_token_cost
            .or(listed.cache_read_input_token_cost)
            .unwrap_or(price.input_cost_per_token),
        cache_creation_cost_per_token: d
            .cache_creation_input_token_cost
            .or(listed.cache_creation_input_token_cost)
            .unwrap_or(price.input_cost_per_token),
    }
}
