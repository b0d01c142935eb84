//! End users (LiteLLM's customers) and budget resets.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::models::CustomerRow;
use super::schema::{customers, key_model_spend, keys, organizations, teams, users};
use super::{pool_error, Pools, SqliteConn, Store, StoreError};
use diesel_async::AsyncPgConnection;

/// A budget period that ended and was reset (spend set to 0).
#[derive(Debug, Clone, PartialEq)]
pub enum BudgetReset {
    /// A key, by hash.
    Key(String),
    User(String),
    Team(String),
    Customer(String),
    Org(String),
}

/// The reset of one table: due rows, then a compare-and-set per row.
macro_rules! reset_table {
    ($conn:ident, $now:ident, $next:ident, $table:ident, $id:ident, $variant:ident, $out:ident) => {{
        let due: Vec<(String, Option<String>, Option<i64>)> = $table::table
            .filter($table::budget_reset_at.le($now))
            .select((
                $table::$id,
                $table::budget_duration,
                $table::budget_reset_at,
            ))
            .load($conn)
            .await?;
        for (id, duration, at) in due {
            let next_at = duration.as_deref().and_then(|d| $next(d, $now));
            let n = diesel::update(
                $table::table
                    .filter($table::$id.eq(&id))
                    .filter($table::budget_reset_at.eq(at)),
            )
            // updated_at moves too: a management write that read the row
            // before the reset must not write the old reset time back
            // (see `Store::update_team`).
            .set((
                $table::spend.eq(0.0),
                $table::budget_reset_at.eq(next_at),
                $table::updated_at.eq($now),
            ))
            .execute($conn)
            .await?;
            if n == 1 {
                $out.push(BudgetReset::$variant(id));
            }
        }
    }};
}

macro_rules! reset_all {
    ($conn:ident, $now:ident, $next:ident) => {{
        let mut out = Vec::new();
        reset_table!($conn, $now, $next, keys, token, Key, out);
        reset_table!($conn, $now, $next, users, user_id, User, out);
        reset_table!($conn, $now, $next, teams, team_id, Team, out);
        reset_table!($conn, $now, $next, customers, user_id, Customer, out);
        reset_table!($conn, $now, $next, organizations, organization_id, Org, out);
        // A key's per-model spend starts its new period with it.
        for r in &out {
            if let BudgetReset::Key(token) = r {
                diesel::delete(key_model_spend::table.filter(key_model_spend::token.eq(token)))
                    .execute($conn)
                    .await?;
            }
        }
        Ok::<_, StoreError>(out)
    }};
}

impl Store {
    pub async fn insert_customer(&self, row: &CustomerRow) -> Result<(), StoreError> {
        with_conn!(self, |conn| {
            diesel::insert_into(customers::table)
                .values(row)
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// Writes every column but spend and created_at; false if no such customer.
    /// Writes an end user read when its `updated_at` was `read_at` (as
    /// `update_team`: `StoreError::Conflict` if it changed since).
    pub async fn update_customer(
        &self,
        row: &CustomerRow,
        read_at: i64,
    ) -> Result<bool, StoreError> {
        let mut row = row.clone();
        row.updated_at = row.updated_at.max(read_at + 1);
        with_conn!(self, |conn| {
            let id = &row.user_id;
            write_as_read!(conn, customers, id, &row, read_at, "end user", id)
        })
    }

    pub async fn delete_customers(&self, ids: &[String]) -> Result<usize, StoreError> {
        with_conn!(self, |conn| Ok(diesel::delete(
            customers::table.filter(customers::user_id.eq_any(ids))
        )
        .execute(conn)
        .await?))
    }

    pub async fn list_customers(&self) -> Result<Vec<CustomerRow>, StoreError> {
        with_conn!(self, |conn| Ok(customers::table
            .select(CustomerRow::as_select())
            .order(customers::user_id.asc())
            .load(conn)
            .await?))
    }

    /// Resets every budget whose period ended by `now`: spend to 0 and the
    /// next reset time from `next(duration, now)`. Each row is reset by a
    /// compare-and-set on its `budget_reset_at`, so with many replicas
    /// running this at once, each period is reset exactly once.
    pub async fn reset_due_budgets(
        &self,
        now: i64,
        next: impl Fn(&str, i64) -> Option<i64>,
    ) -> Result<Vec<BudgetReset>, StoreError> {
        let pools = self.pools();
        self.guarded(true, async {
            match &pools {
                Pools::Postgres(pool) => {
                    let mut conn = pool.get().await.map_err(pool_error)?;
                    let conn: &mut AsyncPgConnection = &mut conn;
                    reset_all!(conn, now, next)
                }
                Pools::Sqlite(pool) => {
                    let mut conn = pool.get().await.map_err(pool_error)?;
                    let conn: &mut SqliteConn = &mut conn;
                    reset_all!(conn, now, next)
                }
            }
        })
        .await
    }
}
