//! Deployments added at run time (`/model/new|update|delete`).

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::models::ProxyModelRow;
use super::schema::proxy_models;
use super::{pool_error, Pools, SqliteConn, Store, StoreError};
use diesel_async::AsyncPgConnection;

impl Store {
    pub async fn insert_proxy_model(&self, row: &ProxyModelRow) -> Result<(), StoreError> {
        with_conn!(self, |conn| {
            diesel::insert_into(proxy_models::table)
                .values(row)
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// False if no such model.
    pub async fn update_proxy_model(&self, row: &ProxyModelRow) -> Result<bool, StoreError> {
        with_conn!(self, |conn| Ok(diesel::update(
            proxy_models::table.find(&row.model_id)
        )
        .set(row)
        .execute(conn)
        .await?
            == 1))
    }

    pub async fn delete_proxy_model(&self, id: &str) -> Result<bool, StoreError> {
        with_conn!(self, |conn| Ok(diesel::delete(
            proxy_models::table.find(id)
        )
        .execute(conn)
        .await?
            == 1))
    }

    pub async fn get_proxy_model(&self, id: &str) -> Result<Option<ProxyModelRow>, StoreError> {
        with_conn!(self, |conn| Ok(proxy_models::table
            .find(id)
            .select(ProxyModelRow::as_select())
            .first(conn)
            .await
            .optional()?))
    }

    pub async fn list_proxy_models(&self) -> Result<Vec<ProxyModelRow>, StoreError> {
        with_conn!(self, |conn| Ok(proxy_models::table
            .select(ProxyModelRow::as_select())
            .order(proxy_models::model_id.asc())
            .load(conn)
            .await?))
    }
}
