package docker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// frame builds one multiplexed log frame.
func frame(stream byte, payload string) []byte {
	hdr := make([]byte, 8, 8+len(payload))
	hdr[0] = stream
	binary.BigEndian.PutUint32(hdr[4:], uint32(len(payload)))
	return append(hdr, payload...)
}

type logLine struct{ stream, line string }

func collect(t *testing.T, r io.Reader, tty, timestamps bool) ([]logLine, error) {
	t.Helper()
	var got []logLine
	err := readLogs(r, tty, timestamps, func(stream string, stamp, text []byte) error {
		got = append(got, logLine{stream, string(appendLine(nil, stamp, text))})
		return nil
	})
	return got, err
}

func TestReadLogsMultiplexed(t *testing.T) {
	var in bytes.Buffer
	in.Write(frame(1, "stdout line 1\nstdout li")) // a line split across frames
	in.Write(frame(2, "stderr line 1\n"))          // another stream in between
	in.Write(frame(1, "ne 2\n\nstdout line 4\n"))  // an empty line in the middle is kept
	in.Write(frame(2, "stderr "))                  // stderr split
	in.Write(frame(2, ""))                         // an empty frame
	in.Write(frame(2, "line 2\r\n"))               // CRLF
	in.Write(frame(1, "last without newline"))     // flushed at EOF
	in.Write(frame(2, "err tail"))
	want := []logLine{
		{"stdout", "stdout line 1"},
		{"stderr", "stderr line 1"},
		{"stdout", "stdout line 2"},
		{"stdout", ""},
		{"stdout", "stdout line 4"},
		{"stderr", "stderr line 2"},
		{"stdout", "last without newline"},
		{"stderr", "err tail"},
	}
	// Byte-by-byte reads must give the same lines as one big read.
	for name, r := range map[string]io.Reader{
		"whole":      bytes.NewReader(in.Bytes()),
		"onebyte":    iotest.OneByteReader(bytes.NewReader(in.Bytes())),
		"halfreader": iotest.HalfReader(bytes.NewReader(in.Bytes())),
	} {
		got, err := collect(t, r, false, false)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s:\n got %q\nwant %q", name, got, want)
		}
	}
}

func TestReadLogsTTY(t *testing.T) {
	in := "line 1\r\nline 2\r\n\r\nprogress 10%\rprogress 50%\rprogress 100%\r\nno newline"
	got, err := collect(t, iotest.OneByteReader(strings.NewReader(in)), true, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []logLine{{"stdout", "line 1"}, {"stdout", "line 2"}, {"stdout", ""}, {"stdout", "progress 100%"}, {"stdout", "no newline"}}
	if !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
	for _, l := range got {
		if strings.ContainsRune(l.line, '\r') {
			t.Errorf("line %q contains \\r", l.line)
		}
	}
}

func TestReadLogsNoTrailingEmptyLine(t *testing.T) {
	for _, in := range []string{"a\n", "a\r\n", "a\r\n\r", "a\n\r"} {
		got, err := collect(t, strings.NewReader(in), true, false)
		if err != nil {
			t.Fatal(err)
		}
		if want := []logLine{{"stdout", "a"}}; !slices.Equal(got, want) {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
	got, err := collect(t, strings.NewReader(""), false, false)
	if err != nil || len(got) != 0 {
		t.Errorf("empty stream: %q, %v", got, err)
	}
}

func TestReadLogsTimestamps(t *testing.T) {
	in := "2026-01-02T03:04:05.000000001Z progress 1%\rprogress 2%\r\n2026-01-02T03:04:06.5Z done\r\n"
	got, err := collect(t, strings.NewReader(in), true, true)
	if err != nil {
		t.Fatal(err)
	}
	want := []logLine{{"stdout", "2026-01-02T03:04:05.000000001Z progress 2%"}, {"stdout", "2026-01-02T03:04:06.5Z done"}}
	if !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestReadLogsLongLine(t *testing.T) {
	long := strings.Repeat("x", maxLineBytes+100)
	var in bytes.Buffer
	in.Write(frame(1, long[:1000]))
	in.Write(frame(1, long[1000:]+"\nnext\n"))
	got, err := collect(t, &in, false, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("got %d lines, want 2", len(got))
	}
	if want := long[:maxLineBytes] + truncatedMark; got[0].line != want {
		t.Errorf("first line has %d bytes, want %d ending in %q", len(got[0].line), len(want), truncatedMark)
	}
	if got[1].line != "next" {
		t.Errorf("second line %q, want next", got[1].line)
	}
}

func TestReadLogsErrors(t *testing.T) {
	var in bytes.Buffer
	in.Write(frame(1, "ok\n"))
	in.Write(frame(3, "something broke\n"))
	got, err := collect(t, &in, false, false)
	if err == nil || !strings.Contains(err.Error(), "something broke") {
		t.Errorf("system error frame: err %v, want its message", err)
	}
	if len(got) != 1 {
		t.Errorf("lines before the error: %q", got)
	}

	truncated := frame(1, "0123456789")[:12]
	if _, err := collect(t, bytes.NewReader(truncated), false, false); err == nil {
		t.Error("a frame cut short: no error")
	}
	if _, err := collect(t, bytes.NewReader(frame(1, "x")[:5]), false, false); err == nil {
		t.Error("a header cut short: no error")
	}
	if _, err := collect(t, bytes.NewReader([]byte("plain text that is not multiplexed\n")), false, false); err == nil {
		t.Error("raw text read as multiplexed: no error")
	}

	stop := errors.New("stop")
	err = readLogs(bytes.NewReader(frame(1, "a\nb\nc\n")), false, false, func(_ string, _, line []byte) error {
		if string(line) == "b" {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Errorf("emit error: got %v, want it returned", err)
	}
}

func TestLineRing(t *testing.T) {
	r := newLineRing(3, 1<<20)
	if got := r.lines(); got == nil || len(got) != 0 {
		t.Errorf("empty ring: %#v, want an empty non-nil slice", got)
	}
	for i := range 10 {
		r.add(string(rune('a' + i)))
	}
	if got, want := r.lines(), []string{"h", "i", "j"}; !slices.Equal(got, want) {
		t.Errorf("lines = %q, want %q", got, want)
	}

	r = newLineRing(100, 10)
	for _, l := range []string{"aaaa", "bbbb", "cccc", "dddd"} {
		r.add(l)
	}
	if got, want := r.lines(), []string{"cccc", "dddd"}; !slices.Equal(got, want) {
		t.Errorf("byte-capped lines = %q, want %q", got, want)
	}
	r.add(strings.Repeat("z", 50))
	if got := r.lines(); len(got) != 1 || len(got[0]) != 50 {
		t.Errorf("an oversized newest line must be kept alone, got %q", got)
	}
}

func TestDockerSince(t *testing.T) {
	for _, tt := range []struct {
		in   time.Time
		want string
	}{
		{time.Time{}, ""},
		{time.Unix(0, 0), "0.000000000"},
		{time.Unix(1700000000, 500000000), "1700000000.500000000"},
		{time.Date(2026, 1, 2, 3, 4, 5, 250000000, time.FixedZone("", 3600)), "1767319445.250000000"},
		{time.Date(2026, 1, 2, 3, 4, 5, 5, time.UTC), "1767323045.000000005"},
	} {
		if got := dockerSince(tt.in); got != tt.want {
			t.Errorf("dockerSince(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// BenchmarkReadLogsMultiplexed measures demultiplexing and line splitting of
// a non-TTY log stream: 10,000 lines in 4 KiB frames, as Docker sends them.
func BenchmarkReadLogsMultiplexed(b *testing.B) {
	var payload bytes.Buffer
	for i := range 10000 {
		fmt.Fprintf(&payload, "2026-11-25T10:00:00Z worker %d: processed request in %d ms\n", i, i%97)
	}
	var stream bytes.Buffer
	for p := payload.Bytes(); len(p) > 0; {
		n := min(len(p), 4096)
		stream.Write(frame(1, string(p[:n])))
		p = p[n:]
	}
	raw := stream.Bytes()
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		lines := 0
		if err := readLogs(bytes.NewReader(raw), false, false, func(string, []byte, []byte) error { lines++; return nil }); err != nil || lines != 10000 {
			b.Fatalf("readLogs: %d lines, %v", lines, err)
		}
	}
}

// TestReadLogsPartialStamps: Docker cuts a line longer than 16 KiB into
// partial messages and, with timestamps, prefixes each one: the line must
// come out whole, with one timestamp, whatever the framing.
func TestReadLogsPartialStamps(t *testing.T) {
	const stamp = "2026-11-30T02:59:41.654824560Z"
	long := strings.Repeat("0123456789abcdef", 2600) // 41600 bytes: three parts
	var parts []string
	for rest := long; rest != ""; {
		n := min(len(rest), partialBytes)
		parts = append(parts, stamp+" "+rest[:n])
		rest = rest[n:]
	}
	parts[len(parts)-1] += "\n"
	// A line whose text merely looks like a stamp where none was inserted.
	lookalike := strings.Repeat("y", 100) + stamp + " z"
	tail := stamp + " short\n" + stamp + " " + lookalike + "\n" + stamp + " \n"
	want := []logLine{{"stdout", stamp + " " + long}, {"stdout", stamp + " short"}, {"stdout", stamp + " " + lookalike}, {"stdout", stamp + " "}}

	tty := strings.Join(parts, "") + tail
	for name, r := range map[string]io.Reader{
		"whole":   strings.NewReader(tty),
		"onebyte": iotest.OneByteReader(strings.NewReader(tty)),
	} {
		got, err := collect(t, r, true, true)
		if err != nil {
			t.Fatalf("tty %s: %v", name, err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("tty %s: got %d lines (first %d bytes), want %d lines (first %d bytes)", name, len(got), len(got[0].line), len(want), len(want[0].line))
		}
	}

	var mux bytes.Buffer
	for _, p := range parts { // one frame per message, as Docker sends them
		mux.Write(frame(1, p))
	}
	mux.Write(frame(1, tail))
	got, err := collect(t, &mux, false, true)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("multiplexed: got %d lines, want %d", len(got), len(want))
	}

	// Without timestamps nothing is removed.
	plain := strings.Repeat("q", partialBytes) + stamp + " rest\n"
	got, err = collect(t, strings.NewReader(plain), true, false)
	if err != nil || len(got) != 1 || got[0].line != strings.TrimSuffix(plain, "\n") {
		t.Errorf("without timestamps the text changed: %v", err)
	}
}

func TestIsStamp(t *testing.T) {
	for in, want := range map[string]bool{
		"2026-11-30T02:59:41.654824560Z": true,
		"2026-11-30T02:59:41.65482456Z":  false,
		"2026-11-30 02:59:41.654824560Z": false,
		"2026-11-30T02:59:41.654824560+": false,
		"x026-11-30T02:59:41.654824560Z": false,
	} {
		if got := isStamp([]byte(in)); got != want {
			t.Errorf("isStamp(%q) = %t, want %t", in, got, want)
		}
	}
}
