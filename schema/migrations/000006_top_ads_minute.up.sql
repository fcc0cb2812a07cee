CREATE TABLE IF NOT EXISTS top_ads_minute (
    minute  DateTime('UTC') COMMENT 'Start of the event-time minute (UTC)',
    type    Enum8('impression' = 1, 'click' = 2, 'conversion' = 3) COMMENT 'Which events the sketch counts',
    top_ads AggregateFunction(topK(1000), String) COMMENT 'topK sketch of ad_id by event count in the minute; finalizeAggregation(top_ads) gives up to 1000 ad ids, most frequent first (topKMerge loses its parameter on 18.16)'
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (minute, type)
