//! diesel schema, written to be portable: only types both PostgreSQL and
//! SQLite map the same way (TEXT, BIGINT, DOUBLE, BOOL). Timestamps are
//! unix milliseconds; JSON is TEXT.

diesel::table! {
    keys (token) {
        token -> Text,
        key_name -> Text,
        key_alias -> Nullable<Text>,
        user_id -> Nullable<Text>,
        team_id -> Nullable<Text>,
        models -> Text,
        aliases -> Text,
        spend -> Double,
        max_budget -> Nullable<Double>,
        budget_duration -> Nullable<Text>,
        budget_reset_at -> Nullable<BigInt>,
        expires -> Nullable<BigInt>,
        rpm_limit -> Nullable<BigInt>,
        tpm_limit -> Nullable<BigInt>,
        max_parallel_requests -> Nullable<BigInt>,
        model_rpm_limit -> Nullable<Text>,
        model_tpm_limit -> Nullable<Text>,
        metadata -> Text,
        blocked -> Bool,
        created_at -> BigInt,
        updated_at -> BigInt,
        soft_budget -> Nullable<Double>,
        model_max_budget -> Nullable<Text>,
        allowed_routes -> Text,
    }
}

diesel::table! {
    users (user_id) {
        user_id -> Text,
        user_email -> Nullable<Text>,
        user_alias -> Nullable<Text>,
        user_role -> Nullable<Text>,
        models -> Text,
        spend -> Double,
        max_budget -> Nullable<Double>,
        budget_duration -> Nullable<Text>,
        budget_reset_at -> Nullable<BigInt>,
        rpm_limit -> Nullable<BigInt>,
        tpm_limit -> Nullable<BigInt>,
        max_parallel_requests -> Nullable<BigInt>,
        metadata -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        soft_budget -> Nullable<Double>,
    }
}

diesel::table! {
    teams (team_id) {
        team_id -> Text,
        team_alias -> Nullable<Text>,
        models -> Text,
        spend -> Double,
        max_budget -> Nullable<Double>,
        budget_duration -> Nullable<Text>,
        budget_reset_at -> Nullable<BigInt>,
        rpm_limit -> Nullable<BigInt>,
        tpm_limit -> Nullable<BigInt>,
        max_parallel_requests -> Nullable<BigInt>,
        metadata -> Text,
        blocked -> Bool,
        created_at -> BigInt,
        updated_at -> BigInt,
        soft_budget -> Nullable<Double>,
        organization_id -> Nullable<Text>,
        model_aliases -> Text,
    }
}

diesel::table! {
    team_members (team_id, user_id) {
        team_id -> Text,
        user_id -> Text,
        role -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    spend_logs (request_id) {
        request_id -> Text,
        call_type -> Text,
        api_key -> Text,
        key_alias -> Nullable<Text>,
        spend -> Double,
        prompt_tokens -> BigInt,
        completion_tokens -> BigInt,
        total_tokens -> BigInt,
        start_time -> BigInt,
        end_time -> BigInt,
        completion_start_time -> Nullable<BigInt>,
        model -> Text,
        model_group -> Text,
        model_id -> Text,
        api_base -> Text,
        user_id -> Nullable<Text>,
        team_id -> Nullable<Text>,
        end_user -> Nullable<Text>,
        metadata -> Text,
        cache_hit -> Bool,
        status -> Text,
        usage_estimated -> Bool,
    }
}

diesel::table! {
    customers (user_id) {
        user_id -> Text,
        alias -> Nullable<Text>,
        spend -> Double,
        max_budget -> Nullable<Double>,
        soft_budget -> Nullable<Double>,
        budget_duration -> Nullable<Text>,
        budget_reset_at -> Nullable<BigInt>,
        allowed_models -> Text,
        blocked -> Bool,
        metadata -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        budget_id -> Nullable<Text>,
    }
}

diesel::table! {
    key_model_spend (token, model) {
        token -> Text,
        model -> Text,
        spend -> Double,
    }
}

diesel::table! {
    proxy_models (model_id) {
        model_id -> Text,
        model_name -> Text,
        litellm_params -> Text,
        model_info -> Text,
        revision -> BigInt,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    budgets (budget_id) {
        budget_id -> Text,
        max_budget -> Nullable<Double>,
        soft_budget -> Nullable<Double>,
        budget_duration -> Nullable<Text>,
        rpm_limit -> Nullable<BigInt>,
        tpm_limit -> Nullable<BigInt>,
        max_parallel_requests -> Nullable<BigInt>,
        model_max_budget -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    organizations (organization_id) {
        organization_id -> Text,
        organization_alias -> Nullable<Text>,
        models -> Text,
        spend -> Double,
        max_budget -> Nullable<Double>,
        soft_budget -> Nullable<Double>,
        budget_duration -> Nullable<Text>,
        budget_reset_at -> Nullable<BigInt>,
        rpm_limit -> Nullable<BigInt>,
        tpm_limit -> Nullable<BigInt>,
        max_parallel_requests -> Nullable<BigInt>,
        budget_id -> Nullable<Text>,
        metadata -> Text,
        blocked -> Bool,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    organization_members (organization_id, user_id) {
        organization_id -> Text,
        user_id -> Text,
        user_role -> Text,
        created_at -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    budgets,
    organizations,
    organization_members,
    proxy_models,
    keys,
    users,
    teams,
    team_members,
    spend_logs,
    customers,
    key_model_spend
);
