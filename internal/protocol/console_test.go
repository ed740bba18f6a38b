package protocol

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestValidateConsoleCommands(t *testing.T) {
	tests := []struct {
		name  string
		frame string
		want  string // substring of the error; "" = valid
	}{
		{"exec", `{"type":"command","id":"1","action":"exec","containerId":"c","cmd":["ls","-l"],"env":{"A":"b"},"user":"1000","workingDir":"/tmp","timeout":5}`, ""},
		{"exec interactive tty", `{"type":"command","id":"1","action":"exec","containerId":"c","cmd":["sh"],"tty":true,"stdin":true,"cols":120,"rows":40}`, ""},
		{"exec without cmd", `{"type":"command","id":"1","action":"exec","containerId":"c"}`, "cmd is required"},
		{"exec empty program", `{"type":"command","id":"1","action":"exec","containerId":"c","cmd":[""]}`, "cmd[0]"},
		{"exec NUL", `{"type":"command","id":"1","action":"exec","containerId":"c","cmd":["a\u0000b"]}`, "NUL"},
		{"exec bad env", `{"type":"command","id":"1","action":"exec","containerId":"c","cmd":["a"],"env":{"A=B":"x"}}`, "env variable"},
		{"exec relative dir", `{"type":"command","id":"1","action":"exec","containerId":"c","cmd":["a"],"workingDir":"tmp"}`, "absolute"},
		{"exec huge size", `{"type":"command","id":"1","action":"exec","containerId":"c","cmd":["a"],"cols":70000,"tty":true}`, "cols and rows"},
		{"exec negative rows", `{"type":"command","id":"1","action":"exec","containerId":"c","cmd":["a"],"rows":-1}`, "cols and rows"},
		{"exec timeout with stdin", `{"type":"command","id":"1","action":"exec","containerId":"c","cmd":["a"],"stdin":true,"timeout":5}`, "only to exec without stdin"},
		{"exec timeout 0", `{"type":"command","id":"1","action":"exec","containerId":"c","cmd":["a"],"timeout":0}`, "at least 1"},
		{"exec follow", `{"type":"command","id":"1","action":"exec","containerId":"c","cmd":["a"],"follow":true}`, "follow"},
		{"exec no container", `{"type":"command","id":"1","action":"exec","cmd":["a"]}`, "containerId is required"},
		{"exec too large", `{"type":"command","id":"1","action":"exec","containerId":"c","cmd":["` + strings.Repeat("a", 300<<10) + `"]}`, "add up to"},
		{"attach", `{"type":"command","id":"1","action":"attach","containerId":"c","lines":50}`, ""},
		{"attach with cmd", `{"type":"command","id":"1","action":"attach","containerId":"c","cmd":["sh"]}`, "takes no cmd"},
		{"attach with stdin", `{"type":"command","id":"1","action":"attach","containerId":"c","stdin":true}`, "only to exec"},
		{"stats follow", `{"type":"command","id":"1","action":"stats","containerId":"c","follow":true,"interval":2.5}`, ""},
		{"stats follow default", `{"type":"command","id":"1","action":"stats","containerId":"c","follow":true}`, ""},
		{"stats interval below 1", `{"type":"command","id":"1","action":"stats","containerId":"c","follow":true,"interval":0.5}`, "between 1 and"},
		{"stats interval without follow", `{"type":"command","id":"1","action":"stats","containerId":"c","interval":2}`, "only to stats with follow"},
		{"start with tty", `{"type":"command","id":"1","action":"start","containerId":"c","tty":true}`, "only to exec"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := decodeCommand(t, tt.frame)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: %v, want nil", err)
			case tt.want != "" && err == nil:
				t.Fatalf("Validate: nil, want an error containing %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("Validate: %v, want it to contain %q", err, tt.want)
			case err != nil && CodeOf(err) != CodeInvalid:
				t.Fatalf("code %s, want invalid", CodeOf(err))
			}
		})
	}
}

func TestConsoleCommandHelpers(t *testing.T) {
	c := decodeCommand(t, `{"type":"command","id":"1","action":"exec","containerId":"c","cmd":["sh"],"stdin":true}`)
	if !c.IsSession() || !c.Interactive() || c.ExecTimeout() != DefaultExecTimeout {
		t.Errorf("exec stdin: IsSession %t Interactive %t timeout %d", c.IsSession(), c.Interactive(), c.ExecTimeout())
	}
	c = decodeCommand(t, `{"type":"command","id":"1","action":"stats","containerId":"c"}`)
	if c.IsSession() || c.Interactive() || c.StatsInterval() != 1 {
		t.Errorf("stats: IsSession %t Interactive %t interval %v", c.IsSession(), c.Interactive(), c.StatsInterval())
	}
	c = decodeCommand(t, `{"type":"command","id":"1","action":"create","containerId":"c","eggConfig":{"image":"x","openStdin":true}}`)
	if !c.EggConfig.OpenStdin {
		t.Error("eggConfig.openStdin not decoded")
	}
}

func TestConsoleMessagesRoundTrip(t *testing.T) {
	raw := []byte{0xff, 0xfe, 'h', 'i', 0x1b, '[', 'm', 0xe2, 0x82} // not UTF-8, cut character
	msgs := []Message{
		Stream{CommandID: "c1", Stream: StreamStdout, Data: raw},
		Stdin{CommandID: "c1", Data: raw},
		Stdin{CommandID: "c1", EOF: true},
		Resize{CommandID: "c1", Cols: 80, Rows: 24},
		StatsSample{CommandID: "c1", ContainerID: "x", CPU: 1.5, MemoryBytes: 10, MemoryLimitBytes: 20, Pids: 3, Timestamp: "t"},
	}
	for _, m := range msgs {
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(%s): %v", b, err)
		}
		// Type is filled in by MarshalJSON; compare without it.
		want := reflect.ValueOf(m)
		gv := reflect.New(want.Type()).Elem()
		gv.Set(reflect.ValueOf(got))
		gv.FieldByName("Type").SetString("")
		if !reflect.DeepEqual(gv.Interface(), m) {
			t.Errorf("round trip of %s: got %#v, want %#v", b, gv.Interface(), m)
		}
	}
	// The wire form of data is standard base64.
	b, _ := json.Marshal(Stream{CommandID: "c", Stream: "stdout", Data: []byte("hi\n")})
	if want := `{"type":"stream","commandId":"c","stream":"stdout","data":"aGkK"}`; string(b) != want {
		t.Errorf("stream = %s, want %s", b, want)
	}
	if _, err := Decode([]byte(`{"type":"stdin","commandId":"c","data":"***"}`)); err == nil {
		t.Error("stdin with invalid base64 decoded without error")
	}
}

func TestCapabilitiesNameConsole(t *testing.T) {
	for _, c := range []string{"exec", "attach", "stats_follow"} {
		found := false
		for _, k := range Capabilities {
			found = found || k == c
		}
		if !found {
			t.Errorf("Capabilities lacks %q", c)
		}
	}
}
