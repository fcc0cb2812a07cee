DROP TABLE IF EXISTS top_ads_minute
