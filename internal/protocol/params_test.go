package protocol

import (
	"strings"
	"testing"
	"time"
)

func TestParseSince(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Time
	}{
		{"", time.Time{}},
		{"0", time.Unix(0, 0)},
		{"1700000000", time.Unix(1700000000, 0)},
		{"1700000000.5", time.Unix(1700000000, 500000000)},
		{"1700000000.000000005", time.Unix(1700000000, 5)},
		{"8589934587.9", time.Unix(8589934587, 900000000)},
		{"2026-01-02T03:04:05Z", time.Unix(1767323045, 0)},
		{"2026-01-02T03:04:05.25+01:00", time.Unix(1767319445, 250000000)},
		{"2026-01-02T03:04:05.000000005Z", time.Unix(1767323045, 5)},
	} {
		got, err := ParseSince(tt.in)
		if err != nil {
			t.Errorf("ParseSince(%q): %v", tt.in, err)
			continue
		}
		if !got.Equal(tt.want) || got.IsZero() != tt.want.IsZero() {
			t.Errorf("ParseSince(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
	// 8589934588 and beyond: past Docker's bound for the seconds of a time
	// filter (the engine refused them before they moved here).
	for _, in := range []string{"yesterday", "-5", "1e9", "2026-01-02", "12:00", "8589934588", "999999999999", "1.", ".5", strings.Repeat("1", 65)} {
		if _, err := ParseSince(in); err == nil || CodeOf(err) != CodeInvalid {
			t.Errorf("ParseSince(%q) = %v, want an invalid error", in, err)
		}
	}
}

func TestParamsOfValidatedCommands(t *testing.T) {
	lines, timeout, interval := 5, 30, 2.5
	create := Command{Action: ActionCreate, ContainerID: "web", EggConfig: &EggConfig{Image: "nginx"},
		Resources: &Resources{CPU: 1.5, Memory: "512m", Disk: "1GiB", Pids: 64}, Environment: map[string]string{"A": "1"}}
	if err := create.Validate(); err != nil {
		t.Fatal(err)
	}
	cp, err := create.CreateParams()
	if err != nil {
		t.Fatal(err)
	}
	if want := (Limits{CPU: 1.5, Memory: 512 << 20, Disk: 1 << 30, Pids: 64}); cp.Limits != want || cp.ContainerID != "web" ||
		cp.Egg.Image != "nginx" || cp.Environment["A"] != "1" {
		t.Errorf("CreateParams = %+v, want limits %+v", cp, want)
	}
	// Without resources: no limits.
	noRes := Command{Action: ActionCreate, ContainerID: "web", EggConfig: &EggConfig{Image: "nginx"}}
	if cp, err := noRes.CreateParams(); err != nil || cp.Limits != (Limits{}) {
		t.Errorf("CreateParams without resources = %+v, %v", cp, err)
	}
	// A command that did not pass Validate gets an error, never a guess
	// (no limit where the size did not parse).
	if _, err := (&Command{Action: ActionCreate, ContainerID: "web"}).CreateParams(); CodeOf(err) != CodeInvalid {
		t.Errorf("CreateParams without eggConfig: %v, want invalid", err)
	}
	bad := Command{Action: ActionCreate, ContainerID: "web", EggConfig: &EggConfig{Image: "nginx"}, Resources: &Resources{Memory: "lots"}}
	if _, err := bad.CreateParams(); CodeOf(err) != CodeInvalid {
		t.Errorf("CreateParams with memory %q: %v, want invalid", "lots", err)
	}
	if _, err := (&Command{Resources: &Resources{Disk: "x"}}).UpdateLimits(); CodeOf(err) != CodeInvalid {
		t.Errorf("UpdateLimits with disk %q: %v, want invalid", "x", err)
	}

	lp, err := (&Command{ContainerID: "web", Lines: &lines, Since: "1700000000", Timestamps: true}).LogsParams()
	if err != nil || lp != (LogsParams{ContainerID: "web", Lines: 5, Since: time.Unix(1700000000, 0), Timestamps: true}) {
		t.Errorf("LogsParams = %+v, %v", lp, err)
	}
	if lp, _ := (&Command{ContainerID: "web"}).LogsParams(); lp.Lines != DefaultLogLines || !lp.Since.IsZero() {
		t.Errorf("LogsParams without lines or since = %+v, want %d lines and no since", lp, DefaultLogLines)
	}

	ep := (&Command{ContainerID: "web", Timeout: &timeout, ConsoleOptions: ConsoleOptions{Cmd: []string{"sh"}, TTY: true, Cols: 80, Rows: 24}}).ExecParams()
	if ep.Timeout != 30*time.Second || !ep.TTY || ep.Cols != 80 || ep.Rows != 24 || ep.Cmd[0] != "sh" {
		t.Errorf("ExecParams = %+v", ep)
	}
	if ep := (&Command{ContainerID: "web"}).ExecParams(); ep.Timeout != DefaultExecTimeout*time.Second {
		t.Errorf("ExecParams timeout without one = %v, want %ds", ep.Timeout, DefaultExecTimeout)
	}

	if ap := (&Command{ContainerID: "web"}).AttachParams(); ap.Lines != 0 {
		t.Errorf("AttachParams without lines replays %d, want none", ap.Lines)
	}
	if ap := (&Command{ContainerID: "web", Lines: &lines}).AttachParams(); ap.Lines != 5 {
		t.Errorf("AttachParams lines = %d, want 5", ap.Lines)
	}

	if sp := (&Command{ContainerID: "web", ConsoleOptions: ConsoleOptions{Interval: &interval}}).StatsParams(); sp.Interval != 2500*time.Millisecond {
		t.Errorf("StatsParams interval = %v, want 2.5s", sp.Interval)
	}
	if sp := (&Command{ContainerID: "web"}).StatsParams(); sp.Interval != DefaultStatsInterval*time.Second {
		t.Errorf("StatsParams default interval = %v", sp.Interval)
	}
}
