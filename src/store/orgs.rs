//! Organizations, their members, and reusable budget objects.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::models::{BudgetRow, OrgMemberRow, OrgRow, TeamRow};
use super::schema::{budgets, customers, keys, organization_members, organizations, teams};
use super::{pool_error, Pools, SqliteConn, Store, StoreError};

impl Store {
    // ---- organizations --------------------------------------------------

    pub async fn get_org(&self, id: &str) -> Result<Option<OrgRow>, StoreError> {
        with_conn!(self, |conn| Ok(organizations::table
            .find(id)
            .select(OrgRow::as_select())
            .first(conn)
            .await
            .optional()?))
    }

    /// The organization and its members, in one transaction.
    pub async fn insert_org(
        &self,
        row: &OrgRow,
        members: &[OrgMemberRow],
    ) -> Result<(), StoreError> {
        let (row, members) = (row.clone(), members.to_vec());
        with_conn!(self, |conn| {
            conn.transaction(async |conn| {
                diesel::insert_into(organizations::table)
                    .values(&row)
                    .execute(conn)
                    .await?;
                for m in &members {
                    diesel::insert_into(organization_members::table)
                        .values(m)
                        .execute(conn)
                        .await?;
                }
                Ok::<_, StoreError>(())
            })
            .await
        })
    }

    /// Writes every column but spend and created_at (and spend, if given).
    /// Writes an organization read when its `updated_at` was `read_at`
    /// (as `update_team`: `StoreError::Conflict` if it changed since).
    pub async fn update_org(
        &self,
        row: &OrgRow,
        spend: Option<f64>,
        read_at: i64,
    ) -> Result<bool, StoreError> {
        let mut row = row.clone();
        row.updated_at = row.updated_at.max(read_at + 1);
        with_conn!(self, |conn| {
            conn.transaction(async |conn| {
                let id = &row.organization_id;
                let written =
                    write_as_read!(conn, organizations, id, &row, read_at, "organization", id)?;
                if let (true, Some(s)) = (written, spend) {
                    diesel::update(organizations::table.find(id))
                        .set(organizations::spend.eq(s))
                        .execute(conn)
                        .await?;
                }
                Ok::<_, StoreError>(written)
            })
            .await
        })
    }

    /// Deletes organizations and their memberships; their teams stay, with
    /// no organization. Returns how many were deleted.
    pub async fn delete_orgs(&self, ids: &[String]) -> Result<usize, StoreError> {
        let ids = ids.to_vec();
        with_conn!(self, |conn| {
            conn.transaction(async |conn| {
                diesel::update(teams::table.filter(teams::organization_id.eq_any(&ids)))
                    .set(teams::organization_id.eq(None::<String>))
                    .execute(conn)
                    .await?;
                diesel::delete(
                    organization_members::table
                        .filter(organization_members::organization_id.eq_any(&ids)),
                )
                .execute(conn)
                .await?;
                let n = diesel::delete(
                    organizations::table.filter(organizations::organization_id.eq_any(&ids)),
                )
                .execute(conn)
                .await?;
                Ok::<_, StoreError>(n)
            })
            .await
        })
    }

    /// Every organization, or those `member` belongs to.
    pub async fn list_orgs(&self, member: Option<&str>) -> Result<Vec<OrgRow>, StoreError> {
        with_conn!(self, |conn| {
            let mut q = organizations::table.into_boxed();
            if let Some(u) = member {
                let ids: Vec<String> = organization_members::table
                    .filter(organization_members::user_id.eq(u))
                    .select(organization_members::organization_id)
                    .load(conn)
                    .await?;
                q = q.filter(organizations::organization_id.eq_any(ids));
            }
            Ok(q.select(OrgRow::as_select())
                .order(organizations::created_at.asc())
                .load(conn)
                .await?)
        })
    }

    pub async fn org_members(&self, id: &str) -> Result<Vec<OrgMemberRow>, StoreError> {
        with_conn!(self, |conn| Ok(organization_members::table
            .filter(organization_members::organization_id.eq(id))
            .select(OrgMemberRow::as_select())
            .order(organization_members::created_at.asc())
            .load(conn)
            .await?))
    }

    pub async fn org_memberships_of(&self, user_id: &str) -> Result<Vec<OrgMemberRow>, StoreError> {
        with_conn!(self, |conn| Ok(organization_members::table
            .filter(organization_members::user_id.eq(user_id))
            .select(OrgMemberRow::as_select())
            .load(conn)
            .await?))
    }

    /// Adds or (when already a member) changes the role of a member.
    pub async fn upsert_org_member(&self, row: &OrgMemberRow) -> Result<(), StoreError> {
        with_conn!(self, |conn| {
            diesel::insert_into(organization_members::table)
                .values(row)
                .on_conflict((
                    organization_members::organization_id,
                    organization_members::user_id,
                ))
                .do_update()
                .set(organization_members::user_role.eq(&row.user_role))
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    pub async fn remove_org_member(&self, org: &str, user: &str) -> Result<bool, StoreError> {
        with_conn!(self, |conn| Ok(diesel::delete(
            organization_members::table
                .filter(organization_members::organization_id.eq(org))
                .filter(organization_members::user_id.eq(user)),
        )
        .execute(conn)
        .await?
            == 1))
    }

    pub async fn teams_of_org(&self, id: &str) -> Result<Vec<TeamRow>, StoreError> {
        with_conn!(self, |conn| Ok(teams::table
            .filter(teams::organization_id.eq(id))
            .select(TeamRow::as_select())
            .order(teams::created_at.asc())
            .load(conn)
            .await?))
    }

    /// Hashes of the keys of every team of the organization (the cache
    /// entries an organization change makes stale).
    pub async fn keys_of_org(&self, id: &str) -> Result<Vec<String>, StoreError> {
        with_conn!(self, |conn| {
            let team_ids: Vec<String> = teams::table
                .filter(teams::organization_id.eq(id))
                .select(teams::team_id)
                .load(conn)
                .await?;
            Ok(keys::table
                .filter(keys::team_id.eq_any(team_ids))
                .select(keys::token)
                .load(conn)
                .await?)
        })
    }

    // ---- budgets --------------------------------------------------------

    pub async fn get_budget(&self, id: &str) -> Result<Option<BudgetRow>, StoreError> {
        with_conn!(self, |conn| Ok(budgets::table
            .find(id)
            .select(BudgetRow::as_select())
            .first(conn)
            .await
            .optional()?))
    }

    pub async fn insert_budget(&self, row: &BudgetRow) -> Result<(), StoreError> {
        with_conn!(self, |conn| {
            diesel::insert_into(budgets::table)
                .values(row)
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    pub async fn update_budget(&self, row: &BudgetRow) -> Result<bool, StoreError> {
        with_conn!(self, |conn| Ok(diesel::update(
            budgets::table.find(&row.budget_id)
        )
        .set(row)
        .execute(conn)
        .await?
            == 1))
    }

    /// Deletes budgets and unlinks whatever named them.
    pub async fn delete_budgets(&self, ids: &[String]) -> Result<usize, StoreError> {
        let ids = ids.to_vec();
        with_conn!(self, |conn| {
            conn.transaction(async |conn| {
                diesel::update(customers::table.filter(customers::budget_id.eq_any(&ids)))
                    .set(customers::budget_id.eq(None::<String>))
                    .execute(conn)
                    .await?;
                diesel::update(organizations::table.filter(organizations::budget_id.eq_any(&ids)))
                    .set(organizations::budget_id.eq(None::<String>))
                    .execute(conn)
                    .await?;
                Ok::<_, StoreError>(
                    diesel::delete(budgets::table.filter(budgets::budget_id.eq_any(&ids)))
                        .execute(conn)
                        .await?,
                )
            })
            .await
        })
    }

    pub async fn list_budgets(&self) -> Result<Vec<BudgetRow>, StoreError> {
        with_conn!(self, |conn| Ok(budgets::table
            .select(BudgetRow::as_select())
            .order(budgets::created_at.asc())
            .load(conn)
            .await?))
    }

    /// Customers and organizations that link `id`.
    pub async fn budget_users(&self, id: &str) -> Result<(Vec<String>, Vec<String>), StoreError> {
        with_conn!(self, |conn| {
            let c: Vec<String> = customers::table
                .filter(customers::budget_id.eq(id))
                .select(customers::user_id)
                .load(conn)
                .await?;
            let o: Vec<String> = organizations::table
                .filter(organizations::budget_id.eq(id))
                .select(organizations::organization_id)
                .load(conn)
                .await?;
            Ok((c, o))
        })
    }
}
