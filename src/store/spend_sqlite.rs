//! The spend batch write on SQLite, through rusqlite on a connection of its
//! own.
//!
//! Every request becomes a spend log row, so this insert runs at the
//! gateway's full rate on the same cores that serve requests. Through
//! diesel each 22-column row walked the query AST to bind its values
//! (about 2.6 µs a row, more than SQLite's own B-tree work); a prepared
//! statement bound column by column costs a fraction of that. The
//! statements are parsed once per connection (rusqlite's statement cache)
//! and the whole transaction runs on one blocking thread. The connection is
//! long-lived: a SQLite connection keeps its page cache only while no
//! other connection writes, and this one is the only spend writer.
//!
//! Same semantics as the PostgreSQL path (`record_batch!`): rows already
//! recorded are skipped (the insert's change count says which were new),
//! then `spend = spend + x` per key, user, team, organization, end user and
//! key×model, each kind in sorted id order.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};

use super::{now_ms, SpendCommit, SpendLogRow, StoreError};

/// Pragmas of the spend writer's connection. Its page cache outlives each
/// batch, so the index pages a batch touches are not read again for the
/// next one (16 MB: the index leaves of thousands of active keys, and the
/// right edges the rest is appended to); a WAL checkpoint every 10,000
/// pages instead of 1,000 copies a page that every batch rewrites (a busy
/// key's index leaf) once per ten batches.
const PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
    PRAGMA foreign_keys = ON; PRAGMA cache_size = -16384; PRAGMA wal_autocheckpoint = 10000;";

const INSERT_ROW: &str = "INSERT INTO spend_logs (request_id, call_type, api_key, key_alias, \
    spend, prompt_tokens, completion_tokens, total_tokens, start_time, end_time, \
    completion_start_time, model, model_group, model_id, api_base, user_id, team_id, \
    end_user, metadata, cache_hit, status, usage_estimated) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
    ?18, ?19, ?20, ?21, ?22) ON CONFLICT DO NOTHING";

/// Opens the writer's connection on the database file (created and
/// migrated already by the store).
pub fn open(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(busy_timeout)?;
    conn.execute_batch(PRAGMAS)?;
    conn.set_prepared_statement_cache_capacity(16);
    Ok(conn)
}

/// Records a batch in one transaction; see the module comment.
pub fn record(conn: &mut Connection, rows: &[SpendLogRow]) -> Result<SpendCommit, StoreError> {
    // IMMEDIATE: take the write lock up front (waiting out busy_timeout),
    // rather than fail on upgrading a read lock mid-transaction.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(to_store)?;
    let commit = write(&tx, rows).map_err(to_store)?;
    tx.commit().map_err(to_store)?;
    Ok(commit)
}

fn write(tx: &rusqlite::Transaction<'_>, rows: &[SpendLogRow]) -> rusqlite::Result<SpendCommit> {
    let mut commit = SpendCommit::default();
    {
        let mut insert = tx.prepare_cached(INSERT_ROW)?;
        for r in rows {
            let inserted = insert.execute(params![
                r.request_id,
                r.call_type,
                r.api_key,
                r.key_alias,
                r.spend,
                r.prompt_tokens,
                r.completion_tokens,
                r.total_tokens,
                r.start_time,
                r.end_time,
                r.completion_start_time,
                r.model,
                r.model_group,
                r.model_id,
                r.api_base,
                r.user_id,
                r.team_id,
                r.end_user,
                r.metadata,
                r.cache_hit,
                r.status,
                r.usage_estimated,
            ])?;
            if inserted > 0 {
                commit.written += 1;
                commit.add(r);
            } else {
                commit.duplicates += 1;
            }
        }
    }
    add_to(
        tx,
        "UPDATE keys SET spend = spend + ?1 WHERE token = ?2",
        &commit.keys,
    )?;
    add_to(
        tx,
        "UPDATE users SET spend = spend + ?1 WHERE user_id = ?2",
        &commit.users,
    )?;
    add_to(
        tx,
        "UPDATE teams SET spend = spend + ?1 WHERE team_id = ?2",
        &commit.teams,
    )?;
    // An organization's spend is its teams': summed per organization here,
    // then written in organization id order like the rest.
    {
        let mut owner =
            tx.prepare_cached("SELECT organization_id FROM teams WHERE team_id = ?1")?;
        for (team, x) in &commit.teams {
            let org: Option<Option<String>> = owner
                .query_row([team], |row| row.get(0))
                .map(Some)
                .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
            if let Some(Some(org)) = org {
                *commit.orgs.entry(org).or_insert(0.0) += *x;
            }
        }
    }
    add_to(
        tx,
        "UPDATE organizations SET spend = spend + ?1 WHERE organization_id = ?2",
        &commit.orgs,
    )?;
    if !commit.customers.is_empty() {
        // End users exist from their first request, as in LiteLLM.
        let now = now_ms();
        let mut upsert = tx.prepare_cached(
            "INSERT INTO customers (user_id, spend, created_at, updated_at) VALUES (?1, ?2, ?3, ?3) \
             ON CONFLICT (user_id) DO UPDATE SET spend = spend + excluded.spend",
        )?;
        for (id, x) in &commit.customers {
            upsert.execute(params![id, x, now])?;
        }
    }
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO key_model_spend (token, model, spend) VALUES (?1, ?2, ?3) \
             ON CONFLICT (token, model) DO UPDATE SET spend = spend + excluded.spend",
        )?;
        for (token, models) in &commit.key_models {
            for (model, x) in models {
                upsert.execute(params![token, model, x])?;
            }
        }
    }
    Ok(commit)
}

/// `spend = spend + x` for each id, in sorted id order.
fn add_to(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    by_id: &BTreeMap<String, f64>,
) -> rusqlite::Result<()> {
    if by_id.is_empty() {
        return Ok(());
    }
    let mut update = tx.prepare_cached(sql)?;
    for (id, x) in by_id {
        update.execute(params![x, id])?;
    }
    Ok(())
}

fn to_store(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::CannotOpen
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::ReadOnly,
        ) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Query(e.to_string()),
    }
}
