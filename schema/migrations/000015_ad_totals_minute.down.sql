DROP TABLE IF EXISTS ad_totals_minute
