CREATE INDEX IF NOT EXISTS spend_logs_start_time ON spend_logs (start_time);
