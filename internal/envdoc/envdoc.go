// Package envdoc reads the documentation of environment variables from a
// configuration struct's tags, so that one struct is the single source of a
// program's configuration, its `help` output and its README table.
//
// Tags read: `env:"NAME,..."` (caarlos0/env), `envDefault:"..."`, `shown:"..."`
// (the default as a reader should see it, overriding envDefault, e.g.
// "(host name)"), and `help:"..."`. Fields without an env name are skipped.
package envdoc

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
	t := reflect.TypeFor[T]()
	var vars []Variable
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		if name == "" {
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
