-- As on SQLite (2026-12-02): every request inserts a spend log row, and
-- an index on (api_key, start_time) is a B-tree insert into the leaf of
-- that key — with many active keys, a different page per row, each of
-- them written whole to the WAL after every checkpoint. A key's rows are
-- found through the start_time index instead (newest first, filtered),
-- as LiteLLM's own spend log table does; it indexes no api_key either.
DROP INDEX IF EXISTS spend_logs_api_key;
