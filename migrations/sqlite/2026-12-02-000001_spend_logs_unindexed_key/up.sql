-- Every request inserts a spend log row, and an index on (api_key, …)
-- puts each row on the leaf page of its key: with many active keys, every
-- batch dirties (and writes to the WAL, then checkpoints) one 4 KB page per
-- key it touches, most of the spend writer's cost. A key's rows are found
-- through the start_time index instead (newest first, filtered), as
-- LiteLLM's own spend log table does. PostgreSQL keeps the index: it logs
-- row changes, not whole pages.
DROP INDEX spend_logs_api_key;
