package events

import (
	"errors"
	"fmt"
)

// ErrNotFound is returned for a dead letter that does not exist.
var ErrNotFound = errors.New("not found")

// PermanentError marks a handler failure that retrying cannot fix (a
// malformed event, a reference that will never resolve). The consume
// adapter terminates the delivery and records a dead letter.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err as a PermanentError; nil stays nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// Permanentf is Permanent(fmt.Errorf(format, args...)).
func Permanentf(format string, args ...any) error {
	return Permanent(fmt.Errorf(format, args...))
}

// IsPermanent reports whether err is or wraps a PermanentError.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}
