DROP TABLE IF EXISTS ad_stats_minute
