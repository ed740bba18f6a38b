package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// The seed document's command examples, verbatim (plus the id the seed's
// server puts on every command).
const (
	seedCreate = `{
  "type": "command",
  "action": "create",
  "containerId": "container-uuid",
  "eggConfig": {
    "image": "nginx:alpine",
    "ports": [
      {"host": 8080, "container": 80}
    ],
    "volumes": [
      {"host": "/data", "container": "/app/data"}
    ]
  },
  "resources": {
    "cpu": 1.0,
    "memory": "512m",
    "disk": "10g"
  },
  "environment": {
    "ENV_VAR": "value"
  }
}`
	seedStart   = `{"type": "command", "action": "start", "containerId": "container-uuid"}`
	seedStop    = `{"type": "command", "action": "stop", "containerId": "container-uuid"}`
	seedRestart = `{"type": "command", "action": "restart", "containerId": "container-uuid"}`
	seedDelete  = `{"type": "command", "action": "delete", "containerId": "container-uuid"}`
	seedLogs    = `{"type": "command", "action": "logs", "containerId": "container-uuid", "lines": 100}`
)

func decodeCommand(t *testing.T, frame string) Command {
	t.Helper()
	m, err := Decode([]byte(frame))
	if err != nil {
		t.Fatalf("Decode(%s): %v", frame, err)
	}
	c, ok := m.(Command)
	if !ok {
		t.Fatalf("Decode(%s) = %T, want Command", frame, m)
	}
	return c
}

func TestDecodeSeedCreate(t *testing.T) {
	c := decodeCommand(t, seedCreate)
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	want := Command{
		Type:        TypeCommand,
		Action:      ActionCreate,
		ContainerID: "container-uuid",
		EggConfig: &EggConfig{
			Image:   "nginx:alpine",
			Ports:   []Port{{Host: 8080, Container: 80}},
			Volumes: []Volume{{Host: "/data", Container: "/app/data"}},
		},
		Resources:   &Resources{CPU: 1.0, Memory: "512m", Disk: "10g"},
		Environment: map[string]string{"ENV_VAR": "value"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v\nwant %+v", c, want)
	}
	if !c.EggConfig.UseTTY() {
		t.Error("tty should default to true, as the seed")
	}
	if got := c.EggConfig.Ports[0].Proto(); got != "tcp" {
		t.Errorf("port protocol default = %q, want tcp", got)
	}
	if n, _ := c.Resources.Memory.Bytes(); n != 536870912 {
		t.Errorf("memory = %d, want 536870912", n)
	}
}

func TestDecodeSeedActions(t *testing.T) {
	for frame, action := range map[string]Action{
		seedStart: ActionStart, seedStop: ActionStop, seedRestart: ActionRestart,
		seedDelete: ActionDelete, seedLogs: ActionLogs,
	} {
		c := decodeCommand(t, frame)
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%s): %v", frame, err)
		}
		if c.Action != action || c.ContainerID != "container-uuid" {
			t.Errorf("Decode(%s) = %+v", frame, c)
		}
	}
	if got := decodeCommand(t, seedLogs).LogLines(); got != 100 {
		t.Errorf("lines = %d, want 100", got)
	}
	if got := decodeCommand(t, seedStart).LogLines(); got != DefaultLogLines {
		t.Errorf("default lines = %d, want %d", got, DefaultLogLines)
	}
}

func TestDecodeEveryType(t *testing.T) {
	tests := []struct {
		frame string
		want  Message
	}{
		{`{"type":"ping"}`, Ping{Type: TypePing}},
		{`{"type":"pong"}`, Pong{Type: TypePong}},
		{`{"type":"cancel","commandId":"c1"}`, Cancel{Type: TypeCancel, CommandID: "c1"}},
		{`{"type":"agent_identify","nodeName":"n1","version":"1.0.0"}`, AgentIdentify{Type: TypeAgentIdentify, NodeName: "n1", Version: "1.0.0"}},
		{`{"type":"heartbeat","nodeId":"id","resources":{"cpu":0.5,"memory":"512MB"},"timestamp":"2024-01-01T00:00:00Z"}`,
			Heartbeat{Type: TypeHeartbeat, NodeID: "id", Resources: HostResources{CPU: 0.5, Memory: "512MB"}, Timestamp: "2024-01-01T00:00:00Z"}},
		{`{"type":"command_result","commandId":"c1","status":"error","error":"boom","code":"not_found"}`,
			CommandResult{Type: TypeCommandResult, CommandID: "c1", Status: StatusError, Error: "boom", Code: CodeNotFound}},
		{`{"type":"log","commandId":"c1","containerId":"x","stream":"stdout","line":"hi","timestamp":"t"}`,
			LogMessage{Type: TypeLog, CommandID: "c1", ContainerID: "x", Stream: "stdout", Line: "hi", Timestamp: "t"}},
		{`{"type":"log","commandId":"c1","containerId":"x","stream":"stderr","gap":1200,"timestamp":"t"}`,
			LogMessage{Type: TypeLog, CommandID: "c1", ContainerID: "x", Stream: "stderr", Gap: 1200, Timestamp: "t"}},
		{`{"type":"command_progress","commandId":"c1","stage":"pull","detail":"50%"}`,
			CommandProgress{Type: TypeCommandProgress, CommandID: "c1", Stage: "pull", Detail: "50%"}},
		{`{"type":"container_event","containerId":"x","action":"die","exitCode":3,"timestamp":"t"}`,
			ContainerEvent{Type: TypeContainerEvent, ContainerID: "x", Action: "die", ExitCode: ptr(3), Timestamp: "t"}},
		{`{"type":"inventory","containers":[{"containerId":"x","dockerId":"d","state":"running","image":"i","createdAt":"t"}]}`,
			Inventory{Type: TypeInventory, Containers: []InventoryItem{{ContainerID: "x", DockerID: "d", State: "running", Image: "i", CreatedAt: "t"}}}},
		{`{"type":"ping","unknownField":{"nested":[1,2]}}`, Ping{Type: TypePing}},
	}
	for _, tt := range tests {
		got, err := Decode([]byte(tt.frame))
		if err != nil {
			t.Errorf("Decode(%s): %v", tt.frame, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Decode(%s) = %#v, want %#v", tt.frame, got, tt.want)
		}
		if got.MessageType() != tt.want.MessageType() {
			t.Errorf("MessageType = %q", got.MessageType())
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name, frame string
		wantErr     error
		wantID      string
	}{
		{"not json", `{"type":`, ErrMalformed, ""},
		{"binary", "\x00\x01\xff", ErrMalformed, ""},
		{"array", `[1,2]`, ErrMalformed, ""},
		{"no type", `{"id":"c1"}`, ErrMalformed, "c1"},
		{"type not string", `{"type":5,"id":"c1"}`, ErrMalformed, "c1"},
		{"unknown type", `{"type":"reboot","id":"c2"}`, ErrUnknownType, "c2"},
		{"wrong field type", `{"type":"command","id":"c3","action":"start","containerId":5}`, ErrMalformed, "c3"},
		{"lines string", `{"type":"command","id":"c4","action":"logs","containerId":"x","lines":"ten"}`, ErrMalformed, "c4"},
		{"lines fraction", `{"type":"command","id":"c5","action":"logs","containerId":"x","lines":1.5}`, ErrMalformed, "c5"},
		{"cpu string", `{"type":"command","id":"c6","action":"create","containerId":"x","resources":{"cpu":"1"}}`, ErrMalformed, "c6"},
		{"memory object", `{"type":"command","id":"c7","action":"create","containerId":"x","resources":{"memory":{}}}`, ErrMalformed, "c7"},
		{"ports not array", `{"type":"command","id":"c8","action":"create","containerId":"x","eggConfig":{"image":"i","ports":{}}}`, ErrMalformed, "c8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Decode([]byte(tt.frame))
			if err == nil {
				t.Fatalf("Decode(%q) = %#v, want error", tt.frame, m)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v, want %v", err, tt.wantErr)
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %T is not a *DecodeError", err)
			}
			if de.ID != tt.wantID {
				t.Errorf("DecodeError.ID = %q, want %q", de.ID, tt.wantID)
			}
		})
	}
}

func TestDecodeMemoryAsNumber(t *testing.T) {
	c := decodeCommand(t, `{"type":"command","action":"update","containerId":"x","resources":{"memory":1073741824}}`)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.Resources.Memory.Bytes(); n != 1<<30 {
		t.Errorf("memory = %d, want %d", n, 1<<30)
	}
	c = decodeCommand(t, `{"type":"command","action":"update","containerId":"x","resources":{"memory":-5}}`)
	if err := c.Validate(); CodeOf(err) != CodeInvalid {
		t.Errorf("negative numeric memory: got %v, want invalid", err)
	}
}

func TestValidate(t *testing.T) {
	base := func() Command {
		return Command{Action: ActionCreate, ContainerID: "web-1", EggConfig: &EggConfig{Image: "workload:1"}}
	}
	tests := []struct {
		name    string
		mutate  func(*Command)
		wantSub string // "" = valid
	}{
		{"valid", func(*Command) {}, ""},
		{"no action", func(c *Command) { c.Action = "" }, "action is required"},
		{"unknown action", func(c *Command) { c.Action = "explode" }, `unknown action "explode"`},
		{"no container", func(c *Command) { c.ContainerID = "" }, "containerId is required"},
		{"slash", func(c *Command) { c.ContainerID = "a/b" }, "not a valid container name"},
		{"dotdot", func(c *Command) { c.ContainerID = "../etc" }, "not a valid container name"},
		{"inner dotdot", func(c *Command) { c.ContainerID = "a..b" }, "not a valid container name"},
		{"leading dash", func(c *Command) { c.ContainerID = "-x" }, "not a valid container name"},
		{"space", func(c *Command) { c.ContainerID = "a b" }, "not a valid container name"},
		{"too long", func(c *Command) { c.ContainerID = strings.Repeat("a", 129) }, "at most 128"},
		{"max length", func(c *Command) { c.ContainerID = strings.Repeat("a", 128) }, ""},
		{"list needs no container", func(c *Command) { c.Action, c.ContainerID = ActionList, "" }, ""},
		{"no egg", func(c *Command) { c.EggConfig = nil }, "eggConfig is required"},
		{"no image", func(c *Command) { c.EggConfig.Image = " " }, "image is required"},
		{"image space", func(c *Command) { c.EggConfig.Image = "a b" }, "not a valid image"},
		{"port 0 container", func(c *Command) { c.EggConfig.Ports = []Port{{Host: 1, Container: 0}} }, "ports[0].container"},
		{"port too big", func(c *Command) { c.EggConfig.Ports = []Port{{Host: 70000, Container: 80}} }, "ports[0].host"},
		{"port proto", func(c *Command) { c.EggConfig.Ports = []Port{{Host: 80, Container: 80, Protocol: "sctp"}} }, "tcp or udp"},
		{"udp ok", func(c *Command) { c.EggConfig.Ports = []Port{{Host: 80, Container: 80, Protocol: "udp"}} }, ""},
		{"volume relative container", func(c *Command) { c.EggConfig.Volumes = []Volume{{Host: "/d", Container: "app"}} }, "absolute path"},
		{"volume empty host", func(c *Command) { c.EggConfig.Volumes = []Volume{{Container: "/app"}} }, "host is required"},
		{"volume colon", func(c *Command) { c.EggConfig.Volumes = []Volume{{Host: "/d:/etc", Container: "/app"}} }, "':'"},
		{"restart policy", func(c *Command) { c.EggConfig.RestartPolicy = "sometimes" }, "restartPolicy"},
		{"pull policy", func(c *Command) { c.EggConfig.PullPolicy = "often" }, "pullPolicy"},
		{"reserved label", func(c *Command) { c.EggConfig.Labels = map[string]string{"lormas.managed": "false"} }, "reserved"},
		{"user label", func(c *Command) { c.EggConfig.Labels = map[string]string{"team": "a"} }, ""},
		{"negative cpu", func(c *Command) { c.Resources = &Resources{CPU: -1} }, "resources.cpu"},
		{"tiny cpu", func(c *Command) { c.Resources = &Resources{CPU: 0.001} }, "at least 0.01"},
		{"half cpu", func(c *Command) { c.Resources = &Resources{CPU: 0.5} }, ""},
		{"memory -1g", func(c *Command) { c.Resources = &Resources{Memory: "-1g"} }, "resources.memory"},
		{"memory 1e99g", func(c *Command) { c.Resources = &Resources{Memory: "1e99g"} }, "resources.memory"},
		{"memory abc", func(c *Command) { c.Resources = &Resources{Memory: "abc"} }, "resources.memory"},
		{"memory tiny", func(c *Command) { c.Resources = &Resources{Memory: "1m"} }, "minimum of 6 MiB"},
		{"disk bad", func(c *Command) { c.Resources = &Resources{Disk: "10x"} }, "resources.disk"},
		{"pids negative", func(c *Command) { c.Resources = &Resources{Pids: -2} }, "resources.pids"},
		{"env key", func(c *Command) { c.Environment = map[string]string{"A=B": "x"} }, "environment variable"},
		{"lines negative", func(c *Command) { c.Action, c.Lines = ActionLogs, ptr(-1) }, "lines must be"},
		{"lines huge", func(c *Command) { c.Action, c.Lines = ActionLogs, ptr(MaxLogLines+1) }, "lines must be"},
		{"timeout negative", func(c *Command) { c.Action, c.Timeout = ActionStop, ptr(-1) }, "timeout must be"},
		{"signal ok", func(c *Command) { c.Action, c.Signal = ActionKill, "SIGTERM" }, ""},
		{"signal number", func(c *Command) { c.Action, c.Signal = ActionKill, "9" }, ""},
		{"signal bad", func(c *Command) { c.Action, c.Signal = ActionKill, "kill -9; rm" }, "signal"},
		{"update needs resources", func(c *Command) { c.Action = ActionUpdate }, "resources is required"},
		{"since rfc3339", func(c *Command) { c.Action, c.Since = ActionLogs, "2026-11-25T10:00:00Z" }, ""},
		{"since unix", func(c *Command) { c.Action, c.Since = ActionLogs, "1764064800.5" }, ""},
		{"since junk", func(c *Command) { c.Action, c.Since = ActionLogs, "yesterday" }, "since must be"},
		{"since huge", func(c *Command) { c.Action, c.Since = ActionLogs, strings.Repeat("1", 100) }, "since must be"},
		{"id too long", func(c *Command) { c.ID = strings.Repeat("<", MaxCommandIDLength+1) }, "at most 256"},
		{"id at the limit", func(c *Command) { c.ID = strings.Repeat("x", MaxCommandIDLength) }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.mutate(&c)
			err := c.Validate()
			if tt.wantSub == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want error containing %q", tt.wantSub)
			}
			if !strings.Contains(err.Error(), tt.wantSub) {
				t.Errorf("Validate() = %q, want it to contain %q", err, tt.wantSub)
			}
			if CodeOf(err) != CodeInvalid {
				t.Errorf("CodeOf = %q, want invalid", CodeOf(err))
			}
		})
	}
}

func TestMarshalSetsType(t *testing.T) {
	tests := []struct {
		msg  Message
		want string
	}{
		{Pong{}, `{"type":"pong"}`},
		{Ping{}, `{"type":"ping"}`},
		{AgentIdentify{NodeName: "n", Version: "1.0.0"}, `{"type":"agent_identify","nodeName":"n","version":"1.0.0"}`},
		{*Success("c1", MessageResult{Message: MsgStarted}, nil), `{"type":"command_result","commandId":"c1","status":"success","result":{"message":"Container started"}}`},
		{*Success("c2", CreateResult{ContainerID: "abc"}, []string{"w"}), `{"type":"command_result","commandId":"c2","status":"success","result":{"containerId":"abc"},"warnings":["w"]}`},
		{*Failure("c3", Errorf(CodeNotFound, "no such container x"), nil), `{"type":"command_result","commandId":"c3","status":"error","error":"no such container x","code":"not_found"}`},
		{Heartbeat{NodeID: "n", Resources: HostResources{CPU: 0.25, Memory: "512MB"}, Timestamp: "t"},
			`{"type":"heartbeat","nodeId":"n","resources":{"cpu":0.25,"memory":"512MB","load1":0,"load5":0,"load15":0},"timestamp":"t"}`},
		{Inventory{}, `{"type":"inventory","containers":[]}`},
		{LogMessage{CommandID: "c", ContainerID: "x", Stream: "stdout", Lines: []string{"a", "b"}, Timestamp: "t"},
			`{"type":"log","commandId":"c","containerId":"x","stream":"stdout","lines":["a","b"],"timestamp":"t"}`},
		{LogMessage{CommandID: "c", ContainerID: "x", Stream: "stdout", Gap: 7, Timestamp: "t"},
			`{"type":"log","commandId":"c","containerId":"x","stream":"stdout","gap":7,"timestamp":"t"}`},
		{*Success("c4", LogsResult{Logs: []string{}, Dropped: 9}, nil),
			`{"type":"command_result","commandId":"c4","status":"success","result":{"logs":[],"dropped":9}}`},
	}
	for _, tt := range tests {
		b, err := json.Marshal(tt.msg)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tt.want {
			t.Errorf("Marshal(%T) = %s\nwant %s", tt.msg, b, tt.want)
		}
		// Pointers marshal the same.
		if back, err := Decode(b); err != nil || back.MessageType() != tt.msg.MessageType() {
			t.Errorf("round trip of %s: %v, %v", b, back, err)
		}
	}
}

func TestCodeOf(t *testing.T) {
	wrapped := errors.Join(errors.New("outer"), Errorf(CodeConflict, "x"))
	for err, want := range map[error]Code{
		nil: "", errors.New("x"): CodeInternal, Errorf(CodeForbidden, "x"): CodeForbidden, wrapped: CodeConflict,
	} {
		if got := CodeOf(err); got != want {
			t.Errorf("CodeOf(%v) = %q, want %q", err, got, want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func FuzzDecode(f *testing.F) {
	for _, s := range []string{seedCreate, seedStart, seedStop, seedRestart, seedDelete, seedLogs,
		`{"type":"ping"}`, `{"type":"cancel","commandId":"x"}`, `{"type":"command","id":"1","action":"logs","containerId":"x","lines":"a"}`,
		`{"type":"command","id":"1","action":"create","containerId":"../x","resources":{"memory":"1e99g"}}`, `[]`, `null`, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		m, err := Decode(frame)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("Decode error %T is not a *DecodeError", err)
			}
			return
		}
		if c, ok := m.(Command); ok {
			if err := c.Validate(); err != nil && CodeOf(err) != CodeInvalid {
				t.Fatalf("Validate error code %q, want invalid", CodeOf(err))
			}
		}
		if _, err := json.Marshal(m); err != nil {
			t.Fatalf("re-marshal %T: %v", m, err)
		}
	})
}

// BenchmarkDecodeCommand measures decoding and validating the seed's create
// example, the largest common server -> agent frame.
func BenchmarkDecodeCommand(b *testing.B) {
	frame := []byte(seedCreate)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		m, err := Decode(frame)
		if err != nil {
			b.Fatal(err)
		}
		c := m.(Command)
		if err := c.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeLogBatch measures encoding a log message of 500 lines, the
// agent's unit of a followed log stream.
func BenchmarkEncodeLogBatch(b *testing.B) {
	lines := make([]string, 500)
	for i := range lines {
		lines[i] = fmt.Sprintf("2026-11-25T10:00:00Z worker %d: processed request in %d ms", i, i%97)
	}
	msg := LogMessage{CommandID: "c1", ContainerID: "web-1", Stream: "stdout", Lines: lines, Timestamp: "2026-11-25T10:00:00.000Z"}
	b.ReportAllocs()
	for b.Loop() {
		out, err := json.Marshal(msg)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(out)))
	}
}

// DecodeCommand, for frames whose type is "command", decodes and fails
// exactly as Decode does.
func TestDecodeCommandIsDecode(t *testing.T) {
	for _, frame := range []string{
		seedCreate, seedLogs,
		`{"type":"command","id":"c1","action":"exec","containerId":"x","cmd":["sh","-c","true"],"env":{"A":"b"}}`,
		`{"type":"command","id":"c2","action":"logs","lines":"ten"}`,           // type error
		`{"type":"command","id":"c3","action":"create","eggConfig":[]}`,        // type error
		`{"type":"command","id":"c4","action":"stop","timeout":1e999}`,         // out of range
		`{"type":"command","id":"c5","action":"start"`,                         // truncated
		`{"type":"command","id":["c6"],"action":"start","containerId":5}`,      // id not a string
		`{"type":"command","id":"c7","action":"start","containerId":"\ud800"}`, // lone surrogate
	} {
		want, wantErr := Decode([]byte(frame))
		got, err := DecodeCommand([]byte(frame))
		if fmt.Sprint(err) != fmt.Sprint(wantErr) || !reflect.DeepEqual(err, wantErr) {
			t.Errorf("DecodeCommand(%s): error %#v, want Decode's %#v", frame, err, wantErr)
			continue
		}
		if wantErr == nil && !reflect.DeepEqual(Message(got), want) {
			t.Errorf("DecodeCommand(%s) = %+v, want Decode's %+v", frame, got, want)
		}
	}
}
