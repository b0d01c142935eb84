-- As on PostgreSQL: the request id (a UUIDv7, its leading digits the start
-- time) orders and bounds time ranges through the primary key's index, so
-- the start_time index, one more B-tree insert per request, goes.
DROP INDEX IF EXISTS spend_logs_start_time;
