//! Models added at run time, in LiteLLM's shape (`model_name`,
//! `litellm_params`, `model_info`): reading them into deployments, and
//! sealing the provider secrets they carry before they are stored. Pure,
//! no I/O.
//!
//! Secrets at rest: every secret field (`api_key`, `azure_ad_token`,
//! `aws_secret_access_key`, `aws_session_token`) is stored as
//! `enc:v1:` + base64(nonce ‖ XChaCha20-Poly1305 ciphertext), under a key
//! derived (SHA-256) from `storage.salt_key`, else the master key — as
//! LiteLLM uses its salt key. References to the environment
//! (`os.environ/NAME`, `env:NAME`) are stored as they are.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::{ConfigError, Deployment};

/// The fields of `litellm_params` that hold secrets.
pub const SECRET_FIELDS: &[&str] = &[
    "api_key",
    "azure_ad_token",
    "aws_secret_access_key",
    "aws_session_token",
];

const SEALED: &str = "enc:v1:";

/// Seals and opens the secrets of stored models.
#[derive(Clone)]
pub struct Sealer(XChaCha20Poly1305);

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

impl Sealer {
    pub fn new(secret: &str) -> Sealer {
        let key = Sha256::digest(format!("tollgate model secrets:{secret}").as_bytes());
        Sealer(XChaCha20Poly1305::new(&key))
    }

    pub fn seal(&self, plain: &str) -> String {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .0
            .encrypt(XNonce::from_slice(&nonce), plain.as_bytes())
            .expect("encryption with a valid key cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!(
            "{SEALED}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        )
    }

    /// `Ok(None)`: not sealed (stored as given).
    pub fn open(&self, stored: &str) -> Result<Option<String>, String> {
        let Some(b64) = stored.strip_prefix(SEALED) else {
            return Ok(None);
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "a stored secret is not valid base64".to_string())?;
        if raw.len() < 24 {
            return Err("a stored secret is truncated".into());
        }
        let (nonce, sealed) = raw.split_at(24);
        let plain = self
            .0
            .decrypt(XNonce::from_slice(nonce), sealed)
            .map_err(|_| {
                "a stored secret cannot be decrypted (was storage.salt_key or the master key changed?)"
                    .to_string()
            })?;
        String::from_utf8(plain)
            .map(Some)
            .map_err(|_| "a stored secret is not UTF-8".to_string())
    }
}

/// Does this value name the environment rather than hold a secret?
fn is_env_reference(v: &str) -> bool {
    v.starts_with("os.environ/") || v.starts_with("env:")
}

/// Seals the secret fields of `params` in place.
pub fn seal_secrets(params: &mut Map<String, Value>, sealer: &Sealer) {
    for field in SECRET_FIELDS {
        if let Some(Value::String(v)) = params.get_mut(*field) {
            if !is_env_reference(v) && !v.starts_with(SEALED) {
                *v = sealer.seal(v);
            }
        }
    }
}

/// `litellm_params` without its secrets, for answers.
pub fn redacted(params: &Map<String, Value>) -> Map<String, Value> {
    params
        .iter()
        .filter(|(k, _)| !SECRET_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// LiteLLM `litellm_params` / `model_info` fields and ours.
const PARAM_NAMES: &[(&str, &str)] = &[
    ("model", "model"),
    ("custom_llm_provider", "provider"),
    ("api_base", "api_base"),
    ("api_key", "api_key"),
    ("api_version", "api_version"),
    ("azure_ad_token", "azure_ad_token"),
    ("aws_region_name", "aws_region"),
    ("aws_region", "aws_region"),
    ("aws_access_key_id", "aws_access_key_id"),
    ("aws_secret_access_key", "aws_secret_access_key"),
    ("aws_session_token", "aws_session_token"),
    ("rpm", "rpm"),
    ("tpm", "tpm"),
    ("input_cost_per_token", "input_cost_per_token"),
    ("output_cost_per_token", "output_cost_per_token"),
    ("cache_read_input_token_cost", "cache_read_input_token_cost"),
    (
        "cache_creation_input_token_cost",
        "cache_creation_input_token_cost",
    ),
    ("tags", "tags"),
    ("order", "order"),
    ("weight", "weight"),
    ("drop_params", "drop_params"),
    ("extra_headers", "extra_headers"),
    ("max_input_tokens", "max_input_tokens"),
];

/// What reading a stored model gave.
#[derive(Debug)]
pub struct Read {
    pub deployment: Deployment,
    /// `litellm_params` fields tollgate does not use (named back to the
    /// caller, never an error: LiteLLM takes arbitrary provider params).
    pub ignored: Vec<String>,
}

/// A stored model as a validated deployment: secrets opened, LiteLLM's
/// names mapped, the same checks as the config's.
pub fn read(
    id: &str,
    name: &str,
    params: &Map<String, Value>,
    info: &Map<String, Value>,
    revision: i64,
    sealer: &Sealer,
) -> Result<Read, ConfigError> {
    let path = format!("model {id}");
    let mut ours = Map::new();
    let mut ignored = Vec::new();
    for (k, v) in params {
        if v.is_null() {
            continue;
        }
        if let Some((_, field)) = PARAM_NAMES.iter().find(|(theirs, _)| theirs == k) {
            let mut v = v.clone();
            if let Value::String(s) = &mut v {
                if SECRET_FIELDS.contains(&k.as_str()) {
                    if let Some(plain) = sealer.open(s).map_err(|e| ConfigError::at(&path, e))? {
                        *s = plain;
                    }
                }
                if let Some(var) = s.strip_prefix("os.environ/") {
                    *s = format!("env:{var}");
                }
            }
            ours.insert(field.to_string(), v);
        } else if matches!(k.as_str(), "timeout" | "request_timeout" | "stream_timeout") {
            let secs = v
                .as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .filter(|s| s.is_finite() && *s > 0.0)
                .ok_or_else(|| {
                    ConfigError::at(
                        format!("{path}.{k}"),
                        "must be a positive number of seconds",
                    )
                })?;
            if k != "stream_timeout" {
                ours.insert("timeout_secs".into(), Value::from(secs.ceil() as u64));
            }
        } else {
            ignored.push(k.clone());
        }
    }
    for field in ["max_input_tokens", "access_groups", "mode"] {
        if let Some(v) = info.get(field).filter(|v| !v.is_null()) {
            ours.entry(field.to_string()).or_insert_with(|| v.clone());
        }
    }
    ours.insert("id".into(), Value::from(id));
    let mut deployment: Deployment = serde_path_to_error::deserialize(Value::Object(ours))
        .map_err(|e| ConfigError::at(format!("{path}.{}", e.path()), e.into_inner().to_string()))?;
    deployment.revision = revision;
    crate::config::validate_deployment(&format!("{path} ({name})"), &mut deployment)?;
    Ok(Read {
        deployment,
        ignored,
    })
}

/// `read` of a stored row, whose params and info are JSON text.
pub fn read_stored(
    id: &str,
    name: &str,
    params: &str,
    info: &str,
    revision: i64,
    sealer: &Sealer,
) -> Result<Read, ConfigError> {
    let parse = |s: &str| serde_json::from_str::<Map<String, Value>>(s).unwrap_or_default();
    read(id, name, &parse(params), &parse(info), revision, sealer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn secrets_are_sealed_at_rest_and_opened_only_with_the_same_key() {
        let sealer = Sealer::new("sk-master-1234");
        let mut params = obj(json!({
            "model": "openai/gpt-4o",
            "api_key": "sk-provider-secret",
            "aws_session_token": "os.environ/AWS_SESSION_TOKEN",
        }));
        seal_secrets(&mut params, &sealer);
        let stored = params["api_key"].as_str().unwrap();
        assert!(stored.starts_with("enc:v1:"), "{stored}");
        assert!(!stored.contains("sk-provider-secret"));
        assert_eq!(params["aws_session_token"], "os.environ/AWS_SESSION_TOKEN");
        // Sealing twice changes nothing; each seal uses a fresh nonce.
        let again = stored.to_string();
        seal_secrets(&mut params, &sealer);
        assert_eq!(params["api_key"], again.as_str());
        assert_ne!(sealer.seal("x"), sealer.seal("x"));
        assert_eq!(
            sealer.open(&again).unwrap().as_deref(),
            Some("sk-provider-secret")
        );
        assert!(Sealer::new("another-key").open(&again).is_err());
        assert!(!redacted(&params).contains_key("api_key"));
    }

    #[test]
    fn litellm_params_become_a_validated_deployment() {
        let sealer = Sealer::new("k");
        let mut params = obj(json!({
            "model": "anthropic/claude-3-5-haiku-latest",
            "api_key": "sk-ant-x",
            "rpm": 60,
            "timeout": 12.5,
            "tags": ["paid"],
            "max_retries": 3,
        }));
        seal_secrets(&mut params, &sealer);
        let info = obj(json!({"access_groups": ["beta"], "max_input_tokens": 1000}));
        let r = read("m1", "claude", &params, &info, 4, &sealer).unwrap();
        let d = r.deployment;
        assert_eq!(d.provider().name(), "anthropic");
        assert_eq!(d.model, "claude-3-5-haiku-latest");
        assert_eq!(d.resolved_api_key.unwrap().expose(), "sk-ant-x");
        assert_eq!((d.rpm, d.timeout_secs, d.revision), (Some(60), Some(13), 4));
        assert_eq!(d.access_groups, ["beta"]);
        assert_eq!(d.max_input_tokens, Some(1000));
        assert_eq!(r.ignored, ["max_retries"]);
    }

    #[test]
    fn bad_params_are_refused_with_the_field_named() {
        let sealer = Sealer::new("k");
        let e = read(
            "m1",
            "x",
            &obj(json!({"model": "openai/gpt-4o", "rpm": -3})),
            &Map::new(),
            1,
            &sealer,
        )
        .unwrap_err();
        assert!(e.to_string().contains("rpm"), "{e}");
        let e = read(
            "m1",
            "x",
            &obj(json!({"model": "x", "custom_llm_provider": "openai_compatible", "api_base": "not a url"})),
            &Map::new(),
            1,
            &sealer,
        )
        .unwrap_err();
        assert!(e.to_string().contains("api_base"), "{e}");
    }
}
