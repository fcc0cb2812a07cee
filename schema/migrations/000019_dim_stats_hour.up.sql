CREATE TABLE IF NOT EXISTS dim_stats_hour (
    hour         DateTime('UTC') COMMENT 'Start of the event-time hour (UTC)',
    country      FixedString(2)  COMMENT 'ISO 3166-1 alpha-2 country code; ZZ when unknown',
    ad_format    Enum8('unknown' = 0, 'banner' = 1, 'interstitial' = 2, 'native' = 3, 'rewarded_video' = 4, 'video' = 5) COMMENT 'Creative format',
    device       Enum8('unknown' = 0, 'ios' = 1, 'android' = 2, 'web' = 3, 'ctv' = 4, 'other' = 5) COMMENT 'Device platform',
    impressions  Int64           COMMENT 'Impressions; always read as sum(impressions)',
    clicks       Int64           COMMENT 'Clicks; always read as sum(clicks)',
    conversions  Int64           COMMENT 'Conversions; always read as sum(conversions)',
    spend_micros Int64           COMMENT 'Sum of price_micros, in millionths of the currency unit'
) ENGINE = SummingMergeTree((impressions, clicks, conversions, spend_micros))
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, country, ad_format, device)
