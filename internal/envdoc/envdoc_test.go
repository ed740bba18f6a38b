package envdoc

import (
	"reflect"
	"strings"
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

func TestTextFitsEightyColumns(t *testing.T) {
	long := strings.Repeat("word ", 60)
	vars := []Variable{
		{Name: "SERVER_URL", Default: "ws://localhost:3000", Help: long},
		{Name: "NODE_NAME", Default: "(host name)", Help: "node name"},
		{Name: "NODE_TOKEN", Help: "the token"},
	}
	out := Text(vars, 80)
	for i, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if len(l) > 80 {
			t.Errorf("line %d is %d columns: %q", i+1, len(l), l)
		}
	}
	for _, want := range []string{"SERVER_URL  default ws://localhost:3000\n    word word", "NODE_NAME  (host name)\n    node name\n", "\nNODE_TOKEN\n    the token\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if got := strings.Count(out, "word"); got != 60 {
		t.Errorf("%d words after wrapping, want 60 (none lost)", got)
	}
}

func TestDurationHint(t *testing.T) {
	for in, want := range map[string]string{
		"10":  `HEARTBEAT_INTERVAL: "10" has no unit: add a unit: 10s (or 10m, 10ms)`,
		"1.5": `HEARTBEAT_INTERVAL: "1.5" has no unit: add a unit: 1.5s (or 1.5m, 1.5ms)`,
		"10x": "",
		"0":   "",
		"":    "",
	} {
		if got := DurationHint("HEARTBEAT_INTERVAL", in); got != want {
			t.Errorf("DurationHint(%q) = %q, want %q", in, got, want)
		}
	}
}
