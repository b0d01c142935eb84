CREATE INDEX spend_logs_api_key ON spend_logs (api_key, start_time);
