ALTER TABLE spend_logs
    ALTER COLUMN request_id TYPE TEXT COLLATE "default",
    ALTER COLUMN api_key TYPE TEXT COLLATE "default";
