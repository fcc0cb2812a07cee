DROP TABLE IF EXISTS ad_stats_daily_mv
