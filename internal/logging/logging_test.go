package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/secret"
)

const tok = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJuMSJ9.c2lnbmF0dXJl"

func TestJSONShape(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.With("component", "agent").Info("connected", "server", "ws://x", "attempt", 3)
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("not one JSON object: %q: %v", buf.String(), err)
	}
	want := map[string]any{"level": "INFO", "msg": "connected", "component": "agent", "server": "ws://x", "attempt": float64(3)}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	ts, _ := got["time"].(string)
	if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
		t.Errorf("time %q is not RFC 3339: %v", ts, err)
	}
}

func TestLevelFiltering(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		for _, c := range []struct {
			level string
			want  []string
		}{
			{"debug", []string{"d-line", "i-line", "w-line", "e-line"}},
			{"info", []string{"i-line", "w-line", "e-line"}},
			{"WARN", []string{"w-line", "e-line"}},
			{"error", []string{"e-line"}},
		} {
			t.Run(format+"/"+c.level, func(t *testing.T) {
				var buf bytes.Buffer
				log, err := New(&buf, c.level, format)
				if err != nil {
					t.Fatal(err)
				}
				log.Debug("d-line")
				log.Info("i-line")
				log.Warn("w-line")
				log.Error("e-line")
				lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
				if len(lines) != len(c.want) {
					t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(c.want), buf.String())
				}
				for i, w := range c.want {
					if !strings.Contains(lines[i], w) {
						t.Errorf("line %d = %q, want %s", i, lines[i], w)
					}
				}
			})
		}
	}
}

func TestInvalidLevelAndFormat(t *testing.T) {
	if _, err := New(&bytes.Buffer{}, "loud", "text"); err == nil {
		t.Error("level loud accepted")
	}
	if _, err := New(&bytes.Buffer{}, "info", "xml"); err == nil {
		t.Error("format xml accepted")
	}
}

func TestTextHasNoColourOffTerminal(t *testing.T) {
	var buf bytes.Buffer
	log, _ := New(&buf, "info", "text")
	log.Info("hello", "k", "v")
	if strings.Contains(buf.String(), "\x1b[") {
		t.Errorf("ANSI escapes written to a non-terminal: %q", buf.String())
	}
	if !strings.Contains(buf.String(), "INF hello k=v") {
		t.Errorf("unexpected text line %q", buf.String())
	}
}

func TestRedaction(t *testing.T) {
	secret := secret.New(tok)
	u, _ := url.Parse("wss://lormas.example/api/ws/nodes?token=" + tok)
	cases := []struct {
		name string
		attr slog.Attr
		keep string // must still be visible
	}{
		{"key token", slog.String("token", tok), ""},
		{"key nodeToken", slog.String("nodeToken", tok), ""},
		{"key Authorization", slog.String("Authorization", "Bearer "+tok), ""},
		{"key password", slog.String("db_password", tok), ""},
		{"key secret", slog.Any("jwtSecret", []byte(tok)), ""},
		{"secret value", slog.Any("value", secret), ""},
		{"secret pointer", slog.Any("value", &secret), ""},
		{"url value", slog.Any("url", u), "lormas.example"},
		{"url string", slog.String("url", u.String()), "lormas.example"},
		{"error", slog.Any("err", fmt.Errorf("dial %s: %w", u, errors.New("refused"))), "refused"},
		{"bearer in text", slog.String("header", "Authorization: Bearer "+tok), "Authorization"},
		{"group", slog.Group("req", slog.String("token", tok), slog.Any("s", secret)), ""},
	}
	for _, format := range []string{"text", "json"} {
		for _, c := range cases {
			t.Run(format+"/"+c.name, func(t *testing.T) {
				var buf bytes.Buffer
				log, _ := New(&buf, "debug", format)
				log.Info("event", c.attr)
				out := buf.String()
				if strings.Contains(out, tok) || strings.Contains(out, tok[:12]) {
					t.Errorf("credential in output: %s", out)
				}
				if !strings.Contains(out, Redacted) {
					t.Errorf("no %s marker: %s", Redacted, out)
				}
				if c.keep != "" && !strings.Contains(out, c.keep) {
					t.Errorf("redaction removed %q too: %s", c.keep, out)
				}
			})
		}
	}
}

func TestRedactionKeepsHarmlessAttrs(t *testing.T) {
	var buf bytes.Buffer
	log, _ := New(&buf, "info", "json")
	log.Info("event", "tokenFile", "/run/secrets/node-token", "node", "n1", "query", "a=b&c=d")
	for _, want := range []string{"/run/secrets/node-token", `"node":"n1"`, `"query":"a=b&c=d"`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("%s missing from %s", want, buf.String())
		}
	}
}

func TestLimiter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := Every(time.Minute)
	l.now = func() time.Time { return now }
	step := func(d time.Duration) { now = now.Add(d) }

	if ok, n := l.Allow(); !ok || n != 0 {
		t.Fatalf("first: %v %d", ok, n)
	}
	for range 5 {
		step(time.Second)
		if ok, _ := l.Allow(); ok {
			t.Fatal("allowed within the interval")
		}
	}
	step(time.Minute)
	if ok, n := l.Allow(); !ok || n != 5 {
		t.Fatalf("after the interval: ok=%v suppressed=%d, want true 5", ok, n)
	}
	step(time.Second)
	l.Allow()
	l.Reset()
	if ok, n := l.Allow(); !ok || n != 0 {
		t.Fatalf("after Reset: ok=%v suppressed=%d", ok, n)
	}

	var buf bytes.Buffer
	log, _ := New(&buf, "info", "json")
	l = Every(time.Minute)
	l.now = func() time.Time { return now }
	for range 3 {
		l.Log(context.Background(), log, slog.LevelWarn, "dial failed", "attempt", 1)
	}
	step(2 * time.Minute)
	l.Log(context.Background(), log, slog.LevelWarn, "dial failed", "attempt", 4)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], `"suppressed":2`) {
		t.Errorf("rate-limited output:\n%s", buf.String())
	}
	// A disabled level neither logs nor counts as suppressed.
	step(2 * time.Minute)
	l.Log(context.Background(), log, slog.LevelDebug, "noise")
	if ok, n := l.Allow(); !ok || n != 0 {
		t.Errorf("after a disabled-level line: ok=%v suppressed=%d, want true 0", ok, n)
	}
}
