CREATE TABLE IF NOT EXISTS kafka_inbox_progress (
    updated_at DateTime('UTC') COMMENT 'When clickagg wrote this row (UTC)',
    watermark  DateTime('UTC') COMMENT 'Every kafka_inbox row received before this has been drained into events or dead_letters'
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(updated_at)
ORDER BY updated_at
SETTINGS replicated_max_ratio_of_wrong_parts = 1
