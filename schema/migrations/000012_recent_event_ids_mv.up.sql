CREATE MATERIALIZED VIEW IF NOT EXISTS recent_event_ids_mv TO recent_event_ids AS
SELECT
    received_at,
    cityHash64(event_id) AS fingerprint
FROM events
WHERE duplicate = 0
