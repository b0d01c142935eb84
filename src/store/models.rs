//! Rows as stored. JSON columns are TEXT holding JSON; times are unix ms.

use diesel::prelude::*;

use super::schema::{keys, team_members, teams, users};

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = keys, primary_key(token), treat_none_as_null = true)]
pub struct KeyRow {
    /// SHA-256 of the key, lowercase hex. The key itself is never stored.
    pub token: String,
    pub key_name: String,
    pub key_alias: Option<String>,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub models: String,
    pub aliases: String,
    /// Maintained by spend settlement; a management update never overwrites it.
    #[diesel(skip_update)]
    pub spend: f64,
    pub max_budget: Option<f64>,
    pub budget_duration: Option<String>,
    pub budget_reset_at: Option<i64>,
    pub expires: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
    pub max_parallel_requests: Option<i64>,
    pub model_rpm_limit: Option<String>,
    pub model_tpm_limit: Option<String>,
    pub metadata: String,
    pub blocked: bool,
    #[diesel(skip_update)]
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = users, primary_key(user_id), treat_none_as_null = true)]
pub struct UserRow {
    pub user_id: String,
    pub user_email: Option<String>,
    pub user_alias: Option<String>,
    pub user_role: Option<String>,
    pub models: String,
    #[diesel(skip_update)]
    pub spend: f64,
    pub max_budget: Option<f64>,
    pub budget_duration: Option<String>,
    pub budget_reset_at: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
    pub max_parallel_requests: Option<i64>,
    pub metadata: String,
    #[diesel(skip_update)]
    pub created_at: i64,
    pub updated_at: i64,
}

impl UserRow {
    /// A user with nothing set but its id (LiteLLM's default role).
    pub fn blank(user_id: String, now: i64) -> UserRow {
        UserRow {
            user_id,
            user_email: None,
            user_alias: None,
            user_role: Some("internal_user".into()),
            models: "[]".into(),
            spend: 0.0,
            max_budget: None,
            budget_duration: None,
            budget_reset_at: None,
            rpm_limit: None,
            tpm_limit: None,
            max_parallel_requests: None,
            metadata: "{}".into(),
            created_at: now,
            updated_at: now,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = teams, primary_key(team_id), treat_none_as_null = true)]
pub struct TeamRow {
    pub team_id: String,
    pub team_alias: Option<String>,
    pub models: String,
    #[diesel(skip_update)]
    pub spend: f64,
    pub max_budget: Option<f64>,
    pub budget_duration: Option<String>,
    pub budget_reset_at: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
    pub max_parallel_requests: Option<i64>,
    pub metadata: String,
    pub blocked: bool,
    #[diesel(skip_update)]
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = team_members)]
pub struct MemberRow {
    pub team_id: String,
    pub user_id: String,
    pub role: String,
    pub created_at: i64,
}
