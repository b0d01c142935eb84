//! Cost of a request from its token usage and the deployment's prices.

use crate::providers::Usage;
use crate::topology::DeploymentTarget;

pub fn cost_usd(target: &DeploymentTarget, usage: &Usage) -> f64 {
    usage.prompt_tokens as f64 * target.input_cost_per_token
        + usage.completion_tokens as f64 * target.output_cost_per_token
}
