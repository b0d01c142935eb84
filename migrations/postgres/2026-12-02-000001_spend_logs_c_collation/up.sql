-- Spend log keys are ASCII ids (UUIDs, SHA-256 hex): compared byte by byte
-- ("C") they sort the same, but each B-tree comparison of an insert is a
-- memcmp instead of a call into the database's collation (strcoll under
-- libc's C.UTF-8/en_US): most of what PostgreSQL spent per spend row.
ALTER TABLE spend_logs
    ALTER COLUMN request_id TYPE TEXT COLLATE "C",
    ALTER COLUMN api_key TYPE TEXT COLLATE "C";
