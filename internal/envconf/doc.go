// Package envconf reads a program's configuration from environment
// variables into a struct whose tags also document it, so that one struct
// is the single source of the configuration, of its error messages, of the
// `help` output and of the README table. lormas-agent (internal/config) and
// lormas-server (internal/server) both read their configuration through it;
// caarlos0/env parses the values.
//
// Tags read: `env:"NAME,..."` (caarlos0/env), `envDefault:"..."`, `shown:"..."`
// (the default as a reader should see it, overriding envDefault, e.g.
// "(host name)"), and `help:"..."`. Fields without an env name are skipped;
// an embedded struct without one contributes its own fields in place.
//
// Every problem is one line that starts with the variable it concerns,
// "NAME: what is wrong", so that a whole configuration is checked at once
// and each line says what to fix (Problems, Error).
package envconf

import (
	"reflect"
	"strings"
)

// Variable documents one configuration variable.
type Variable struct {
	Name    string // environment variable
	Default string // as shown; "" when there is none
	Help    string // meaning
}

// Of lists the variables of struct type T in field order.
func Of[T any]() []Variable {
	return appendVars(nil, reflect.TypeFor[T]())
}

func appendVars(vars []Variable, t reflect.Type) []Variable {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		if name == "" {
			if f.Anonymous && f.Type.Kind() == reflect.Struct {
				vars = appendVars(vars, f.Type)
			}
			continue
		}
		def, ok := f.Tag.Lookup("shown")
		if !ok {
			def = f.Tag.Get("envDefault")
		}
		vars = append(vars, Variable{Name: name, Default: def, Help: f.Tag.Get("help")})
	}
	return vars
}

// varOfField maps a field of T (possibly promoted from an embedded struct)
// to its variable; the field name when it has none.
func varOfField[T any](field string) string {
	f, ok := reflect.TypeFor[T]().FieldByName(field)
	if !ok {
		return field
	}
	if name, _, _ := strings.Cut(f.Tag.Get("env"), ","); name != "" {
		return name
	}
	return field
}
