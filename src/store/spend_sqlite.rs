//! The spend batch write on a plain (synchronous) SQLite connection: the
//! whole transaction runs on one blocking thread instead of one thread hop
//! per statement, and the log rows go in as multi-row INSERTs (100 rows a
//! statement) that return the ids actually inserted — per row, the
//! statement overhead was most of the cost of logging a request.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Double, Nullable, Text};
use diesel::sqlite::{Sqlite, SqliteConnection};

use super::{SpendCommit, SpendLogRow, StoreError};

const COLUMNS: &str = "request_id, call_type, api_key, key_alias, spend, prompt_tokens, \
    completion_tokens, total_tokens, start_time, end_time, completion_start_time, model, \
    model_group, model_id, api_base, user_id, team_id, end_user, metadata, cache_hit, status, \
    usage_estimated";
const ROW: &str = "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
const ROWS_PER_STATEMENT: usize = 100;

#[derive(QueryableByName)]
struct Inserted {
    #[diesel(sql_type = Text)]
    request_id: String,
}

pub fn record(
    conn: &mut SqliteConnection,
    rows: &[SpendLogRow],
) -> Result<SpendCommit, StoreError> {
    conn.transaction(|conn| crate::record_batch!(conn, rows, sqlite_multi_row, []))
}

/// Inserts the rows not recorded yet; returns those.
pub fn insert_fresh<'a>(
    conn: &mut SqliteConnection,
    rows: &'a [SpendLogRow],
) -> QueryResult<Vec<&'a SpendLogRow>> {
    let mut inserted = std::collections::HashSet::new();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut sql = String::with_capacity(COLUMNS.len() + chunk.len() * (ROW.len() + 1) + 80);
        sql.push_str("INSERT INTO spend_logs (");
        sql.push_str(COLUMNS);
        sql.push_str(") VALUES ");
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(ROW);
        }
        sql.push_str(" ON CONFLICT (request_id) DO NOTHING RETURNING request_id");
        let mut q = diesel::sql_query(sql).into_boxed::<Sqlite>();
        for r in chunk {
            q = q
                .bind::<Text, _>(&r.request_id)
                .bind::<Text, _>(&r.call_type)
                .bind::<Text, _>(&r.api_key)
                .bind::<Nullable<Text>, _>(&r.key_alias)
                .bind::<Double, _>(r.spend)
                .bind::<BigInt, _>(r.prompt_tokens)
                .bind::<BigInt, _>(r.completion_tokens)
                .bind::<BigInt, _>(r.total_tokens)
                .bind::<BigInt, _>(r.start_time)
                .bind::<BigInt, _>(r.end_time)
                .bind::<Nullable<BigInt>, _>(r.completion_start_time)
                .bind::<Text, _>(&r.model)
                .bind::<Text, _>(&r.model_group)
                .bind::<Text, _>(&r.model_id)
                .bind::<Text, _>(&r.api_base)
                .bind::<Nullable<Text>, _>(&r.user_id)
                .bind::<Nullable<Text>, _>(&r.team_id)
                .bind::<Nullable<Text>, _>(&r.end_user)
                .bind::<Text, _>(&r.metadata)
                .bind::<Bool, _>(r.cache_hit)
                .bind::<Text, _>(&r.status)
                .bind::<Bool, _>(r.usage_estimated);
        }
        let ids: Vec<Inserted> = q.load(conn)?;
        inserted.extend(ids.into_iter().map(|i| i.request_id));
    }
    Ok(rows
        .iter()
        .filter(|r| inserted.remove(&r.request_id))
        .collect())
}
