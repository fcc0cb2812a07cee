-- clickagg: server < 19
DROP TABLE IF EXISTS top_ads_minute_mv
