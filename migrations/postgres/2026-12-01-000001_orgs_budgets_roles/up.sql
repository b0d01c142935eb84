-- Organizations (teams belong to one; its budget and models narrow theirs),
-- reusable budget objects linked by budget_id, routes a key may call, and
-- team model aliases.
CREATE TABLE budgets (
    budget_id TEXT PRIMARY KEY NOT NULL,
    max_budget DOUBLE PRECISION,
    soft_budget DOUBLE PRECISION,
    budget_duration TEXT,
    rpm_limit BIGINT,
    tpm_limit BIGINT,
    max_parallel_requests BIGINT,
    model_max_budget TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE organizations (
    organization_id TEXT PRIMARY KEY NOT NULL,
    organization_alias TEXT,
    models TEXT NOT NULL DEFAULT '[]',
    spend DOUBLE PRECISION NOT NULL DEFAULT 0,
    max_budget DOUBLE PRECISION,
    soft_budget DOUBLE PRECISION,
    budget_duration TEXT,
    budget_reset_at BIGINT,
    rpm_limit BIGINT,
    tpm_limit BIGINT,
    max_parallel_requests BIGINT,
    budget_id TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    blocked BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX organizations_budget_reset_at ON organizations (budget_reset_at);

CREATE TABLE organization_members (
    organization_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    user_role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX organization_members_user ON organization_members (user_id);

ALTER TABLE teams ADD COLUMN organization_id TEXT;
ALTER TABLE teams ADD COLUMN model_aliases TEXT NOT NULL DEFAULT '{}';
CREATE INDEX teams_organization_id ON teams (organization_id);
ALTER TABLE keys ADD COLUMN allowed_routes TEXT NOT NULL DEFAULT '[]';
ALTER TABLE customers ADD COLUMN budget_id TEXT;
