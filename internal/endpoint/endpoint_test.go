package endpoint

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct{ in, want string }{
		{"ws://localhost:3000", "ws://localhost:3000"},
		{"ws://localhost:3000/", "ws://localhost:3000"},
		{"http://example.com", "ws://example.com"},
		{"https://example.com/lormas/", "wss://example.com/lormas"},
		{"wss://example.com//", "wss://example.com"},
		{" ws://h:1?x=1#f ", "ws://h:1"},
	}
	for _, tt := range tests {
		u, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got := u.String(); got != tt.want {
			t.Errorf("Parse(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	for _, bad := range []string{"", "localhost:3000", "ftp://h", "ws://", "ws://user:secret@h", "://x"} {
		_, err := Parse(bad)
		if err == nil {
			t.Errorf("Parse(%q) succeeded, want error", bad)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("Parse(%q) error leaks user info: %v", bad, err)
		}
	}
}

func TestNodeSocketURL(t *testing.T) {
	u, _ := Parse("https://example.com/base/")
	if got, want := NodeSocketURL(u, "a.b+c"), "wss://example.com/base/api/ws/nodes?token=a.b%2Bc"; got != want {
		t.Errorf("NodeSocketURL = %q, want %q", got, want)
	}
	if got, want := HTTPURL(u, "/api/nodes/enroll"), "https://example.com/base/api/nodes/enroll"; got != want {
		t.Errorf("HTTPURL = %q, want %q", got, want)
	}
	u, _ = Parse("ws://127.0.0.1:3000")
	if got, want := HTTPURL(u, "/x"), "http://127.0.0.1:3000/x"; got != want {
		t.Errorf("HTTPURL = %q, want %q", got, want)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"ws://h/api/ws/nodes?token=eyJsecret": "ws://h/api/ws/nodes?token=REDACTED",
		"ws://h/x?a=1&Token=s3cret":           "ws://h/x?Token=REDACTED&a=1",
		"https://u:pw@h/":                     "https://REDACTED@h/",
		"ws://h/plain":                        "ws://h/plain",
		"%zz://bad?token=s3cret":              "<unparseable URL>",
	} {
		got := Redact(in)
		if got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
		if strings.Contains(got, "secret") || strings.Contains(got, "pw") {
			t.Errorf("Redact(%q) leaks: %q", in, got)
		}
	}
}
