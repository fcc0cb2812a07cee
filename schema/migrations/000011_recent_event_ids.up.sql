CREATE TABLE IF NOT EXISTS recent_event_ids (
    received_at DateTime('UTC') COMMENT 'When clickagg accepted the event (UTC)',
    fingerprint UInt64          COMMENT 'cityHash64(event_id): what the collector remembers to recognise resends, reloaded from here after a restart'
) ENGINE = MergeTree
PARTITION BY toStartOfHour(received_at)
ORDER BY received_at
