CREATE TABLE IF NOT EXISTS dim_stats_minute_by_time (
    minute       DateTime('UTC') COMMENT 'Start of the event-time minute (UTC)',
    country      FixedString(2)  COMMENT 'ISO 3166-1 alpha-2 country code; ZZ when unknown',
    ad_format    Enum8('unknown' = 0, 'banner' = 1, 'interstitial' = 2, 'native' = 3, 'rewarded_video' = 4, 'video' = 5) COMMENT 'Creative format',
    device       Enum8('unknown' = 0, 'ios' = 1, 'android' = 2, 'web' = 3, 'ctv' = 4, 'other' = 5) COMMENT 'Device platform',
    impressions  Int64           COMMENT 'Impressions in the minute; always read as sum(impressions)',
    clicks       Int64           COMMENT 'Clicks in the minute; always read as sum(clicks)',
    conversions  Int64           COMMENT 'Conversions in the minute; always read as sum(conversions)',
    spend_micros Int64           COMMENT 'Sum of price_micros of the minute events, in millionths of the currency unit'
) ENGINE = SummingMergeTree((impressions, clicks, conversions, spend_micros))
PARTITION BY toYYYYMMDD(minute)
ORDER BY (minute, country, ad_format, device)
