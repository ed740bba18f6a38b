package envdoc

import (
	"reflect"
	"testing"
)

func TestOf(t *testing.T) {
	type conf struct {
		A string `env:"A_VAR,required" envDefault:"x" help:"the a"`
		B int    `env:"B_VAR" envDefault:"1" shown:"one" help:"the b"`
		c string // unexported, no tag
		D string `help:"no env name: skipped"`
		E bool   `env:"E_VAR"`
	}
	_ = conf{}.c
	want := []Variable{
		{Name: "A_VAR", Default: "x", Help: "the a"},
		{Name: "B_VAR", Default: "one", Help: "the b"},
		{Name: "E_VAR"},
	}
	if got := Of[conf](); !reflect.DeepEqual(got, want) {
		t.Errorf("Of = %+v\nwant %+v", got, want)
	}
}
