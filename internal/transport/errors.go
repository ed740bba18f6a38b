package transport

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/lxzan/gws"
)

// Errors of a connection, matched with errors.Is.
var (
	// ErrAuth matches every *AuthError: the server refused the node token.
	ErrAuth = errors.New("server rejected the node token")
	// ErrClosed is returned by Send after the connection has ended.
	ErrClosed = errors.New("connection closed")
	// ErrFrameTooLarge is returned by Send for a frame over the write limit;
	// the connection stays up.
	ErrFrameTooLarge = errors.New("frame exceeds the size limit")
	// ErrMessageTooLarge ends a connection whose peer sent a frame over
	// MAX_MESSAGE_BYTES (closed with 1009).
	ErrMessageTooLarge = errors.New("server sent a frame over the size limit")
	// ErrKeepalive ends a connection on which nothing was read for the read
	// timeout (half-open connection).
	ErrKeepalive = errors.New("keepalive: nothing received from the server")
	// ErrWriteTimeout ends a connection whose peer stopped reading; the
	// Send whose write timed out (on its caller's goroutine or the
	// writer's) fails with it too.
	ErrWriteTimeout = errors.New("write timed out: the server is not reading")
	// ErrQueueFull is returned by SendPriority when the control lane is full.
	ErrQueueFull = errors.New("control queue full")
)

// Close codes with a meaning for the agent.
const (
	CloseNormal        = 1000
	CloseGoingAway     = 1001
	ClosePolicy        = 1008 // also an auth failure for Lormas servers
	CloseTooLarge      = 1009
	CloseUnauthorized  = 4001
	CloseForbidden     = 4003
	closeNoStatus      = 1005
	closeAbnormal      = 1006
	closeReasonMaxSize = 123
)

// AuthError reports that the server refused the node token: HTTP 401/403 at
// the upgrade, or a close frame with code 4001, 4003 or 1008.
type AuthError struct {
	Status    int    // HTTP status at the upgrade, or 0
	CloseCode uint16 // close code, or 0
	Reason    string // the close reason or HTTP status text
}

func (e *AuthError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("server rejected the node token: HTTP %d %s", e.Status, e.Reason)
	}
	if e.Reason == "" {
		return fmt.Sprintf("server rejected the node token: closed with code %d", e.CloseCode)
	}
	return fmt.Sprintf("server rejected the node token: closed with code %d (%s)", e.CloseCode, e.Reason)
}

// Is makes errors.Is(err, ErrAuth) true.
func (e *AuthError) Is(target error) bool { return target == ErrAuth }

// UpgradeError reports a handshake answered with a status other than 101
// that is not an auth failure.
type UpgradeError struct {
	Status int
	URL    string // the URL dialled, token redacted
}

func (e *UpgradeError) Error() string {
	if e.URL == "" {
		return fmt.Sprintf("server refused the WebSocket upgrade: HTTP %d", e.Status)
	}
	return fmt.Sprintf("server refused the WebSocket upgrade of %s: HTTP %d", e.URL, e.Status)
}

// CloseError reports a connection ended by a close frame.
type CloseError struct {
	Code   uint16
	Reason string
	Local  bool // the agent closed it
}

func (e *CloseError) Error() string {
	who := "server"
	if e.Local {
		who = "agent"
	}
	if e.Reason == "" {
		return fmt.Sprintf("%s closed the connection with code %d", who, e.Code)
	}
	return fmt.Sprintf("%s closed the connection with code %d (%s)", who, e.Code, e.Reason)
}

// IsAuthCloseCode reports whether a close code means the token was refused.
func IsAuthCloseCode(code uint16) bool {
	return code == CloseUnauthorized || code == CloseForbidden || code == ClosePolicy
}

// statusCoder matches gws's internal StatusCode, which a connection failed
// by gws itself (e.g. 1009 for an oversize frame) reports to OnClose.
type statusCoder interface {
	error
	Uint16() uint16
}

// classify turns what gws reported (readErr to OnClose, writeErr from the
// writer) into the error a Conn ends with.
func classify(readErr, writeErr error, localCode uint16, readLimit int) error {
	if localCode != 0 {
		return &CloseError{Code: localCode, Local: true}
	}
	var ce *gws.CloseError
	if errors.As(readErr, &ce) {
		reason := string(ce.Reason)
		if IsAuthCloseCode(ce.Code) {
			return &AuthError{CloseCode: ce.Code, Reason: reason}
		}
		return &CloseError{Code: ce.Code, Reason: reason}
	}
	// gws ends its read loop with the error of a failed write too (the
	// connection's close reason), so a write error may reach only
	// readErr: a write's deadline is ErrWriteTimeout, never a keepalive
	// failure, whether or not its writer has recorded it yet.
	if writeErr == nil && isWriteError(readErr) {
		writeErr = readErr
	}
	if writeErr != nil {
		if errors.Is(writeErr, os.ErrDeadlineExceeded) {
			return ErrWriteTimeout
		}
		return fmt.Errorf("write: %w", writeErr)
	}
	var sc statusCoder
	if errors.As(readErr, &sc) {
		if sc.Uint16() == CloseTooLarge {
			return fmt.Errorf("%w (limit %d bytes); closed with code 1009", ErrMessageTooLarge, readLimit)
		}
		return &CloseError{Code: sc.Uint16(), Reason: strings.TrimPrefix(sc.Error(), "gws: "), Local: true}
	}
	switch {
	case readErr == nil:
		return ErrClosed
	case errors.Is(readErr, os.ErrDeadlineExceeded):
		return ErrKeepalive
	case errors.Is(readErr, io.EOF), errors.Is(readErr, io.ErrUnexpectedEOF):
		return errors.New("server closed the connection without a close frame")
	case errors.Is(readErr, net.ErrClosed):
		return ErrClosed
	}
	return fmt.Errorf("connection lost: %w", readErr)
}

// isWriteError reports whether err is the failure of a write on the
// socket (gws hands a failed write's error to OnClose as the reason the
// connection ended).
func isWriteError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "write"
}

// redactedError hides a secret from an error's text while keeping the chain
// for errors.Is/As.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redact returns err with every occurrence of secret in its text replaced.
func redact(err error, secret string) error {
	if err == nil || secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return &redactedError{msg: strings.ReplaceAll(err.Error(), secret, "REDACTED"), err: err}
}
