package outbox

import (
	"errors"
	"fmt"
)

// ErrInvalidEvent matches (under errors.Is) every validation error that
// Publish returns, whatever was wrong with the event.
var ErrInvalidEvent = errors.New("invalid outbox event")

// Sentinels for what was wrong with an event. Publish wraps them in an
// *EventError, so errors.Is(err, ErrInvalidTraceparent) and so on work.
var (
	ErrInvalidType            = errors.New("invalid event type")
	ErrInvalidContext         = errors.New("invalid event context")
	ErrContextTooLarge        = errors.New("event context too large")
	ErrInvalidEnvironment     = errors.New("invalid environment")
	ErrInvalidTraceparent     = errors.New("invalid traceparent")
	ErrInvalidMetadataVersion = errors.New("invalid metadata version")
	ErrInvalidTime            = errors.New("invalid event time")
	ErrDuplicateID            = errors.New("duplicate event id")
)

// EventError reports an event that Publish refused before touching the
// database. Err wraps one of the sentinels above.
type EventError struct {
	Index int    // position of the event among those passed to Publish
	Type  string // the event's Type, possibly empty
	Err   error
}

func (e *EventError) Error() string {
	return fmt.Sprintf("outbox: event %d (type %q): %v", e.Index, e.Type, e.Err)
}

// Unwrap returns the specific error, which wraps a sentinel.
func (e *EventError) Unwrap() error { return e.Err }

// Is makes every EventError match ErrInvalidEvent.
func (e *EventError) Is(target error) bool { return target == ErrInvalidEvent }
