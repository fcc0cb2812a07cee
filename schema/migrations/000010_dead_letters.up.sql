CREATE TABLE IF NOT EXISTS dead_letters (
    received_at DateTime('UTC') COMMENT 'When clickagg refused it (UTC)',
    source      Enum8('http' = 1, 'kafka' = 2) COMMENT 'The path it came in by',
    reason      Enum8('invalid_json' = 1, 'invalid_field' = 2, 'too_late' = 3, 'future' = 4, 'unparsable_body' = 5) COMMENT 'invalid_json: not a JSON object; invalid_field: a field missing or wrong; too_late: older than the allowed lateness; future: further ahead than the allowed clock skew; unparsable_body: a whole request body that could not be read',
    field       String COMMENT 'The field at fault; empty for whole-event and body problems',
    message     String COMMENT 'Why, in the words the sender was told',
    event_id    String COMMENT 'The event_id when it could be read, else empty',
    raw         String COMMENT 'The event as sent; a whole body is cut to its first 64 KiB'
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(received_at)
ORDER BY (received_at, reason)
SETTINGS replicated_max_ratio_of_wrong_parts = 1
