CREATE MATERIALIZED VIEW IF NOT EXISTS ad_totals_hour_mv TO ad_totals_hour AS
SELECT
    toStartOfHour(ts) AS hour,
    ad_id,
    campaign_id,
    toInt64(countIf(type = 'impression')) AS impressions,
    toInt64(countIf(type = 'click')) AS clicks,
    toInt64(countIf(type = 'conversion')) AS conversions,
    toInt64(sum(price_micros)) AS spend_micros
FROM events
WHERE duplicate = 0
GROUP BY hour, ad_id, campaign_id
