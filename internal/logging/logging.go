// Package logging builds the agent's slog logger: tint text output (colour
// only on a terminal) or JSON, level filtering, and a ReplaceAttr that keeps
// credentials out of every log line. Limiter rate-limits a line that a
// failing loop would otherwise repeat every second.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/lmittmann/tint"
	"github.com/mattn/go-isatty"
)

// Formats.
const (
	FormatText = "text"
	FormatJSON = "json"
)

// timeFormat is the text format's timestamp: sortable, with the date (a
// daemon's log spans days), millisecond precision.
const timeFormat = "2006-01-02 15:04:05.000"

// New returns a logger writing to w at level (debug, info, warn or warning,
// error; any case) in format (text or json). Text output is coloured only
// when w is a terminal and NO_COLOR is not set.
func New(w io.Writer, level, format string) (*slog.Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	switch strings.ToLower(format) {
	case FormatText, "":
		return slog.New(tint.NewTextHandler(w, &tint.Options{
			Level:       lvl,
			TimeFormat:  timeFormat,
			NoColor:     !colour(w),
			ReplaceAttr: Redact,
		})), nil
	case FormatJSON:
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
			Level:       lvl,
			ReplaceAttr: Redact,
		})), nil
	default:
		return nil, fmt.Errorf("log format %q: want text or json", format)
	}
}

// ParseLevel maps debug, info, warn (or warning) and error to slog levels.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log level %q: want one of %s", s, levelNames)
}

// colour reports whether w is a terminal that should get ANSI colours.
func colour(w io.Writer) bool {
	if _, off := os.LookupEnv("NO_COLOR"); off {
		return false
	}
	f, ok := w.(interface{ Fd() uintptr })
	if !ok {
		return false
	}
	return isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())
}

// Discard is a logger that drops everything, for tests and callers that
// were given no logger.
func Discard() *slog.Logger {
	return slog.New(slog.DiscardHandler)
}
