//! LiteLLM's model inspection endpoints, which its tools and dashboards
//! call all the time: `GET /model/info` (also `/v1/model/info`,
//! `?litellm_model_id=`) lists deployments, `GET /model_group/info` the
//! groups. Read from the configured topology; a key sees only the groups
//! it may use, and provider credentials are never included.

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};

use super::{authenticate, WorkerState};
use crate::pricing;
use crate::topology::DeploymentTarget;

#[derive(Deserialize)]
pub struct InfoQuery {
    litellm_model_id: Option<String>,
}

#[derive(Serialize)]
struct DeploymentInfo<'a> {
    model_name: &'a str,
    litellm_params: Params<'a>,
    model_info: ModelInfo<'a>,
}

/// What LiteLLM shows of `litellm_params`: the call's shape, no secrets.
#[derive(Serialize)]
struct Params<'a> {
    /// LiteLLM's `provider/model` string.
    model: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    api_base: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rpm: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tpm: Option<u64>,
    timeout: f64,
}

#[derive(Serialize)]
struct ModelInfo<'a> {
    id: &'a str,
    db_model: bool,
    key: &'a str,
    litellm_provider: &'static str,
    max_tokens: Option<u64>,
    max_input_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    input_cost_per_token: f64,
    output_cost_per_token: f64,
    cache_read_input_token_cost: f64,
    cache_creation_input_token_cost: f64,
    weight: f64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    access_groups: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tags: &'a [String],
}

fn deployment_info(d: &DeploymentTarget) -> DeploymentInfo<'_> {
    let listed = pricing::lookup(d.provider, &d.upstream_model).unwrap_or_default();
    DeploymentInfo {
        model_name: &d.group,
        litellm_params: Params {
            model: format!("{}/{}", d.provider.name(), d.upstream_model),
            api_base: &d.api_base,
            rpm: d.rpm,
            tpm: d.tpm,
            timeout: d.timeout.as_secs_f64(),
        },
        model_info: ModelInfo {
            id: &d.id,
            db_model: d.revision > 0,
            key: &d.upstream_model,
            litellm_provider: d.provider.name(),
            max_tokens: listed.max_output_tokens,
            max_input_tokens: d.max_input_tokens,
            max_output_tokens: listed.max_output_tokens,
            input_cost_per_token: d.input_cost_per_token,
            output_cost_per_token: d.output_cost_per_token,
            cache_read_input_token_cost: d.cache_read_cost_per_token,
            cache_creation_input_token_cost: d.cache_creation_cost_per_token,
            weight: d.weight,
            access_groups: &d.access_groups,
            tags: &d.tags,
        },
    }
}

pub async fn model_info(
    req: HttpRequest,
    query: web::Query<InfoQuery>,
    st: web::Data<WorkerState>,
) -> HttpResponse {
    let key = match authenticate(&st, &req).await {
        Ok(k) => k,
        Err(e) => return e.error_response(),
    };
    let topology = st.gw.topology();
    let data: Vec<DeploymentInfo> = topology
        .live_groups()
        .filter(|g| key.may_use_group(g))
        .flat_map(|g| g.deployments.iter().map(|&i| &topology.deployments[i]))
        .filter(|d| {
            query
                .litellm_model_id
                .as_deref()
                .is_none_or(|id| id == d.id)
        })
        .map(|d| deployment_info(d))
        .collect();
    HttpResponse::Ok().json(serde_json::json!({ "data": data }))
}

#[derive(Serialize)]
struct GroupInfo<'a> {
    model_group: &'a str,
    providers: Vec<&'static str>,
    max_input_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    /// The dearest deployment's prices (what a request is budgeted at).
    input_cost_per_token: f64,
    output_cost_per_token: f64,
    /// Summed over the deployments that declare them.
    tpm: Option<u64>,
    rpm: Option<u64>,
}

pub async fn model_group_info(req: HttpRequest, st: web::Data<WorkerState>) -> HttpResponse {
    let key = match authenticate(&st, &req).await {
        Ok(k) => k,
        Err(e) => return e.error_response(),
    };
    let topology = st.gw.topology();
    let data: Vec<GroupInfo> = topology
        .live_groups()
        .filter(|g| key.may_use_group(g))
        .map(|g| {
            let deployments: Vec<&DeploymentTarget> = g
                .deployments
                .iter()
                .map(|&i| &*topology.deployments[i])
                .collect();
            let mut providers: Vec<&'static str> =
                deployments.iter().map(|d| d.provider.name()).collect();
            providers.sort_unstable();
            providers.dedup();
            let listed: Vec<pricing::ModelPrice> = deployments
                .iter()
                .filter_map(|d| pricing::lookup(d.provider, &d.upstream_model))
                .collect();
            let sum = |f: fn(&DeploymentTarget) -> Option<u64>| {
                deployments.iter().filter_map(|d| f(d)).reduce(|a, b| a + b)
            };
            GroupInfo {
                model_group: &g.name,
                providers,
                // What every deployment of the group can take.
                max_input_tokens: listed.iter().filter_map(|p| p.max_input_tokens).min(),
                max_output_tokens: listed.iter().filter_map(|p| p.max_output_tokens).min(),
                input_cost_per_token: g.max_input_cost_per_token,
                output_cost_per_token: g.max_output_cost_per_token,
                tpm: sum(|d| d.tpm),
                rpm: sum(|d| d.rpm),
            }
        })
        .collect();
    HttpResponse::Ok().json(serde_json::json!({ "data": data }))
}
