CREATE TABLE IF NOT EXISTS kafka_inbox (
    received_at DateTime('UTC') COMMENT 'When ClickHouse took the message off the topic (UTC)',
    id          UInt64          COMMENT 'Random, to tell apart the rows of one second',
    raw         String          COMMENT 'The Kafka message as ClickHouse read it: one event as JSON, not yet checked'
) ENGINE = MergeTree
PARTITION BY toStartOfHour(received_at)
ORDER BY received_at
