DROP TABLE IF EXISTS kafka_inbox_progress
