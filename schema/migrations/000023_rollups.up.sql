CREATE TABLE IF NOT EXISTS rollups (
    name          String          COMMENT 'A rollup table (ad_totals_minute, ad_totals_hour, dim_stats_hour, dim_stats_minute_by_time)',
    complete_from DateTime('UTC') COMMENT 'The table holds every event with ts at or after this; the query API reads it only there',
    noted_at      DateTime('UTC') COMMENT 'When clickagg wrote this row'
) ENGINE = MergeTree
ORDER BY (name, complete_from)
SETTINGS replicated_max_ratio_of_wrong_parts = 1
