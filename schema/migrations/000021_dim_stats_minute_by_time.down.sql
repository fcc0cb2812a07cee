DROP TABLE IF EXISTS dim_stats_minute_by_time
