CREATE TABLE IF NOT EXISTS ad_totals_hour (
    hour         DateTime('UTC') COMMENT 'Start of the event-time hour (UTC)',
    ad_id        String          COMMENT 'Ad (creative) id',
    campaign_id  String          COMMENT 'Campaign of the ad',
    impressions  Int64           COMMENT 'Impressions; always read as sum(impressions)',
    clicks       Int64           COMMENT 'Clicks; always read as sum(clicks)',
    conversions  Int64           COMMENT 'Conversions; always read as sum(conversions)',
    spend_micros Int64           COMMENT 'Sum of price_micros, in millionths of the currency unit'
) ENGINE = SummingMergeTree((impressions, clicks, conversions, spend_micros))
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, ad_id, campaign_id)
