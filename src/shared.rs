//! Redis, for what replicas share: a key cache in front of the database and
//! the invalidation channel that makes a revoked key die everywhere at once.
//! Every Redis failure is survivable: the cache falls through to the
//! database, and a lost subscription is re-established (then every local
//! cache is flushed, since messages may have been missed).

use std::time::Duration;

use bb8_redis::RedisConnectionManager;
use serde::{Deserialize, Serialize};

use crate::access::KeyInfo;

/// What changed, so caches can drop exactly the affected entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Invalidation {
    /// A key, by its hash (hex).
    Key(String),
    User(String),
    Team(String),
    All,
}

#[derive(Clone)]
pub struct Redis {
    pub pool: bb8::Pool<RedisConnectionManager>,
    pub url: String,
    pub prefix: String,
}

impl Redis {
    pub async fn connect(url: &str, prefix: &str) -> Result<Redis, String> {
        let manager = RedisConnectionManager::new(url).map_err(|e| e.to_string())?;
        let pool = bb8::Pool::builder()
            .max_size(8)
            .connection_timeout(Duration::from_secs(2))
            .build(manager)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Redis {
            pool,
            url: url.to_string(),
            prefix: prefix.to_string(),
        })
    }

    pub fn channel(&self) -> String {
        format!("{}:invalidate", self.prefix)
    }

    fn key_entry(&self, hash_hex: &str) -> String {
        format!("{}:key:{hash_hex}", self.prefix)
    }

    pub async fn ping(&self) -> Result<(), String> {
        let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
        redis::cmd("PING")
            .query_async::<String>(&mut *conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    pub async fn get_key(&self, hash_hex: &str) -> Option<KeyInfo> {
        let mut conn = self.pool.get().await.ok()?;
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.key_entry(hash_hex))
            .query_async(&mut *conn)
            .await
            .ok()?;
        serde_json::from_str(&raw?).ok()
    }

    pub async fn put_key(&self, info: &KeyInfo, ttl: Duration) {
        let Ok(mut conn) = self.pool.get().await else {
            return;
        };
        let Ok(json) = serde_json::to_string(info) else {
            return;
        };
        let _: Result<(), _> = redis::cmd("SET")
            .arg(self.key_entry(&info.id))
            .arg(json)
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .query_async(&mut *conn)
            .await;
    }

    /// Drops cached keys and tells every replica.
    pub async fn invalidate(
        &self,
        what: &Invalidation,
        key_hashes: &[String],
    ) -> Result<(), String> {
        let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
        if !key_hashes.is_empty() {
            let entries: Vec<String> = key_hashes.iter().map(|h| self.key_entry(h)).collect();
            redis::cmd("DEL")
                .arg(entries)
                .query_async::<i64>(&mut *conn)
                .await
                .map_err(|e| e.to_string())?;
        }
        let payload = serde_json::to_string(what).map_err(|e| e.to_string())?;
        redis::cmd("PUBLISH")
            .arg(self.channel())
            .arg(payload)
            .query_async::<i64>(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}
