package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// specVariables are the variables the README's configuration table names, plus the settings
// the agent adds (DOCKER_TIMEOUT, container log rotation).
var specVariables = []string{
	"SERVER_URL", "NODE_TOKEN", "NODE_TOKEN_FILE", "NODE_TOKEN_IN_QUERY", "ENROLLMENT_TOKEN", "ENROLLMENT_TOKEN_FILE",
	"STATE_DIR", "NODE_NAME", "NODE_ID", "LOG_LEVEL", "LOG_FORMAT", "HEARTBEAT_INTERVAL",
	"RECONNECT_DELAY", "RECONNECT_MAX_DELAY", "MAX_RECONNECT_ATTEMPTS", "MAX_CONCURRENT_COMMANDS",
	"MAX_MESSAGE_BYTES", "SHUTDOWN_TIMEOUT", "OUTBOX_LIMIT", "MAX_PENDING_BYTES", "RESULT_STORE_BYTES", "VOLUME_ROOTS", "ALLOW_UNMANAGED",
	"STATUS_EVENTS", "DISK_LIMIT_MODE", "ALLOW_EXEC", "ALLOW_CONSOLE_INPUT", "MAX_SESSIONS", "CONTAINER_PIDS_LIMIT", "CONTAINER_LOG_MAX_SIZE",
	"CONTAINER_LOG_MAX_FILE", "LOG_STREAM_BUFFER", "DOCKER_TIMEOUT", "TLS_CA_FILE", "TLS_CERT_FILE", "TLS_KEY_FILE",
	"TLS_INSECURE_SKIP_VERIFY", "HEALTH_ADDR", "DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH",
	"HTTPS_PROXY", "NO_PROXY", "HOST_PROC", "HOST_SYS", "HOST_ROOT",
}

func TestVariablesDocumentEveryField(t *testing.T) {
	vars := Variables()
	var names []string
	for _, v := range vars {
		names = append(names, v.Name)
		if v.Help == "" {
			t.Errorf("%s has no help text", v.Name)
		}
		if strings.ContainsAny(v.Help+v.Default, "|\n") {
			t.Errorf("%s: a | or newline would break the Markdown table", v.Name)
		}
	}
	if !reflect.DeepEqual(names, specVariables) {
		t.Errorf("variables\n got %q\nwant %q", names, specVariables)
	}
	// Every exported Config field (of an embedded struct too) is a
	// documented variable.
	exported := 0
	var count func(reflect.Type)
	count = func(t reflect.Type) {
		for i := range t.NumField() {
			switch f := t.Field(i); {
			case f.Anonymous && f.Type.Kind() == reflect.Struct:
				count(f.Type)
			case f.IsExported():
				exported++
			}
		}
	}
	count(reflect.TypeFor[Config]())
	if exported != len(vars) {
		t.Errorf("%d exported fields, %d documented variables", exported, len(vars))
	}
}

func TestMarkdownTableRoundTrip(t *testing.T) {
	table := MarkdownTable()
	lines := strings.Split(strings.TrimSuffix(table, "\n"), "\n")
	if len(lines) != len(specVariables)+2 {
		t.Fatalf("table has %d lines, want %d", len(lines), len(specVariables)+2)
	}
	if !strings.HasPrefix(lines[2], "| `SERVER_URL`") || !strings.Contains(lines[2], "`ws://localhost:3000`") {
		t.Errorf("first row %q", lines[2])
	}
	doc := "# Lormas\n\nIntro.\n\n## Configuration\n\n" + table + "\nMore text.\n"
	if err := CheckMarkdownTable([]byte(doc)); err != nil {
		t.Errorf("rendered table does not check: %v", err)
	}
	// Re-padded by a Markdown formatter: still equal.
	squeezed := strings.NewReplacer("  ", " ").Replace(doc)
	for strings.Contains(squeezed, "  ") {
		squeezed = strings.ReplaceAll(squeezed, "  ", " ")
	}
	if err := CheckMarkdownTable([]byte(squeezed)); err != nil {
		t.Errorf("re-padded table does not check: %v", err)
	}
	stale := strings.Replace(doc, "`10s`", "`15s`", 1)
	if err := CheckMarkdownTable([]byte(stale)); err == nil || !strings.Contains(err.Error(), "HEARTBEAT_INTERVAL") {
		t.Errorf("changed default not detected: %v", err)
	}
	short := strings.Replace(doc, lines[len(lines)-1]+"\n", "", 1)
	if err := CheckMarkdownTable([]byte(short)); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing row not detected: %v", err)
	}
	if err := CheckMarkdownTable([]byte("# no table\n")); err == nil {
		t.Error("document without a table passed")
	}
}

// TestReadmeTable keeps README.md's configuration table equal to the one
// `lormas-agent help` prints.
func TestReadmeTable(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckMarkdownTable(b); err != nil {
		t.Errorf("%v\n\nthe table to paste:\n\n%s", err, MarkdownTable())
	}
}
