CREATE MATERIALIZED VIEW IF NOT EXISTS dim_stats_minute_by_time_mv TO dim_stats_minute_by_time AS
SELECT
    toStartOfMinute(ts) AS minute,
    country,
    ad_format,
    device,
    toInt64(countIf(type = 'impression')) AS impressions,
    toInt64(countIf(type = 'click')) AS clicks,
    toInt64(countIf(type = 'conversion')) AS conversions,
    toInt64(sum(price_micros)) AS spend_micros
FROM events
WHERE duplicate = 0
GROUP BY minute, country, ad_format, device
