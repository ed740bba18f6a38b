package secret

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
)

const testToken = "eyJhbGciOiJIUzI1NiJ9.eyJub2RlSWQiOiJuMSJ9.c2lnbmF0dXJl"

func TestSecretNeverPrints(t *testing.T) {
	s := New(testToken)
	holder := struct {
		Token Value
		Ptr   *Value
	}{s, &s}
	outputs := map[string]string{
		"%v":       fmt.Sprintf("%v", s),
		"%s":       fmt.Sprintf("%s", s),
		"%q":       fmt.Sprintf("%q", s),
		"%x":       fmt.Sprintf("%x", s),
		"%X":       fmt.Sprintf("%X", s),
		"%d":       fmt.Sprintf("%d", s),
		"%+v":      fmt.Sprintf("%+v", s),
		"%#v":      fmt.Sprintf("%#v", s),
		"struct%v": fmt.Sprintf("%v", holder),
		"struct+v": fmt.Sprintf("%+v", holder),
		"struct#v": fmt.Sprintf("%#v", holder),
		"ptr":      fmt.Sprintf("%v", &s),
		"Sprint":   fmt.Sprint(s),
		"Sprintln": fmt.Sprintln(s),
		"String":   s.String(),
		"Errorf":   fmt.Errorf("dial with %v: %w", s, errors.New("x")).Error(),
	}
	b, _ := json.Marshal(holder)
	outputs["json"] = string(b)
	var logBuf bytes.Buffer
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("m", "t", s, "h", holder)
	slog.New(slog.NewTextHandler(&logBuf, nil)).Info("m", "t", s, "p", &s)
	outputs["slog"] = logBuf.String()
	for name, out := range outputs {
		if strings.Contains(out, testToken) {
			t.Errorf("%s shows the secret: %s", name, out)
		}
		if !strings.Contains(out, "REDACTED") {
			t.Errorf("%s does not say REDACTED: %s", name, out)
		}
	}
	if s.Reveal() != testToken {
		t.Error("Reveal lost the value")
	}
	if !(Value{}).IsZero() || s.IsZero() {
		t.Error("IsZero wrong")
	}
}

// TestSecretPanicMessage panics with a Secret in a child process and checks
// the runtime's panic output.
func TestSecretPanicMessage(t *testing.T) {
	if os.Getenv("SECRET_TEST_PANIC") == "1" {
		panic(New(testToken))
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSecretPanicMessage$")
	cmd.Env = append(os.Environ(), "SECRET_TEST_PANIC=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("child did not panic: %s", out)
	}
	if !strings.Contains(string(out), "panic: REDACTED") {
		t.Errorf("panic output does not show REDACTED:\n%s", out)
	}
	if strings.Contains(string(out), testToken) {
		t.Errorf("panic output shows the secret:\n%s", out)
	}
}
