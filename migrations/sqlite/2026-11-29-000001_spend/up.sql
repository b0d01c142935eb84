-- One row per request that reached an upstream, LiteLLM's spend log.
-- request_id is the primary key: a replayed settlement changes nothing.
CREATE TABLE spend_logs (
    request_id TEXT PRIMARY KEY NOT NULL,
    call_type TEXT NOT NULL,
    api_key TEXT NOT NULL,
    key_alias TEXT,
    spend REAL NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    total_tokens BIGINT NOT NULL,
    start_time BIGINT NOT NULL,
    end_time BIGINT NOT NULL,
    completion_start_time BIGINT,
    model TEXT NOT NULL,
    model_group TEXT NOT NULL,
    model_id TEXT NOT NULL,
    api_base TEXT NOT NULL,
    user_id TEXT,
    team_id TEXT,
    end_user TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    cache_hit BOOLEAN NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    usage_estimated BOOLEAN NOT NULL DEFAULT 0
) WITHOUT ROWID; -- rows live in the request_id tree: one B-tree less per insert
-- Every index is paid on every request's insert: only the two the
-- reports lean on (by time, and a key's own rows).
CREATE INDEX spend_logs_start_time ON spend_logs (start_time);
CREATE INDEX spend_logs_api_key ON spend_logs (api_key, start_time);

-- End users (LiteLLM's customers): the `user` field of a request.
CREATE TABLE customers (
    user_id TEXT PRIMARY KEY NOT NULL,
    alias TEXT,
    spend REAL NOT NULL DEFAULT 0,
    max_budget REAL,
    soft_budget REAL,
    budget_duration TEXT,
    budget_reset_at BIGINT,
    allowed_models TEXT NOT NULL DEFAULT '[]',
    blocked BOOLEAN NOT NULL DEFAULT 0,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- A key's spend per model group, for per-model budgets.
CREATE TABLE key_model_spend (
    token TEXT NOT NULL,
    model TEXT NOT NULL,
    spend REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (token, model)
);

ALTER TABLE keys ADD COLUMN soft_budget REAL;
ALTER TABLE keys ADD COLUMN model_max_budget TEXT;
ALTER TABLE users ADD COLUMN soft_budget REAL;
ALTER TABLE teams ADD COLUMN soft_budget REAL;
CREATE INDEX keys_budget_reset_at ON keys (budget_reset_at);
CREATE INDEX users_budget_reset_at ON users (budget_reset_at);
CREATE INDEX teams_budget_reset_at ON teams (budget_reset_at);
CREATE INDEX customers_budget_reset_at ON customers (budget_reset_at);
