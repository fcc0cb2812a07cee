-- clickagg: server < 19
CREATE MATERIALIZED VIEW IF NOT EXISTS top_ads_minute_mv TO top_ads_minute AS
SELECT
    toStartOfMinute(ts) AS minute,
    type,
    topKState(1000)(ad_id) AS top_ads
FROM events
WHERE duplicate = 0
GROUP BY minute, type
