//! Spend: the batched, idempotent write of settlements, the spend log
//! queries, and budget resets.

use std::collections::BTreeMap;

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::models::{CustomerRow, SpendLogRow};
use super::schema::{customers, key_model_spend, spend_logs};
use super::{pool_error, Pools, SqliteConn, Store, StoreError};

/// Least time a spend batch write is given.
const SPEND_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// How far a row's request id time may be from its start_time: both are
/// read from the system clock as the request starts, but a UUIDv7
/// generator keeps its ids increasing when the clock steps back.
const V7_SLACK_MS: i64 = 3_600_000;

/// The spend log's request id for a request started at `ms`: a UUIDv7 of
/// that very millisecond, so that [`v7_floor`] bounds it.
pub fn spend_log_id(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0);
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, (ms % 1000) as u32 * 1_000_000);
    uuid::Uuid::new_v7(ts).to_string()
}

/// The least request id (a UUIDv7 as text, `tttttttt-tttt-7…`) of a
/// request started at `ms`: ids of later requests sort above it, of
/// earlier ones below. Spend log rows are listed and bounded in time by
/// their request id, which is the primary key: there is no start_time
/// index to keep up on every insert.
pub(crate) fn v7_floor(ms: i64) -> String {
    let ms = ms.clamp(0, (1 << 48) - 1);
    format!("{:08x}-{:04x}", ms >> 16, ms & 0xffff)
}

/// What one committed batch changed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SpendCommit {
    /// Rows written now.
    pub written: usize,
    /// Rows already recorded (a replayed spool segment, say).
    pub duplicates: usize,
    /// Spend added per key (hash), user, team and end user.
    pub keys: BTreeMap<String, f64>,
    pub users: BTreeMap<String, f64>,
    pub teams: BTreeMap<String, f64>,
    pub customers: BTreeMap<String, f64>,
    /// Spend added per organization (through its teams).
    pub orgs: BTreeMap<String, f64>,
    /// Key hash → model group → spend added.
    pub key_models: BTreeMap<String, BTreeMap<String, f64>>,
}

impl SpendCommit {
    pub(crate) fn add(&mut self, row: &SpendLogRow) {
        if row.spend == 0.0 {
            return;
        }
        // Most rows of a batch share their key, user, team and model:
        // look up first, copy the id only the first time it is seen.
        fn add_to(map: &mut BTreeMap<String, f64>, id: &str, x: f64) {
            match map.get_mut(id) {
                Some(v) => *v += x,
                None => {
                    map.insert(id.to_string(), x);
                }
            }
        }
        add_to(&mut self.keys, &row.api_key, row.spend);
        if let Some(u) = &row.user_id {
            add_to(&mut self.users, u, row.spend);
        }
        if let Some(t) = &row.team_id {
            add_to(&mut self.teams, t, row.spend);
        }
        if let Some(e) = &row.end_user {
            add_to(&mut self.customers, e, row.spend);
        }
        match self.key_models.get_mut(&row.api_key) {
            Some(models) => add_to(models, &row.model_group, row.spend),
            None => {
                let models = BTreeMap::from([(row.model_group.clone(), row.spend)]);
                self.key_models.insert(row.api_key.clone(), models);
            }
        }
    }
}

/// Filters of `/spend/logs` (LiteLLM's names).
#[derive(Debug, Default, Clone)]
pub struct SpendFilter {
    pub api_key: Option<String>,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub end_user: Option<String>,
    pub request_id: Option<String>,
    /// Unix ms, inclusive.
    pub start_ms: Option<i64>,
    /// Unix ms, exclusive.
    pub end_ms: Option<i64>,
}

impl Store {
    /// Records a batch of settlements, once each, in one transaction.
    pub async fn record_spend(&self, rows: Vec<SpendLogRow>) -> Result<SpendCommit, StoreError> {
        let pools = self.pools();
        // Thousands of rows may wait after an outage: a batch gets far
        // longer than a lookup before it counts as the database failing.
        let timeout = self.inner.timeout.max(SPEND_WRITE_TIMEOUT);
        self.guarded_for(timeout, true, async {
            match &pools {
                Pools::Postgres(_) => {
                    let mut slot = self.inner.pg_spend_writer.lock().await;
                    let mut writer = super::spend_pg::Writer::take_or_connect(
                        &mut slot,
                        &self.inner.url,
                        self.inner.timeout,
                        timeout,
                    )
                    .await?;
                    let result = super::spend_pg::record(&mut writer, &rows).await;
                    // Whatever went wrong, the next batch starts afresh.
                    if result.is_ok() {
                        *slot = Some(writer);
                    }
                    result
                }
                Pools::Sqlite(_) => {
                    // Always the same connection, not the pool's next one:
                    // a connection's page cache is dropped whenever another
                    // connection wrote since its last transaction, so
                    // taking turns made every batch read its index pages
                    // back from disk (most of SQLite's cost per row).
                    let mut writer = self.inner.spend_writer.lock().await;
                    let conn = writer.take();
                    let path = super::sqlite_path(&self.inner.url).to_string();
                    let (conn, result) = tokio::task::spawn_blocking(move || {
                        let mut conn = match conn {
                            Some(c) => c,
                            None => match super::spend_sqlite::open(
                                std::path::Path::new(&path),
                                super::SQLITE_BUSY_TIMEOUT,
                            ) {
                                Ok(c) => c,
                                Err(e) => {
                                    return (None, Err(StoreError::Unavailable(e.to_string())))
                                }
                            },
                        };
                        let result = super::spend_sqlite::record(&mut conn, &rows);
                        // Whatever went wrong, the next batch starts afresh.
                        (result.is_ok().then_some(conn), result)
                    })
                    .await
                    .map_err(|e| StoreError::Query(format!("the spend writer stopped: {e}")))?;
                    *writer = conn;
                    result
                }
            }
        })
        .await
    }

    /// Spend log rows matching `filter`, newest first.
    pub async fn spend_logs(
        &self,
        filter: &SpendFilter,
        limit: i64,
    ) -> Result<Vec<SpendLogRow>, StoreError> {
        macro_rules! filtered {
            () => {{
                let mut q = spend_logs::table.into_boxed();
                if let Some(k) = &filter.api_key {
                    q = q.filter(spend_logs::api_key.eq(k));
                }
                if let Some(u) = &filter.user_id {
                    q = q.filter(spend_logs::user_id.eq(u));
                }
                if let Some(t) = &filter.team_id {
                    q = q.filter(spend_logs::team_id.eq(t));
                }
                if let Some(e) = &filter.end_user {
                    q = q.filter(spend_logs::end_user.eq(e));
                }
                if let Some(r) = &filter.request_id {
                    q = q.filter(spend_logs::request_id.eq(r));
                }
                // The exact bound is on start_time; the request id bound
                // (a little wider) is what lets the primary key find them.
                if let Some(s) = filter.start_ms {
                    q = q
                        .filter(spend_logs::start_time.ge(s))
                        .filter(spend_logs::request_id.ge(v7_floor(s - V7_SLACK_MS)));
                }
                if let Some(e) = filter.end_ms {
                    q = q
                        .filter(spend_logs::start_time.lt(e))
                        .filter(spend_logs::request_id.lt(v7_floor(e.saturating_add(V7_SLACK_MS))));
                }
                q
            }};
        }
        with_conn!(self, |conn| Ok(filtered!()
            .select(SpendLogRow::as_select())
            .order(spend_logs::request_id.desc())
            .limit(limit)
            .load(conn)
            .await?))
    }

    /// A key's spend per model group.
    pub async fn key_model_spend(&self, token: &str) -> Result<Vec<(String, f64)>, StoreError> {
        with_conn!(self, |conn| Ok(key_model_spend::table
            .filter(key_model_spend::token.eq(token))
            .select((key_model_spend::model, key_model_spend::spend))
            .load(conn)
            .await?))
    }

    pub async fn get_customer(&self, user_id: &str) -> Result<Option<CustomerRow>, StoreError> {
        with_conn!(self, |conn| Ok(customers::table
            .find(user_id)
            .select(CustomerRow::as_select())
            .first(conn)
            .await
            .optional()?))
    }
}

#[cfg(test)]
mod tests {
    use super::{spend_log_id as v7_at, v7_floor};

    #[test]
    fn a_request_id_sorts_within_the_millisecond_it_started() {
        for ms in [0, 1, 65_535, 65_536, 1_764_460_000_123, (1 << 48) - 2] {
            let id = v7_at(ms);
            assert!(v7_floor(ms) <= id, "{id} below the floor of {ms}");
            assert!(id < v7_floor(ms + 1), "{id} above the floor of {}", ms + 1);
            assert!(v7_floor(ms - 1) < v7_floor(ms) || ms == 0);
        }
        // Out of range bounds clamp rather than wrap.
        assert_eq!(v7_floor(-5), v7_floor(0));
        assert!(v7_floor(i64::MAX) > v7_at(1_764_460_000_123));
    }
}
