package docker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errhttp"
	"github.com/docker/docker/client"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// daemonPrefix starts the text of every error the daemon answered with.
const daemonPrefix = "Error response from daemon: "

// dockerError turns an error of a Docker call into a protocol error whose
// text names what failed ("start container web-1") and why (the daemon's
// message with its HTTP status, as the seed reported it), and whose code
// classifies it. It never adds request data such as environment values.
func dockerError(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", what, err)
	}
	msg := strings.Join(strings.Fields(err.Error()), " ") // daemons put newlines in messages
	code := errorCode(err)
	switch {
	case strings.HasPrefix(msg, daemonPrefix):
		msg = fmt.Sprintf("%s (Status: %d)", strings.TrimPrefix(msg, daemonPrefix), errhttp.ToHTTP(err))
	case code == protocol.CodeTimeout:
		msg = "the Docker Engine did not answer in time"
	case code == protocol.CodeUnavailable && client.IsErrConnectionFailed(err):
		msg = "the Docker Engine is unreachable: " + msg
	}
	return &protocol.Error{Code: code, Err: &causeError{text: what + ": " + msg, cause: err}}
}

// errorCode classifies a Docker client error.
func errorCode(err error) protocol.Code {
	switch {
	case errors.Is(err, context.DeadlineExceeded) || cerrdefs.IsDeadlineExceeded(err):
		return protocol.CodeTimeout
	case client.IsErrConnectionFailed(err), cerrdefs.IsUnavailable(err), errors.Is(err, context.Canceled):
		return protocol.CodeUnavailable
	case isNotFound(err):
		return protocol.CodeNotFound
	case cerrdefs.IsConflict(err), cerrdefs.IsAlreadyExists(err), cerrdefs.IsFailedPrecondition(err):
		return protocol.CodeConflict
	case cerrdefs.IsInvalidArgument(err):
		return protocol.CodeInvalid
	case cerrdefs.IsPermissionDenied(err), cerrdefs.IsUnauthorized(err):
		return protocol.CodeForbidden
	default:
		return protocol.CodeInternal
	}
}

func isNotFound(err error) bool { return cerrdefs.IsNotFound(err) }

// causeError is an error with its own text that still unwraps to the Docker
// client's error for errors.Is/As.
type causeError struct {
	text  string
	cause error
}

func (e *causeError) Error() string { return e.text }
func (e *causeError) Unwrap() error { return e.cause }
