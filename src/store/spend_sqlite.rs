//! The spend batch write on a plain (synchronous) SQLite connection: the
//! whole transaction runs on one blocking thread instead of one thread hop
//! per statement, and each log row goes through one prepared statement,
//! parsed once per connection (diesel caches it: the query is static and
//! binds NULL for `None`), whose changed-row count says whether the row was
//! new. A multi-row INSERT … RETURNING had to be parsed again for every
//! batch and returned an owned id per row.

use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;

use super::schema::spend_logs;
use super::{SpendCommit, SpendLogRow, StoreError};

pub fn record(
    conn: &mut SqliteConnection,
    rows: &[SpendLogRow],
) -> Result<SpendCommit, StoreError> {
    conn.transaction(|conn| crate::record_batch!(conn, rows, sqlite_per_row, []))
}

/// Inserts the rows not recorded yet; returns those.
pub fn insert_fresh<'a>(
    conn: &mut SqliteConnection,
    rows: &'a [SpendLogRow],
) -> QueryResult<Vec<&'a SpendLogRow>> {
    let mut fresh = Vec::with_capacity(rows.len());
    for row in rows {
        let inserted = diesel::insert_into(spend_logs::table)
            .values(row)
            .on_conflict_do_nothing()
            .execute(conn)?;
        if inserted > 0 {
            fresh.push(row);
        }
    }
    Ok(fresh)
}
