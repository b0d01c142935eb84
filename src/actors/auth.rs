//! AuthActor: owns the table of known keys and answers "who is this?".
//!
//! Handlers hash the presented token on their own thread and send only the
//! SHA-256 digest, so raw keys never cross into actor state or logs.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::error::GatewayError;
use crate::metrics::ActorMeter;

pub type KeyHash = [u8; 32];

pub fn hash_key(token: &str) -> KeyHash {
    Sha256::digest(token.as_bytes()).into()
}

/// What the gateway knows about an authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyInfo {
    /// Non-secret identifier: the first 16 hex digits of the key's hash.
    pub id: String,
    pub alias: Option<String>,
    /// Allowed model groups; empty means all. Supports `*` and `prefix/*`.
    pub models: Vec<String>,
    pub rpm_limit: Option<u32>,
    pub is_master: bool,
}

impl KeyInfo {
    pub fn may_use(&self, model: &str) -> bool {
        self.is_master
            || self.models.is_empty()
            || self
                .models
                .iter()
                .any(|pattern| model_matches(pattern, model))
    }

    /// Name to show in logs: the alias, or the non-secret id.
    pub fn display_name(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.id)
    }
}

/// `*` matches everything, `openai/*` any name starting with `openai/`,
/// anything else must match exactly.
pub fn model_matches(pattern: &str, model: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => model.starts_with(prefix),
        None => pattern == model,
    }
}

fn short_id(hash: &KeyHash) -> String {
    hex::encode(&hash[..8])
}

pub struct AuthActor {
    master: Option<KeyHash>,
    master_info: Arc<KeyInfo>,
    keys: HashMap<KeyHash, Arc<KeyInfo>>,
    meter: ActorMeter,
}

impl AuthActor {
    pub fn new(config: &Config, meter: ActorMeter) -> Self {
        let master = config
            .resolved_master_key
            .as_ref()
            .map(|k| hash_key(k.expose()));
        let master_info = Arc::new(KeyInfo {
            id: master.as_ref().map(short_id).unwrap_or_default(),
            alias: Some("master".into()),
            models: Vec::new(),
            rpm_limit: None,
            is_master: true,
        });
        let keys = config
            .keys
            .iter()
            .filter_map(|k| {
                let hash = hash_key(k.resolved.as_ref()?.expose());
                Some((
                    hash,
                    Arc::new(KeyInfo {
                        id: short_id(&hash),
                        alias: k.alias.clone(),
                        models: k.models.clone(),
                        rpm_limit: k.rpm_limit,
                        is_master: false,
                    }),
                ))
            })
            .collect();
        AuthActor {
            master,
            master_info,
            keys,
            meter,
        }
    }
}

impl Actor for AuthActor {
    type Context = Context<Self>;
}

impl Supervised for AuthActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.meter.restarted();
    }
}

#[derive(Message)]
#[rtype(result = "Result<Arc<KeyInfo>, GatewayError>")]
pub struct Authenticate {
    pub key_hash: KeyHash,
}

impl Handler<Authenticate> for AuthActor {
    type Result = Result<Arc<KeyInfo>, GatewayError>;

    fn handle(&mut self, msg: Authenticate, _: &mut Context<Self>) -> Self::Result {
        let _t = self.meter.handling();
        if let Some(master) = &self.master {
            if bool::from(master.ct_eq(&msg.key_hash)) {
                return Ok(self.master_info.clone());
            }
        }
        // A HashMap probe on a SHA-256 digest reveals nothing usable about
        // other keys, so it needs no constant-time treatment.
        self.keys
            .get(&msg.key_hash)
            .cloned()
            .ok_or(GatewayError::InvalidKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(model_matches("*", "anything"));
        assert!(model_matches("openai/*", "openai/gpt-4o"));
        assert!(!model_matches("openai/*", "anthropic/claude"));
        assert!(model_matches("gpt-4o", "gpt-4o"));
        assert!(!model_matches("gpt-4o", "gpt-4o-mini"));
    }

    #[test]
    fn empty_model_list_allows_all_and_master_allows_all() {
        let mut k = KeyInfo {
            id: "x".into(),
            alias: None,
            models: vec![],
            rpm_limit: None,
            is_master: false,
        };
        assert!(k.may_use("m"));
        k.models = vec!["a".into()];
        assert!(!k.may_use("m"));
        k.is_master = true;
        assert!(k.may_use("m"));
    }
}
