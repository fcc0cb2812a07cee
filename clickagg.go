// Package clickagg holds the domain types of the ad event aggregation service:
// the event, its enumerations and validation. Packages below it hold one
// dependency each (ClickHouse, Redis, HTTP) and cmd/clickagg wires them.
package clickagg

import (
	"fmt"
	"strconv"
	"time"
)

// EventType is what happened to an ad.
type EventType int8

// Event types. The numbers are the Enum8 values of events.type; keep them in
// sync with schema/migrations.
const (
	Impression EventType = 1
	Click      EventType = 2
	Conversion EventType = 3
)

// AdFormat is the creative format an event was served in.
type AdFormat int8

// Ad formats. 0 means the sender did not say.
const (
	FormatUnknown       AdFormat = 0
	FormatBanner        AdFormat = 1
	FormatInterstitial  AdFormat = 2
	FormatNative        AdFormat = 3
	FormatRewardedVideo AdFormat = 4
	FormatVideo         AdFormat = 5
)

// Device is the platform an event came from.
type Device int8

// Devices. 0 means the sender did not say; DeviceOther is a device the sender
// named as other.
const (
	DeviceUnknown Device = 0
	DeviceIOS     Device = 1
	DeviceAndroid Device = 2
	DeviceWeb     Device = 3
	DeviceCTV     Device = 4
	DeviceOther   Device = 5
)

var (
	eventTypeNames = [...]string{"", "impression", "click", "conversion"}
	adFormatNames  = [...]string{"unknown", "banner", "interstitial", "native", "rewarded_video", "video"}
	deviceNames    = [...]string{"unknown", "ios", "android", "web", "ctv", "other"}
)

// String returns the wire name of t.
func (t EventType) String() string { return name(eventTypeNames[:], int(t)) }

// String returns the wire name of f.
func (f AdFormat) String() string { return name(adFormatNames[:], int(f)) }

// String returns the wire name of d.
func (d Device) String() string { return name(deviceNames[:], int(d)) }

func name(names []string, i int) string {
	if i < 0 || i >= len(names) || names[i] == "" {
		return fmt.Sprintf("invalid(%d)", i)
	}
	return names[i]
}

// ParseEventType maps a wire name to an EventType.
func ParseEventType(s string) (EventType, bool) {
	i, ok := lookup(eventTypeNames[:], s, 1)
	return EventType(i), ok
}

// ParseAdFormat maps a wire name to an AdFormat; "unknown" is not accepted
// from senders, who omit the field instead.
func ParseAdFormat(s string) (AdFormat, bool) {
	i, ok := lookup(adFormatNames[:], s, 1)
	return AdFormat(i), ok
}

// ParseDevice maps a wire name to a Device; "unknown" is not accepted from
// senders, who omit the field instead.
func ParseDevice(s string) (Device, bool) {
	i, ok := lookup(deviceNames[:], s, 1)
	return Device(i), ok
}

func lookup(names []string, s string, from int) (int, bool) {
	for i := from; i < len(names); i++ {
		if names[i] == s {
			return i, true
		}
	}
	return 0, false
}

// EventTypes, AdFormats and Devices list the accepted wire names, for
// documentation, generators and error messages.
func EventTypes() []string { return append([]string(nil), eventTypeNames[1:]...) }

// AdFormats lists the ad format wire names a sender may use.
func AdFormats() []string { return append([]string(nil), adFormatNames[1:]...) }

// Devices lists the device wire names a sender may use.
func Devices() []string { return append([]string(nil), deviceNames[1:]...) }

// UnknownCountry is stored when an event names no country. ZZ is the
// ISO 3166 user-assigned code for an unknown country (as in CLDR).
const UnknownCountry = "ZZ"

// Event is one ad event as accepted by the collector. Strings may alias the
// request buffer they were decoded from; copy them to keep them.
type Event struct {
	EventID     string
	Type        EventType
	Time        time.Time // event time, millisecond precision, UTC
	AdID        string
	CampaignID  string
	UserID      string
	IP          [16]byte // IPv6, or IPv4-mapped IPv6; zero when absent
	Country     [2]byte  // ISO 3166-1 alpha-2, UnknownCountry when absent
	AdFormat    AdFormat
	Device      Device
	PriceMicros uint64 // what the advertiser pays for this event, in micros
}

// Size limits of string fields, so one event cannot blow up a batch.
const (
	MaxIDLen = 128
)

// FieldError says which field of an event is wrong and why.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// ClickHouse types of the enum columns. The schema tests check that the
// migrations declare exactly these, so Go and SQL cannot drift apart.
var (
	EventTypeSQL = enumSQL(eventTypeNames[:], 1)
	AdFormatSQL  = enumSQL(adFormatNames[:], 0)
	DeviceSQL    = enumSQL(deviceNames[:], 0)
)

// enumSQL renders names[from:] as ClickHouse renders an Enum8 type.
func enumSQL(names []string, from int) string {
	b := []byte("Enum8(")
	for i := from; i < len(names); i++ {
		if i > from {
			b = append(b, ", "...)
		}
		b = append(b, '\'')
		b = append(b, names[i]...)
		b = append(b, "' = "...)
		b = strconv.AppendInt(b, int64(i), 10)
	}
	return string(append(b, ')'))
}

// RejectReason says why an event went to the dead letters. The numbers are
// the Enum8 values of dead_letters.reason.
type RejectReason int8

// Reasons.
const (
	ReasonInvalidJSON    RejectReason = 1 // not a JSON object
	ReasonInvalidField   RejectReason = 2 // a field missing or wrong
	ReasonTooLate        RejectReason = 3 // older than the allowed lateness
	ReasonFuture         RejectReason = 4 // further ahead than the allowed clock skew
	ReasonUnparsableBody RejectReason = 5 // a whole body that could not be read
)

var reasonNames = [...]string{"", "invalid_json", "invalid_field", "too_late", "future", "unparsable_body"}

// String returns the reason's name as stored.
func (r RejectReason) String() string { return name(reasonNames[:], int(r)) }

// RejectReasons lists the reason names.
func RejectReasons() []string { return append([]string(nil), reasonNames[1:]...) }

// RejectReasonSQL is the ClickHouse type of dead_letters.reason.
var RejectReasonSQL = enumSQL(reasonNames[:], 1)

// Source is the path an event came in by; the Enum8 of dead_letters.source.
type Source int8

// Sources.
const (
	SourceHTTP  Source = 1
	SourceKafka Source = 2
)
