//! Rows as stored. JSON columns are TEXT holding JSON; times are unix ms.

use diesel::prelude::*;

use super::schema::{
    budgets, customers, key_model_spend, keys, organization_members, organizations, proxy_models,
    spend_logs, team_members, teams, users,
};

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
    pub soft_budget: Option<f64>,
    /// JSON: model group → budget in USD (LiteLLM's `model_max_budget`).
    pub model_max_budget: Option<String>,
    /// JSON list: the only routes this key may call (LiteLLM's
    /// `allowed_routes`); `[]` means no restriction beyond its role.
    pub allowed_routes: String,
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
    pub soft_budget: Option<f64>,
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
            soft_budget: None,
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
    pub soft_budget: Option<f64>,
    pub organization_id: Option<String>,
    /// JSON: public name → model group, for every key of the team.
    pub model_aliases: String,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = team_members)]
pub struct MemberRow {
    pub team_id: String,
    pub user_id: String,
    pub role: String,
    pub created_at: i64,
}

/// One request's cost as logged (LiteLLM's `LiteLLM_SpendLogs`). Times are
/// unix ms; `api_key` is the key's hash, never the key.
#[derive(
    Debug, Clone, PartialEq, Queryable, Selectable, Insertable, serde::Serialize, serde::Deserialize,
)]
#[diesel(table_name = spend_logs, treat_none_as_default_value = false)]
pub struct SpendLogRow {
    pub request_id: String,
    /// The usual values are static: not a heap string per request.
    #[diesel(deserialize_as = String)]
    pub call_type: std::borrow::Cow<'static, str>,
    pub api_key: String,
    pub key_alias: Option<String>,
    pub spend: f64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub start_time: i64,
    pub end_time: i64,
    pub completion_start_time: Option<i64>,
    pub model: String,
    pub model_group: String,
    pub model_id: String,
    pub api_base: String,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub end_user: Option<String>,
    /// JSON: what no column holds (`http::spend::metadata_json` reads it
    /// back whole, LiteLLM's shape).
    pub metadata: String,
    pub cache_hit: bool,
    #[diesel(deserialize_as = String)]
    pub status: std::borrow::Cow<'static, str>,
    pub usage_estimated: bool,
}

/// An end user (LiteLLM's customer), named by a request's `user` field.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = customers, primary_key(user_id), treat_none_as_null = true)]
pub struct CustomerRow {
    pub user_id: String,
    pub alias: Option<String>,
    #[diesel(skip_update)]
    pub spend: f64,
    pub max_budget: Option<f64>,
    pub soft_budget: Option<f64>,
    pub budget_duration: Option<String>,
    pub budget_reset_at: Option<i64>,
    pub allowed_models: String,
    pub blocked: bool,
    pub metadata: String,
    #[diesel(skip_update)]
    pub created_at: i64,
    pub updated_at: i64,
    /// A linked budget object: its limits apply where the row sets none.
    pub budget_id: Option<String>,
}

impl CustomerRow {
    pub fn blank(user_id: String, now: i64) -> CustomerRow {
        CustomerRow {
            user_id,
            alias: None,
            spend: 0.0,
            max_budget: None,
            soft_budget: None,
            budget_duration: None,
            budget_reset_at: None,
            allowed_models: "[]".into(),
            blocked: false,
            metadata: "{}".into(),
            created_at: now,
            updated_at: now,
            budget_id: None,
        }
    }
}

/// A reusable budget (LiteLLM's `LiteLLM_BudgetTable`), linked by
/// `budget_id` from customers and organizations.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = budgets, primary_key(budget_id), treat_none_as_null = true)]
pub struct BudgetRow {
    pub budget_id: String,
    pub max_budget: Option<f64>,
    pub soft_budget: Option<f64>,
    pub budget_duration: Option<String>,
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
    pub max_parallel_requests: Option<i64>,
    pub model_max_budget: Option<String>,
    #[diesel(skip_update)]
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = organizations, primary_key(organization_id), treat_none_as_null = true)]
pub struct OrgRow {
    pub organization_id: String,
    pub organization_alias: Option<String>,
    pub models: String,
    #[diesel(skip_update)]
    pub spend: f64,
    pub max_budget: Option<f64>,
    pub soft_budget: Option<f64>,
    pub budget_duration: Option<String>,
    pub budget_reset_at: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
    pub max_parallel_requests: Option<i64>,
    pub budget_id: Option<String>,
    pub metadata: String,
    pub blocked: bool,
    #[diesel(skip_update)]
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = organization_members)]
pub struct OrgMemberRow {
    pub organization_id: String,
    pub user_id: String,
    /// `org_admin`, `internal_user` or `internal_user_viewer`.
    pub user_role: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = key_model_spend)]
pub struct KeyModelSpendRow {
    pub token: String,
    pub model: String,
    pub spend: f64,
}

/// A deployment added at run time. `litellm_params` is JSON with provider
/// secrets encrypted; `model_info` is JSON.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = proxy_models, primary_key(model_id), treat_none_as_null = true)]
pub struct ProxyModelRow {
    pub model_id: String,
    pub model_name: String,
    pub litellm_params: String,
    pub model_info: String,
    pub revision: i64,
    #[diesel(skip_update)]
    pub created_at: i64,
    pub updated_at: i64,
}
