DROP TABLE IF EXISTS dim_stats_hour_mv
