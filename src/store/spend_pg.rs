//! The spend batch write on PostgreSQL: a handful of statements per batch,
//! whatever its size.
//!
//! Rows go in as `INSERT … SELECT unnest($1), unnest($2), …` (one array per
//! column; set-returning functions in the select list are read in step,
//! row by row, where `FROM unnest(…)` first copies every row into a
//! tuplestore)
//! and the spend increments as one statement per kind (key, user, team,
//! organization, end user, key×model), each taking arrays. Written a
//! statement per row and per key instead (as multi-row VALUES of up to
//! 200 rows and one UPDATE per key), PostgreSQL spent about 20 µs of its
//! own CPU per request parsing, planning and round-tripping them — more
//! than the gateway's whole request path — and the gateway built each
//! row's query by walking diesel's AST.
//!
//! Same semantics as the SQLite path (`spend_sqlite`): rows already
//! recorded are skipped (a batch is tried as plain INSERTs first; only
//! when one meets a recorded row is it redone skipping them, `RETURNING`
//! the new ones), then
//! `spend = spend + x` per key, user, team, organization, end user and
//! key×model. The increments of all replicas are serialized by one
//! transaction-scoped advisory lock, taken after the rows are in: two
//! replicas' batches wait on each other there and never deadlock, whatever
//! order their UPDATEs lock rows in (nothing else locks more than one of
//! these rows at a time: budget resets and admin writes are one row per
//! statement). Locking rows first instead (`SELECT … ORDER BY id FOR
//! UPDATE`) wrote every row twice — a lock record, then the update — and
//! was a third of PostgreSQL's work per batch; so are upserts
//! (`ON CONFLICT DO UPDATE` locks the row it meets before updating it), so
//! end users and key×model rows are updated first and only the missing ones
//! inserted.

use std::collections::{BTreeMap, HashSet};

use diesel::sql_types::{Array, BigInt, Bool, Double, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::{now_ms, SpendCommit, SpendLogRow, StoreError};

/// Rows per INSERT. Small enough that the statement's arrays (the
/// metadata column's is the largest) stay below the size at which the
/// server's allocator maps fresh memory for them: with 5,000 rows, page
/// faults and page zeroing were a tenth of PostgreSQL's CPU for the batch.
const CHUNK: usize = 500;

/// The rows' INSERT, followed by `$tail`: one array per column.
macro_rules! insert_rows {
    ($tail:literal) => {
        concat!(
            "INSERT INTO spend_logs (request_id, call_type, api_key, key_alias, \
            spend, prompt_tokens, completion_tokens, total_tokens, start_time, end_time, \
            completion_start_time, model, model_group, model_id, api_base, user_id, team_id, \
            end_user, metadata, cache_hit, status, usage_estimated) \
            SELECT unnest($1::text[]), unnest($2::text[]), unnest($3::text[]), unnest($4::text[]), \
            unnest($5::float8[]), unnest($6::int8[]), unnest($7::int8[]), unnest($8::int8[]), \
            unnest($9::int8[]), unnest($10::int8[]), unnest($11::int8[]), unnest($12::text[]), \
            unnest($13::text[]), unnest($14::text[]), unnest($15::text[]), unnest($16::text[]), \
            unnest($17::text[]), unnest($18::text[]), unnest($19::text[]), unnest($20::bool[]), \
            unnest($21::text[]), unnest($22::bool[])",
            $tail
        )
    };
}

/// How a chunk of rows goes in.
#[derive(Clone, Copy)]
enum Insert {
    /// Every row is new, or the statement fails (unique violation).
    AllNew,
    /// Rows already recorded are skipped; the new ones' ids come back.
    SkipRecorded,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = Text)]
    id: String,
}

/// The advisory lock the increments are taken under ("tollgate" in ASCII).
const INCREMENTS_LOCK: i64 = 0x746f_6c6c_6761_7465;

#[derive(QueryableByName)]
struct TokenModel {
    #[diesel(sql_type = Text)]
    token: String,
    #[diesel(sql_type = Text)]
    model: String,
}

#[derive(QueryableByName)]
struct TeamOrg {
    #[diesel(sql_type = Text)]
    team_id: String,
    #[diesel(sql_type = Text)]
    organization_id: String,
}

/// Records a batch; the caller runs it in one transaction.
pub async fn record(
    conn: &mut AsyncPgConnection,
    rows: &[SpendLogRow],
) -> Result<SpendCommit, StoreError> {
    // A batch holds rows already recorded only when it is replayed (the
    // spool after a crash between commit and truncation, or a retry whose
    // commit answer was lost). So it first goes in as plain INSERTs under
    // a savepoint, and only if one meets a recorded row is it redone with
    // ON CONFLICT DO NOTHING … RETURNING: that statement's speculative
    // insertion and returned ids cost PostgreSQL about 40 % more per row.
    let all_new = conn
        .transaction(async |conn| {
            for chunk in rows.chunks(CHUNK) {
                insert_rows(conn, chunk, Insert::AllNew).await?;
            }
            Ok::<_, StoreError>(())
        })
        .await;
    let mut fresh: Option<HashSet<String>> = match all_new {
        Ok(()) => None,
        Err(StoreError::Duplicate(_)) => {
            let mut fresh = HashSet::with_capacity(rows.len());
            for chunk in rows.chunks(CHUNK) {
                fresh.extend(insert_rows(conn, chunk, Insert::SkipRecorded).await?);
            }
            Some(fresh)
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
    if commit.keys.is_empty() {
        return Ok(commit);
    }
    diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
        .bind::<BigInt, _>(INCREMENTS_LOCK)
        .execute(conn)
        .await?;
    add_to(conn, "keys", "token", &commit.keys).await?;
    add_to(conn, "users", "user_id", &commit.users).await?;
    add_to(conn, "teams", "team_id", &commit.teams).await?;
    // An organization's spend is its teams': summed per organization here,
    // then written like the rest.
    if !commit.teams.is_empty() {
        let teams: Vec<&str> = commit.teams.keys().map(String::as_str).collect();
        let owners: Vec<TeamOrg> = diesel::sql_query(
            "SELECT team_id, organization_id FROM teams \
             WHERE team_id = ANY($1) AND organization_id IS NOT NULL",
        )
        .bind::<Array<Text>, _>(teams)
        .load(conn)
        .await?;
        for TeamOrg {
            team_id,
            organization_id,
        } in owners
        {
            if let Some(x) = commit.teams.get(&team_id) {
                *commit.orgs.entry(organization_id).or_insert(0.0) += *x;
            }
        }
        let orgs = std::mem::take(&mut commit.orgs);
        add_to(conn, "organizations", "organization_id", &orgs).await?;
        commit.orgs = orgs;
    }
    if !commit.customers.is_empty() {
        // End users exist from their first request, as in LiteLLM.
        let (ids, xs) = columns(&commit.customers);
        let found: Vec<Id> = diesel::sql_query(
            "UPDATE customers SET spend = customers.spend + v.x \
             FROM unnest($1::text[], $2::float8[]) AS v(id, x) \
             WHERE customers.user_id = v.id RETURNING customers.user_id AS id",
        )
        .bind::<Array<Text>, _>(&ids)
        .bind::<Array<Double>, _>(&xs)
        .load(conn)
        .await?;
        if found.len() < ids.len() {
            let found: HashSet<String> = found.into_iter().map(|i| i.id).collect();
            let (ids, xs): (Vec<&str>, Vec<f64>) = ids
                .iter()
                .zip(&xs)
                .filter(|(id, _)| !found.contains(**id))
                .map(|(id, x)| (*id, *x))
                .unzip();
            // Another writer cannot add them meanwhile (the advisory lock),
            // but an admin may: then this adds to what it made.
            diesel::sql_query(
                "INSERT INTO customers (user_id, spend, created_at, updated_at) \
                 SELECT id, x, $3, $3 FROM unnest($1::text[], $2::float8[]) AS v(id, x) \
                 ON CONFLICT (user_id) DO UPDATE SET spend = customers.spend + excluded.spend",
            )
            .bind::<Array<Text>, _>(ids)
            .bind::<Array<Double>, _>(xs)
            .bind::<BigInt, _>(now_ms())
            .execute(conn)
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
        let found: Vec<TokenModel> = diesel::sql_query(
            "UPDATE key_model_spend SET spend = key_model_spend.spend + v.x \
             FROM unnest($1::text[], $2::text[], $3::float8[]) AS v(t, m, x) \
             WHERE key_model_spend.token = v.t AND key_model_spend.model = v.m \
             RETURNING key_model_spend.token, key_model_spend.model",
        )
        .bind::<Array<Text>, _>(&tokens)
        .bind::<Array<Text>, _>(&models)
        .bind::<Array<Double>, _>(&xs)
        .load(conn)
        .await?;
        if found.len() < tokens.len() {
            let found: HashSet<(String, String)> =
                found.into_iter().map(|r| (r.token, r.model)).collect();
            let mut missing = (Vec::new(), Vec::new(), Vec::new());
            for ((t, m), x) in tokens.iter().zip(&models).zip(&xs) {
                if !found.contains(&(t.to_string(), m.to_string())) {
                    missing.0.push(*t);
                    missing.1.push(*m);
                    missing.2.push(*x);
                }
            }
            diesel::sql_query(
                "INSERT INTO key_model_spend (token, model, spend) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::float8[]) AS v(t, m, x) \
                 ON CONFLICT (token, model) DO UPDATE SET spend = key_model_spend.spend + excluded.spend",
            )
            .bind::<Array<Text>, _>(missing.0)
            .bind::<Array<Text>, _>(missing.1)
            .bind::<Array<Double>, _>(missing.2)
            .execute(conn)
            .await?;
        }
    }
    Ok(commit)
}

/// Inserts a chunk of rows; with `SkipRecorded`, returns the request ids
/// of those that were not recorded yet.
async fn insert_rows(
    conn: &mut AsyncPgConnection,
    rows: &[SpendLogRow],
    how: Insert,
) -> Result<Vec<String>, StoreError> {
    fn col<'a, T>(rows: &'a [SpendLogRow], f: impl Fn(&'a SpendLogRow) -> T) -> Vec<T> {
        rows.iter().map(f).collect()
    }
    let sql = match how {
        Insert::AllNew => insert_rows!(""),
        Insert::SkipRecorded => insert_rows!(" ON CONFLICT DO NOTHING RETURNING request_id AS id"),
    };
    let query = diesel::sql_query(sql)
        .bind::<Array<Text>, _>(col(rows, |r| r.request_id.as_str()))
        .bind::<Array<Text>, _>(col(rows, |r| &*r.call_type))
        .bind::<Array<Text>, _>(col(rows, |r| r.api_key.as_str()))
        .bind::<Array<Nullable<Text>>, _>(col(rows, |r| r.key_alias.as_deref()))
        .bind::<Array<Double>, _>(col(rows, |r| r.spend))
        .bind::<Array<BigInt>, _>(col(rows, |r| r.prompt_tokens))
        .bind::<Array<BigInt>, _>(col(rows, |r| r.completion_tokens))
        .bind::<Array<BigInt>, _>(col(rows, |r| r.total_tokens))
        .bind::<Array<BigInt>, _>(col(rows, |r| r.start_time))
        .bind::<Array<BigInt>, _>(col(rows, |r| r.end_time))
        .bind::<Array<Nullable<BigInt>>, _>(col(rows, |r| r.completion_start_time))
        .bind::<Array<Text>, _>(col(rows, |r| r.model.as_str()))
        .bind::<Array<Text>, _>(col(rows, |r| r.model_group.as_str()))
        .bind::<Array<Text>, _>(col(rows, |r| r.model_id.as_str()))
        .bind::<Array<Text>, _>(col(rows, |r| r.api_base.as_str()))
        .bind::<Array<Nullable<Text>>, _>(col(rows, |r| r.user_id.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(col(rows, |r| r.team_id.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(col(rows, |r| r.end_user.as_deref()))
        .bind::<Array<Text>, _>(col(rows, |r| r.metadata.as_str()))
        .bind::<Array<Bool>, _>(col(rows, |r| r.cache_hit))
        .bind::<Array<Text>, _>(col(rows, |r| &*r.status))
        .bind::<Array<Bool>, _>(col(rows, |r| r.usage_estimated));
    Ok(match how {
        Insert::AllNew => {
            query.execute(conn).await?;
            Vec::new()
        }
        Insert::SkipRecorded => {
            let ids: Vec<Id> = query.load(conn).await?;
            ids.into_iter().map(|i| i.id).collect()
        }
    })
}

/// `spend = spend + x` for each id of `table` (under the increments lock).
async fn add_to(
    conn: &mut AsyncPgConnection,
    table: &str,
    id: &str,
    by_id: &BTreeMap<String, f64>,
) -> Result<(), StoreError> {
    if by_id.is_empty() {
        return Ok(());
    }
    let (ids, xs) = columns(by_id);
    diesel::sql_query(format!(
        "UPDATE {table} SET spend = {table}.spend + v.x \
         FROM unnest($1::text[], $2::float8[]) AS v(id, x) WHERE {table}.{id} = v.id"
    ))
    .bind::<Array<Text>, _>(ids)
    .bind::<Array<Double>, _>(xs)
    .execute(conn)
    .await?;
    Ok(())
}

fn columns(by_id: &BTreeMap<String, f64>) -> (Vec<&str>, Vec<f64>) {
    by_id.iter().map(|(id, x)| (id.as_str(), *x)).unzip()
}
