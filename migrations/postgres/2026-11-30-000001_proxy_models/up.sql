-- Deployments added at run time (/model/new), LiteLLM's proxy model table.
-- litellm_params holds provider secrets encrypted ("enc:v1:…").
CREATE TABLE proxy_models (
    model_id TEXT PRIMARY KEY NOT NULL,
    model_name TEXT NOT NULL,
    litellm_params TEXT NOT NULL,
    model_info TEXT NOT NULL DEFAULT '{}',
    -- Bumped on every update: a replica rebuilds only what changed.
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
