//! Health probes: the smallest real request a deployment can answer (a
//! one-token chat, or a one-word embedding), sent through the same
//! translation and client as traffic, so a probe fails exactly when
//! traffic would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use serde_json::json;

use crate::actors::provider::{Call, ProviderActor, Reply};
use crate::providers::{self, AnswerCtx, Endpoint};
use crate::request::InferenceRequest;
use crate::topology::DeploymentTarget;

/// What a probe found.
#[derive(Debug, Clone)]
pub struct Probed {
    pub deployment: usize,
    /// How long the answer took, or why there was none.
    pub result: Result<Duration, String>,
}

/// The probe request for a deployment, by its mode.
fn request(target: &DeploymentTarget) -> (Endpoint, InferenceRequest) {
    let (endpoint, body) = if target.embedding {
        (
            Endpoint::Embeddings,
            json!({"model": &*target.group, "input": "ping"}),
        )
    } else {
        (
            Endpoint::ChatCompletions,
            json!({
                "model": &*target.group,
                "messages": [{"role": "user", "content": "ping"}],
                "max_tokens": 1,
            }),
        )
    };
    let parsed = InferenceRequest::parse(endpoint, body.to_string().as_bytes())
        .expect("the probe request is valid");
    (endpoint, parsed)
}

/// Probes one deployment through `provider` (a ProviderActor of the
/// caller's thread), within `timeout`.
pub async fn probe(
    provider: &Addr<ProviderActor>,
    target: Arc<DeploymentTarget>,
    timeout: Duration,
) -> Probed {
    let deployment = target.idx;
    let started = Instant::now();
    let result = async {
        let (endpoint, parsed) = request(&target);
        let outbound = providers::outbound(&target, &parsed).map_err(|e| e.to_string())?;
        let call = Call {
            target: target.clone(),
            endpoint,
            outbound,
            stream: false,
            answer: AnswerCtx {
                id: "chatcmpl-health-check".into(),
                created: 0,
                model: target.upstream_model.clone(),
                wants_usage: false,
            },
            timeout,
        };
        match provider.send(call).await {
            Ok(Ok(Reply::Full(_))) => Ok(started.elapsed()),
            Ok(Ok(Reply::Stream { .. })) => Ok(started.elapsed()),
            Ok(Err(e)) => Err(e.into_gateway_error().to_string()),
            Err(_) => Err("the provider client is restarting".into()),
        }
    };
    let result = match actix_rt::time::timeout(timeout + Duration::from_millis(100), result).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:.1}s", timeout.as_secs_f64())),
    };
    Probed { deployment, result }
}

/// Probes every deployment of `targets` at once.
pub async fn probe_all(
    provider: &Addr<ProviderActor>,
    targets: Vec<Arc<DeploymentTarget>>,
    timeout: Duration,
) -> Vec<Probed> {
    futures_util::future::join_all(targets.into_iter().map(|t| probe(provider, t, timeout))).await
}
