package envconf

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
)

// Parse reads T from environ (variable to value) with caarlos0/env. A
// value that does not parse is a problem of its variable, added to p
// ("NAME: why", naming the variable, not the Go field; a duration without
// a unit says which unit to add). The caller then adds what its own
// validation finds to p and ends with p.Err.
func Parse[T any](environ map[string]string, p *Problems) T {
	v, err := env.ParseAsWithOptions[T](env.Options{Environment: environ})
	if err == nil {
		return v
	}
	for _, e := range unwrapAll(err) {
		var pe env.ParseError
		if !errors.As(e, &pe) {
			p.Line(e.Error())
			continue
		}
		name := varOfField[T](pe.Name)
		if pe.Type == reflect.TypeFor[time.Duration]() {
			if hint := DurationHint(name, environ[name]); hint != "" {
				p.Line(hint)
				p.fail(name)
				continue
			}
		}
		inner := pe.Err
		var pve env.ParseValueError
		if errors.As(inner, &pve) {
			inner = pve.Err
		}
		p.Add(name, "%v", inner)
		p.fail(name)
	}
	return v
}

func unwrapAll(err error) []error {
	if agg, ok := errors.AsType[env.AggregateError](err); ok {
		return agg.Errors
	}
	if m, ok := err.(interface{ Unwrap() []error }); ok {
		return m.Unwrap()
	}
	return []error{err}
}

// Problems collects the problems of a configuration, one line each, in the
// order found. The zero value is ready to use.
type Problems struct {
	lines  []string
	failed map[string]bool // variables whose value did not parse
}

// Add records a problem of the variable name: "name: " and the formatted
// text. A variable whose value did not parse has been reported already;
// further problems with it would be about the zero value left behind, so
// Add drops them.
func (p *Problems) Add(name, format string, args ...any) {
	if p.failed[name] {
		return
	}
	p.lines = append(p.lines, name+": "+fmt.Sprintf(format, args...))
}

// Line records a problem as it is, for one that names its source itself
// (".env line 3: ...").
func (p *Problems) Line(line string) { p.lines = append(p.lines, line) }

// Failed reports whether name's value did not parse.
func (p *Problems) Failed(name string) bool { return p.failed[name] }

func (p *Problems) fail(name string) {
	if p.failed == nil {
		p.failed = map[string]bool{}
	}
	p.failed[name] = true
}

// Err returns the problems as an *Error, nil when there are none.
func (p *Problems) Err() error {
	if len(p.lines) == 0 {
		return nil
	}
	return &Error{Problems: append([]string(nil), p.lines...)}
}

// Error is an invalid configuration: every problem found, one line each.
// Programs print one line per problem and exit with status 2.
type Error struct {
	Problems []string
}

func (e *Error) Error() string {
	return "invalid configuration:\n  " + strings.Join(e.Problems, "\n  ")
}

// Lines splits err into its problems: an *Error's lines, else err's text
// as one line; nil for nil.
func Lines(err error) []string {
	if err == nil {
		return nil
	}
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Problems
	}
	return []string{err.Error()}
}
