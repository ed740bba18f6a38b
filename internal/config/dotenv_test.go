package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseDotEnv(t *testing.T) {
	content := strings.Join([]string{
		"# comment",
		"",
		"   ",
		"A=plain",
		"B = spaced value  ",
		"export C=exported",
		"D='single # not a comment $HOME \\n'",
		`E="double \"quoted\"\n\tescape \\ \$HOME"`,
		"F=value # inline comment",
		"G=",
		"H=url#fragment",
		"I='quoted'   # trailing comment",
		"J=a=b=c",
		"K=\"crlf\"\r",
		"export=not-a-prefix",
		"A=overridden",
		"",
	}, "\n")
	got, errs := parseDotEnv(".env", content)
	if len(errs) != 0 {
		t.Fatalf("errors: %v", errs)
	}
	want := map[string]string{
		"A":      "overridden",
		"B":      "spaced value",
		"C":      "exported",
		"D":      `single # not a comment $HOME \n`,
		"E":      "double \"quoted\"\n\tescape \\ $HOME",
		"F":      "value",
		"G":      "",
		"H":      "url#fragment",
		"I":      "quoted",
		"J":      "a=b=c",
		"K":      "crlf",
		"export": "not-a-prefix",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestParseDotEnvMalformed(t *testing.T) {
	const secret = "hunter2-very-secret"
	cases := []struct {
		line string
		want string
	}{
		{"JUSTAKEY", ".env line 2 (JUSTAKEY): missing \"=\""},
		{"no equals here " + secret, ".env line 2: want KEY=VALUE"},
		{"1BAD=" + secret, ".env line 2: invalid variable name"},
		{"BAD-KEY=" + secret, ".env line 2: invalid variable name"},
		{"TOKEN='" + secret, ".env line 2 (TOKEN): unterminated single quote"},
		{`TOKEN="` + secret, ".env line 2 (TOKEN): unterminated double quote"},
		{`TOKEN="` + secret + `\`, ".env line 2 (TOKEN): unterminated double quote"},
		{`TOKEN="` + secret + `\q"`, ".env line 2 (TOKEN): unknown escape"},
		{`TOKEN="` + secret + `" trailing`, ".env line 2 (TOKEN): unexpected text after the closing quote"},
		{`TOKEN='` + secret + `'x`, ".env line 2 (TOKEN): unexpected text after the closing quote"},
	}
	for _, c := range cases {
		t.Run(c.line, func(t *testing.T) {
			_, errs := parseDotEnv(".env", "OK=1\n"+c.line+"\nALSO_OK=2\n")
			if len(errs) != 1 {
				t.Fatalf("got %d errors %v, want 1", len(errs), errs)
			}
			msg := errs[0].Error()
			if !strings.HasPrefix(msg, c.want) {
				t.Errorf("error %q, want prefix %q", msg, c.want)
			}
			if strings.Contains(msg, secret) {
				t.Errorf("error echoes the value: %q", msg)
			}
		})
	}
}

func TestParseDotEnvCollectsEveryBadLine(t *testing.T) {
	vars, errs := parseDotEnv(".env", "A\nB=1\nC'\n=x\n")
	if len(errs) != 3 {
		t.Fatalf("got %d errors %v, want 3", len(errs), errs)
	}
	for i, n := range []string{"line 1", "line 3", "line 4"} {
		if !strings.Contains(errs[i].Error(), n) {
			t.Errorf("error %d %q does not name %s", i, errs[i], n)
		}
	}
	if vars["B"] != "1" {
		t.Errorf("good line lost: %v", vars)
	}
}

func FuzzParseDotEnv(f *testing.F) {
	for _, s := range []string{"A=1", "export B='x'", `C="a\"b"`, "D=e # f", "#x\n\nG", `H="\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		vars, errs := parseDotEnv(".env", s)
		for k := range vars {
			if !validKey(k) {
				t.Errorf("accepted invalid key %q", k)
			}
		}
		for _, e := range errs {
			if !strings.HasPrefix(e.Error(), ".env line ") {
				t.Errorf("error without line number: %v", e)
			}
		}
	})
}
