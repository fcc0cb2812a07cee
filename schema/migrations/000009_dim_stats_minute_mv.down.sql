DROP TABLE IF EXISTS dim_stats_minute_mv
