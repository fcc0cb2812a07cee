CREATE TABLE IF NOT EXISTS ad_stats_daily (
    day          Date    COMMENT 'Event-time day (UTC)',
    ad_id        String  COMMENT 'Ad (creative) id',
    campaign_id  String  COMMENT 'Campaign of the ad',
    impressions  Int64   COMMENT 'Impressions of the day; always read as sum(impressions)',
    clicks       Int64   COMMENT 'Clicks of the day; always read as sum(clicks)',
    conversions  Int64   COMMENT 'Conversions of the day; always read as sum(conversions)',
    spend_micros Int64   COMMENT 'Sum of price_micros of the day events, in millionths of the currency unit'
) ENGINE = SummingMergeTree((impressions, clicks, conversions, spend_micros))
PARTITION BY toYYYYMM(day)
ORDER BY (ad_id, day, campaign_id)
