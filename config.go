package clickagg

import "fmt"

// ConfigError is a setting out of its range, returned by the Validate
// methods of the packages' Options. Field is the Go field's path, such as
// "Ingest.MaxInflight"; commands translate it to their flag.
type ConfigError struct {
	Field string
	Value any
	Want  string // the accepted values, e.g. "more than 0"
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("%s %v: want %s", e.Field, e.Value, e.Want)
}

// Within returns err with prefix added to the path of a *ConfigError, so
// that a Validate method can report the fields of the structs it holds.
// Other errors come back as they are.
func Within(prefix string, err error) error {
	if ce, ok := err.(*ConfigError); ok {
		return &ConfigError{Field: prefix + "." + ce.Field, Value: ce.Value, Want: ce.Want}
	}
	return err
}

// FirstError returns the first non-nil error: Validate methods list their
// checks in field order.
func FirstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

type number interface {
	~int | ~int64 | ~float64
}

// Positive refuses zero and negative values.
func Positive[T number](field string, v T) error {
	if v > 0 {
		return nil
	}
	return &ConfigError{Field: field, Value: v, Want: "more than 0"}
}

// NonNegative refuses negative values; zero keeps its documented meaning
// (off, none, no limit).
func NonNegative[T number](field string, v T) error {
	if v >= 0 {
		return nil
	}
	return &ConfigError{Field: field, Value: v, Want: "0 or more"}
}

// AtLeast refuses values under lo; what says why lo, e.g. "MaxRows".
func AtLeast[T number](field string, v, lo T, what string) error {
	if v >= lo {
		return nil
	}
	want := fmt.Sprint(lo, " or more")
	if what != "" {
		want += " (" + what + ")"
	}
	return &ConfigError{Field: field, Value: v, Want: want}
}

// Between refuses values outside [lo, hi].
func Between[T number](field string, v, lo, hi T) error {
	if v >= lo && v <= hi {
		return nil
	}
	return &ConfigError{Field: field, Value: v, Want: fmt.Sprint("from ", lo, " to ", hi)}
}

// NotEmpty refuses an empty string.
func NotEmpty(field, v string) error {
	if v != "" {
		return nil
	}
	return &ConfigError{Field: field, Value: `""`, Want: "a value"}
}

// ServiceError is a failure on the server's side, answered with a 5xx
// status. Message is what a client may read; Err, the cause (ClickHouse's
// own text, addresses), goes to the log only.
type ServiceError struct {
	Status  int // e.g. 500, 503
	Message string
	Err     error
}

func (e *ServiceError) Error() string { return e.Message + ": " + e.Err.Error() }
func (e *ServiceError) Unwrap() error { return e.Err }

// PositiveOr returns v when it is positive, else def: the WithDefaults
// methods use it where zero and negative values can only mean "unset".
func PositiveOr[T number](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// AtMost refuses values over hi.
func AtMost[T number](field string, v, hi T) error {
	if v <= hi {
		return nil
	}
	return &ConfigError{Field: field, Value: v, Want: fmt.Sprint(hi, " or less")}
}
