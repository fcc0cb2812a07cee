CREATE MATERIALIZED VIEW IF NOT EXISTS dim_stats_hour_mv TO dim_stats_hour AS
SELECT
    toStartOfHour(ts) AS hour,
    country,
    ad_format,
    device,
    toInt64(countIf(type = 'impression')) AS impressions,
    toInt64(countIf(type = 'click')) AS clicks,
    toInt64(countIf(type = 'conversion')) AS conversions,
    toInt64(sum(price_micros)) AS spend_micros
FROM events
WHERE duplicate = 0
GROUP BY hour, country, ad_format, device
