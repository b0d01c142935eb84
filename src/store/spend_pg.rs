//! The spend batch write on PostgreSQL: a handful of statements per batch,
//! whatever its size, on a connection of its own.
//!
//! Rows go in by binary `COPY … FROM STDIN` (`pg_copy`): PostgreSQL then
//! reads each field with its type's receive function and inserts a page of
//! rows at a time, with one WAL record per page. Sent as
//! `INSERT … SELECT unnest($1), unnest($2), …` (an array per column)
//! instead, it ran a 22-function projection and a heap insert, WAL record
//! included, per row: 6 µs of the server's CPU per row against COPY's 3
//! (100,000 rows of the benchmark's shape, the backend's CPU time). A
//! statement per row, as before that, cost 20 µs. diesel-async has no
//! COPY, hence tokio-postgres here (the client diesel-async itself talks
//! through), as rusqlite is on SQLite.
//!
//! Same semantics as the SQLite path (`spend_sqlite`): rows already
//! recorded are skipped (a batch is tried as a plain COPY first; only when
//! it meets a recorded row is it redone through a temporary table with
//! ON CONFLICT DO NOTHING, `RETURNING` the new ones), then
//! `spend = spend + x` per key, user, team, organization, end user and
//! key×model, each kind one statement taking arrays. The increments of all
//! replicas are serialized by one transaction-scoped advisory lock, taken
//! after the rows are in: two replicas' batches wait on each other there
//! and never deadlock, whatever order their UPDATEs lock rows in (nothing
//! else locks more than one of these rows at a time: budget resets and
//! admin writes are one row per statement). Locking rows first instead
//! (`SELECT … ORDER BY id FOR UPDATE`) wrote every row twice — a lock
//! record, then the update — and was a third of PostgreSQL's work per
//! batch; so are upserts (`ON CONFLICT DO UPDATE` locks the row it meets
//! before updating it), so end users and key×model rows are updated first
//! and only the missing ones inserted.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::SinkExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Transaction};

use super::{now_ms, pg_copy, SpendCommit, SpendLogRow, StoreError};

/// Bytes per CopyData message: the server reads each whole into memory
/// before parsing it, so a batch goes as a stream of modest pieces.
const FRAME: usize = 64 * 1024;

/// The advisory lock the increments are taken under ("tollgate" in ASCII).
const INCREMENTS_LOCK: i64 = 0x746f_6c6c_6761_7465;

/// The spend writer's connection (see `Store::record_spend`): kept between
/// batches, dropped after any error. Dropping it stops its I/O task, so a
/// connection that hangs dies with the batch that found it hanging.
pub struct Writer {
    client: Client,
    io: tokio::task::JoinHandle<()>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.io.abort();
    }
}

impl Writer {
    /// The writer in `slot` if its connection is still open, else a new
    /// one (given `connect_within` to connect). The caller puts it back
    /// after a batch that succeeded: after any error the next batch starts
    /// afresh.
    pub async fn take_or_connect(
        slot: &mut Option<Writer>,
        url: &str,
        connect_within: Duration,
        give_up: Duration,
    ) -> Result<Writer, StoreError> {
        match slot.take() {
            Some(w) if !w.client.is_closed() => Ok(w),
            _ => tokio::time::timeout(connect_within, Writer::connect(url, give_up))
                .await
                .map_err(|_| {
                    StoreError::Slow("the spend writer could not connect in time".into())
                })?,
        }
    }

    /// Connects; the server ends this session's statements and its
    /// transaction's idle waits after `give_up`, the time the gateway
    /// waits for a batch. A connection that went silent mid-transaction
    /// (a NAT or firewall forgot it; the gateway gives up on it and
    /// connects anew) would otherwise keep its transaction open, and the
    /// increments lock with it, until the server's TCP keepalive noticed
    /// — hours — and every replica's spend would wait on it.
    async fn connect(url: &str, give_up: Duration) -> Result<Writer, StoreError> {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        let io = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "the spend writer's connection ended");
            }
        });
        let writer = Writer { client, io };
        let ms = give_up.as_millis();
        writer
            .client
            .batch_execute(&format!(
                "SET statement_timeout = {ms}; SET idle_in_transaction_session_timeout = {ms}"
            ))
            .await?;
        Ok(writer)
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        let Some(db) = e.as_db_error() else {
            // No answer from the server: I/O, a closed connection.
            return StoreError::Unavailable(e.to_string());
        };
        let message = db.message().to_string();
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION {
            StoreError::Duplicate(message)
        } else if code.code().starts_with("08") || code.code().starts_with("57P") {
            // Connection exceptions, and the server shutting down or
            // starting up.
            StoreError::Unavailable(message)
        } else {
            StoreError::Query(message)
        }
    }
}

/// Records a batch in one transaction; see the module comment.
pub async fn record(w: &mut Writer, rows: &[SpendLogRow]) -> Result<SpendCommit, StoreError> {
    // A batch holds rows already recorded only when it is replayed (the
    // spool after a crash between commit and truncation, or a retry whose
    // commit answer was lost). So it first goes in as a plain COPY, and
    // only if that meets a recorded row is the transaction begun again
    // with the rows skipped: inserting them one by one with
    // ON CONFLICT DO NOTHING … RETURNING costs PostgreSQL several times
    // as much per row.
    let tx = w.client.transaction().await?;
    let (tx, mut fresh) = match copy_rows(&tx, "spend_logs", rows).await {
        Ok(()) => (tx, None),
        Err(StoreError::Duplicate(_)) => {
            tx.rollback().await?;
            let tx = w.client.transaction().await?;
            let fresh = insert_new(&tx, rows).await?;
            (tx, Some(fresh))
        }
        Err(e) => return Err(e),
    };
    let mut commit = SpendCommit::default();
    for row in rows {
        if fresh.as_mut().is_none_or(|f| f.remove(&row.request_id)) {
            commit.written += 1;
            commit.add(row);
        } else {
            commit.duplicates += 1;
        }
    }
    // Every row that costs something adds to its key: none, nothing to add.
    if !commit.keys.is_empty() {
        add_spend(&tx, &mut commit).await?;
    }
    tx.commit().await?;
    Ok(commit)
}

/// Streams `rows` into `table` by binary COPY.
async fn copy_rows(
    tx: &Transaction<'_>,
    table: &str,
    rows: &[SpendLogRow],
) -> Result<(), StoreError> {
    let sink = tx
        .copy_in::<_, bytes::Bytes>(&format!(
            "COPY {table} ({}) FROM STDIN (FORMAT binary)",
            pg_copy::COLUMNS
        ))
        .await?;
    let mut sink = std::pin::pin!(sink);
    let mut buf = BytesMut::with_capacity(FRAME + 1024);
    pg_copy::header(&mut buf);
    for row in rows {
        pg_copy::row(&mut buf, row);
        if buf.len() >= FRAME {
            sink.feed(buf.split().freeze()).await?;
            buf.reserve(FRAME + 1024);
        }
    }
    pg_copy::trailer(&mut buf);
    sink.feed(buf.freeze()).await?;
    sink.as_mut().finish().await?;
    Ok(())
}

/// Inserts the rows not recorded yet; returns their request ids.
async fn insert_new(
    tx: &Transaction<'_>,
    rows: &[SpendLogRow],
) -> Result<HashSet<String>, StoreError> {
    tx.batch_execute(
        "CREATE TEMPORARY TABLE spend_replay (LIKE spend_logs INCLUDING DEFAULTS) ON COMMIT DROP",
    )
    .await?;
    copy_rows(tx, "spend_replay", rows).await?;
    let sql = format!(
        "INSERT INTO spend_logs ({c}) SELECT {c} FROM spend_replay \
         ON CONFLICT DO NOTHING RETURNING request_id",
        c = pg_copy::COLUMNS
    );
    let new = tx.query(&sql, &[]).await?;
    Ok(new.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// The batch's increments, under the increments lock.
async fn add_spend(tx: &Transaction<'_>, commit: &mut SpendCommit) -> Result<(), StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&INCREMENTS_LOCK])
        .await?;
    add_to(tx, "keys", "token", &commit.keys).await?;
    add_to(tx, "users", "user_id", &commit.users).await?;
    add_to(tx, "teams", "team_id", &commit.teams).await?;
    // An organization's spend is its teams': summed per organization here,
    // then written like the rest.
    if !commit.teams.is_empty() {
        let teams: Vec<&str> = commit.teams.keys().map(String::as_str).collect();
        let owners = tx
            .query(
                "SELECT team_id, organization_id FROM teams \
                 WHERE team_id = ANY($1::text[]) AND organization_id IS NOT NULL",
                &[&teams],
            )
            .await?;
        for owner in &owners {
            let (team, org): (&str, String) = (owner.get(0), owner.get(1));
            if let Some(x) = commit.teams.get(team) {
                *commit.orgs.entry(org).or_insert(0.0) += *x;
            }
        }
        add_to(tx, "organizations", "organization_id", &commit.orgs).await?;
    }
    if !commit.customers.is_empty() {
        // End users exist from their first request, as in LiteLLM.
        let (ids, xs) = columns(&commit.customers);
        let found = tx
            .query(
                "UPDATE customers SET spend = customers.spend + v.x \
                 FROM unnest($1::text[], $2::float8[]) AS v(id, x) \
                 WHERE customers.user_id = v.id RETURNING customers.user_id",
                &[&ids, &xs],
            )
            .await?;
        if found.len() < ids.len() {
            let found: HashSet<&str> = found.iter().map(|r| r.get(0)).collect();
            let (ids, xs): (Vec<&str>, Vec<f64>) = ids
                .iter()
                .zip(&xs)
                .filter(|(id, _)| !found.contains(**id))
                .map(|(id, x)| (*id, *x))
                .unzip();
            // Another writer cannot add them meanwhile (the advisory lock),
            // but an admin may: then this adds to what it made.
            tx.execute(
                "INSERT INTO customers (user_id, spend, created_at, updated_at) \
                 SELECT id, x, $3, $3 FROM unnest($1::text[], $2::float8[]) AS v(id, x) \
                 ON CONFLICT (user_id) DO UPDATE SET spend = customers.spend + excluded.spend",
                &[&ids, &xs, &now_ms()],
            )
            .await?;
        }
    }
    if !commit.key_models.is_empty() {
        let mut tokens = Vec::new();
        let mut models = Vec::new();
        let mut xs = Vec::new();
        for (token, per_model) in &commit.key_models {
            for (model, x) in per_model {
                tokens.push(token.as_str());
                models.push(model.as_str());
                xs.push(*x);
            }
        }
        let found = tx
            .query(
                "UPDATE key_model_spend SET spend = key_model_spend.spend + v.x \
                 FROM unnest($1::text[], $2::text[], $3::float8[]) AS v(t, m, x) \
                 WHERE key_model_spend.token = v.t AND key_model_spend.model = v.m \
                 RETURNING key_model_spend.token, key_model_spend.model",
                &[&tokens, &models, &xs],
            )
            .await?;
        if found.len() < tokens.len() {
            let found: HashSet<(&str, &str)> = found.iter().map(|r| (r.get(0), r.get(1))).collect();
            let mut missing = (Vec::new(), Vec::new(), Vec::new());
            for ((t, m), x) in tokens.iter().zip(&models).zip(&xs) {
                if !found.contains(&(*t, *m)) {
                    missing.0.push(*t);
                    missing.1.push(*m);
                    missing.2.push(*x);
                }
            }
            tx.execute(
                "INSERT INTO key_model_spend (token, model, spend) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::float8[]) AS v(t, m, x) \
                 ON CONFLICT (token, model) DO UPDATE SET spend = key_model_spend.spend + excluded.spend",
                &[&missing.0, &missing.1, &missing.2],
            )
            .await?;
        }
    }
    Ok(())
}

/// `spend = spend + x` for each id of `table` (under the increments lock).
async fn add_to(
    tx: &Transaction<'_>,
    table: &str,
    id: &str,
    by_id: &BTreeMap<String, f64>,
) -> Result<(), StoreError> {
    if by_id.is_empty() {
        return Ok(());
    }
    let (ids, xs) = columns(by_id);
    tx.execute(
        &format!(
            "UPDATE {table} SET spend = {table}.spend + v.x \
             FROM unnest($1::text[], $2::float8[]) AS v(id, x) WHERE {table}.{id} = v.id"
        ),
        &[&ids, &xs],
    )
    .await?;
    Ok(())
}

fn columns(by_id: &BTreeMap<String, f64>) -> (Vec<&str>, Vec<f64>) {
    by_id.iter().map(|(id, x)| (id.as_str(), *x)).unzip()
}
