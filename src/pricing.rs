//! Cost of a request from its token usage and the deployment's prices.

use crate::providers::Usage;
use crate::topology::DeploymentTarget;

pub fn cost_usd(target: &DeploymentTarget, usage: &Usage) -> f64 {
    usage.prompt_tokens as f64 * target.input_cost_per_token
        + usage.completion_tokens as f64 * target.output_cost_per_token
}

/// A float as Python's `str()` writes it (LiteLLM's header values):
/// shortest round-trip digits, exponent form below 1e-4 or from 1e16
/// (`3.5e-05`), `.0` on whole numbers.
pub fn python_float(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "nan".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let abs = x.abs();
    if x == 0.0 || (1e-4..1e16).contains(&abs) {
        let s = format!("{x}");
        return if s.contains('.') { s } else { format!("{s}.0") };
    }
    let e = format!("{x:e}");
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_prints_them() {
        assert_eq!(python_float(3.5e-5), "3.5e-05");
        assert_eq!(python_float(0.00012), "0.00012");
        assert_eq!(python_float(0.0), "0.0");
        assert_eq!(python_float(2.0), "2.0");
        assert_eq!(python_float(1e-7), "1e-07");
        assert_eq!(python_float(0.0008869999999999999), "0.0008869999999999999");
        assert_eq!(python_float(1.5e20), "1.5e+20");
    }
}
