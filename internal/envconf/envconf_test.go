package envconf

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/secret"
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

type Embedded struct {
	Level string `env:"LEVEL" envDefault:"info" help:"the level"`
}

type parsed struct {
	Name     string        `env:"NAME" help:"a name"`
	Embedded               // its fields come in place
	Count    int           `env:"COUNT" envDefault:"3" help:"a count"`
	Interval time.Duration `env:"INTERVAL" envDefault:"1s" help:"an interval"`
}

func TestOfEmbedded(t *testing.T) {
	var names []string
	for _, v := range Of[parsed]() {
		names = append(names, v.Name)
	}
	if want := []string{"NAME", "LEVEL", "COUNT", "INTERVAL"}; !reflect.DeepEqual(names, want) {
		t.Errorf("variables %q, want %q", names, want)
	}
}

// Values that do not parse are problems of their variables, named as such
// (not as Go fields), one line each, and further problems of the same
// variable (its zero value) are dropped.
func TestParseNamesTheVariable(t *testing.T) {
	p := &Problems{}
	v := Parse[parsed](map[string]string{"NAME": "x", "LEVEL": "debug", "COUNT": "many", "INTERVAL": "10"}, p)
	if v.Name != "x" || v.Level != "debug" {
		t.Errorf("parsed %+v", v)
	}
	p.Add("COUNT", "must be positive, got %d", v.Count) // the zero value: dropped
	p.Add("NAME", "is taken")
	p.Line(".env line 3: want KEY=VALUE")
	want := []string{
		`COUNT: strconv.ParseInt: parsing "many": invalid syntax`,
		`INTERVAL: "10" has no unit: add a unit: 10s (or 10m, 10ms)`,
		"NAME: is taken",
		".env line 3: want KEY=VALUE",
	}
	err := p.Err()
	got := Lines(err)
	slices.Sort(got[:2]) // caarlos0/env's order
	if !reflect.DeepEqual(got, want) {
		t.Errorf("problems\n got %q\nwant %q", got, want)
	}
	if !p.Failed("COUNT") || p.Failed("NAME") {
		t.Error("Failed does not tell the variables that did not parse")
	}
	if s := err.Error(); !strings.HasPrefix(s, "invalid configuration:\n  ") || strings.Count(s, "\n") != len(want) {
		t.Errorf("error text %q, want a title and one line per problem", s)
	}

	var none Problems
	if Parse[parsed](map[string]string{}, &none); none.Err() != nil {
		t.Errorf("defaults: %v", none.Err())
	}
	if got := Lines(errors.New("plain")); !reflect.DeepEqual(got, []string{"plain"}) || Lines(nil) != nil {
		t.Errorf("Lines of a plain error = %q", got)
	}
}

// X and X_FILE: one or the other, the file read and trimmed, problems that
// name the variable and never the secret.
func TestSecret(t *testing.T) {
	const s = "s3cret-value-0123456789"
	dir := t.TempDir()
	file := filepath.Join(dir, "secret")
	if err := os.WriteFile(file, []byte(" "+s+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		value string
		file  string
		want  string // the secret, or the problem
	}{
		{"neither", "", "", ""},
		{"value, trimmed", s + "\n", "", s},
		{"file, trimmed", "", file, s},
		{"both", s, file, "TOKEN: set only one of TOKEN and TOKEN_FILE"},
		{"missing file", "", filepath.Join(dir, "none"), "TOKEN_FILE: open " + filepath.Join(dir, "none") + ": no such file or directory"},
		{"empty file", "", empty, "TOKEN_FILE: " + empty + ": file is empty"},
	} {
		var p Problems
		got := p.Secret("TOKEN", secret.New(c.value), c.file)
		switch lines := Lines(p.Err()); {
		case len(lines) == 1:
			if lines[0] != c.want || !got.IsZero() {
				t.Errorf("%s: problem %q, want %q", c.name, lines[0], c.want)
			}
			if strings.Contains(lines[0], s) {
				t.Errorf("%s: the problem shows the secret", c.name)
			}
		case len(lines) > 1:
			t.Errorf("%s: problems %q", c.name, lines)
		case got.Reveal() != c.want:
			t.Errorf("%s: secret %q, want %q", c.name, got.Reveal(), c.want)
		}
	}
}

func TestMarkdown(t *testing.T) {
	vars := Of[parsed]()
	table := Markdown(vars)
	if !strings.Contains(table, "| `LEVEL`    | `info`  | the level |") {
		t.Errorf("table:\n%s", table)
	}
	doc := "# Title\n\n" + table + "\ntext\n"
	if err := CheckMarkdown([]byte(doc), vars); err != nil {
		t.Errorf("rendered table does not check: %v", err)
	}
	if err := CheckMarkdown([]byte(strings.Replace(doc, "`3`", "`4`", 1)), vars); err == nil || !strings.Contains(err.Error(), "COUNT") {
		t.Errorf("changed default: %v", err)
	}
	if err := CheckMarkdown([]byte("no table"), vars); !errors.Is(err, ErrNoTable) {
		t.Errorf("no table: %v", err)
	}
}
