CREATE TABLE keys (
    token TEXT PRIMARY KEY NOT NULL,
    key_name TEXT NOT NULL,
    key_alias TEXT,
    user_id TEXT,
    team_id TEXT,
    models TEXT NOT NULL DEFAULT '[]',
    aliases TEXT NOT NULL DEFAULT '{}',
    spend DOUBLE PRECISION NOT NULL DEFAULT 0,
    max_budget DOUBLE PRECISION,
    budget_duration TEXT,
    budget_reset_at BIGINT,
    expires BIGINT,
    rpm_limit BIGINT,
    tpm_limit BIGINT,
    max_parallel_requests BIGINT,
    model_rpm_limit TEXT,
    model_tpm_limit TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    blocked BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX keys_key_alias_unique ON keys (key_alias);
CREATE INDEX keys_user_id ON keys (user_id);
CREATE INDEX keys_team_id ON keys (team_id);
CREATE INDEX keys_created_at ON keys (created_at);

CREATE TABLE users (
    user_id TEXT PRIMARY KEY NOT NULL,
    user_email TEXT,
    user_alias TEXT,
    user_role TEXT,
    models TEXT NOT NULL DEFAULT '[]',
    spend DOUBLE PRECISION NOT NULL DEFAULT 0,
    max_budget DOUBLE PRECISION,
    budget_duration TEXT,
    budget_reset_at BIGINT,
    rpm_limit BIGINT,
    tpm_limit BIGINT,
    max_parallel_requests BIGINT,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX users_user_email_unique ON users (user_email);

CREATE TABLE teams (
    team_id TEXT PRIMARY KEY NOT NULL,
    team_alias TEXT,
    models TEXT NOT NULL DEFAULT '[]',
    spend DOUBLE PRECISION NOT NULL DEFAULT 0,
    max_budget DOUBLE PRECISION,
    budget_duration TEXT,
    budget_reset_at BIGINT,
    rpm_limit BIGINT,
    tpm_limit BIGINT,
    max_parallel_requests BIGINT,
    metadata TEXT NOT NULL DEFAULT '{}',
    blocked BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE team_members (
    team_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'user',
    created_at BIGINT NOT NULL,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user_id ON team_members (user_id);

