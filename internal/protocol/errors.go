package protocol

import (
	"context"
	"errors"
	"fmt"
)

// Code classifies a failed command (command_result "code").
type Code string

// Error codes (docs/protocol.md).
const (
	CodeInvalid     Code = "invalid"
	CodeNotFound    Code = "not_found"
	CodeConflict    Code = "conflict"
	CodeForbidden   Code = "forbidden"
	CodeUnavailable Code = "unavailable"
	CodeTimeout     Code = "timeout"
	CodeInternal    Code = "internal"
)

// Error is an error with a protocol code. Its text is the sentence that goes
// into command_result "error".
type Error struct {
	Code Code
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and a message formatted as by
// fmt.Errorf (so %w wraps).
func Errorf(code Code, format string, args ...any) error {
	return &Error{Code: code, Err: fmt.Errorf(format, args...)}
}

// CodeOf returns the protocol code of err: the code of the outermost *Error in
// its chain, timeout for a context deadline, unavailable for a cancellation,
// else internal.
func CodeOf(err error) Code {
	var pe *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &pe):
		return pe.Code
	case errors.Is(err, context.DeadlineExceeded):
		return CodeTimeout
	case errors.Is(err, context.Canceled):
		return CodeUnavailable
	default:
		return CodeInternal
	}
}

// Success builds a successful command_result.
func Success(commandID string, result any, warnings []string) *CommandResult {
	return &CommandResult{Type: TypeCommandResult, CommandID: commandID, Status: StatusSuccess, Result: result, Warnings: warnings}
}

// Failure builds a failed command_result from err.
func Failure(commandID string, err error, warnings []string) *CommandResult {
	return &CommandResult{Type: TypeCommandResult, CommandID: commandID, Status: StatusError, Error: err.Error(), Code: CodeOf(err), Warnings: warnings}
}
