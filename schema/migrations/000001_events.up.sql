CREATE TABLE IF NOT EXISTS events (
    event_id     String          COMMENT 'Sender-assigned unique id of the event; a resend carries the same id',
    type         Enum8('impression' = 1, 'click' = 2, 'conversion' = 3) COMMENT 'What happened to the ad',
    ts           DateTime('UTC') COMMENT 'Event time: when it happened at the ad server (UTC, whole seconds); aggregates bucket by this, not by arrival',
    ts_millis    UInt16          COMMENT 'Millisecond part of the event time, 0 to 999',
    ad_id        String          COMMENT 'Ad (creative) id',
    campaign_id  String          COMMENT 'Campaign of the ad; empty when the sender did not say',
    user_id      String          COMMENT 'User id as sent by the ad server; empty when not sent',
    ip           FixedString(16) COMMENT 'Client IP as 16 IPv6 bytes, IPv4 mapped to ::ffff:a.b.c.d; read it with IPv6NumToString(ip); all zero when not sent',
    country      FixedString(2)  COMMENT 'ISO 3166-1 alpha-2 country code; ZZ when unknown',
    ad_format    Enum8('unknown' = 0, 'banner' = 1, 'interstitial' = 2, 'native' = 3, 'rewarded_video' = 4, 'video' = 5) COMMENT 'Creative format; unknown when not sent',
    device       Enum8('unknown' = 0, 'ios' = 1, 'android' = 2, 'web' = 3, 'ctv' = 4, 'other' = 5) COMMENT 'Device platform; unknown when not sent',
    price_micros UInt64          COMMENT 'What the advertiser pays for this event, in millionths of the currency unit',
    received_at  DateTime('UTC') COMMENT 'When clickagg accepted the event (arrival time, UTC)',
    duplicate    UInt8           COMMENT '1 when the event_id had already been accepted (a resend): kept for the record, left out of every aggregate'
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (ad_id, ts, event_id)
