DROP TABLE IF EXISTS recent_event_ids
