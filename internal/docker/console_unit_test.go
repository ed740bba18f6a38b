package docker

import (
	"bytes"
	"strings"
	"testing"
)

// TestLineCutterBoundsPieces: lines keep their newline, streams are cut
// apart, and a workload writing without newlines cannot grow the held
// piece beyond maxPiece.
func TestLineCutterBoundsPieces(t *testing.T) {
	var c lineCutter
	got := c.cut("stdout", []byte("a\nb"))
	got = append(got, c.cut("stderr", []byte("x\n"))...)
	got = append(got, c.cut("stdout", []byte("c\r\n"))...)
	if want := "a\n|x\n|bc\r\n"; string(bytes.Join(got, []byte("|"))) != want {
		t.Errorf("lines %q, want %q", bytes.Join(got, []byte("|")), want)
	}
	flood := []byte(strings.Repeat("y", 3*maxPiece+10))
	pieces := c.cut("stdout", flood)
	if len(pieces) != 3 || len(c.partial["stdout"]) != 10 {
		t.Errorf("%d pieces, %d bytes held; want 3 pieces of %d and 10 bytes", len(pieces), len(c.partial["stdout"]), maxPiece)
	}
}

// TestJoinerMatch: the live output's first complete lines are found among
// the log lines seen after the attach, and the bytes already sent are
// skipped.
func TestJoinerMatch(t *testing.T) {
	j := &joiner{streams: map[string]*joinStream{}}
	s := j.stream("stdout")
	for _, l := range []string{"line 1\n", "line 2\n", "line 3\n"} {
		s.logLines = append(s.logLines, []byte(l))
	}
	s.pending = []byte("line 2\nline 3\nline 4\npro")
	j.match("stdout", s)
	if !s.resolved || s.skip != len("line 2\nline 3\n") {
		t.Fatalf("resolved %t skip %d, want the two lines already sent skipped", s.resolved, s.skip)
	}
	s2 := j.stream("stderr")
	s2.logLines = [][]byte{[]byte("old\n")}
	s2.pending = []byte("new\n")
	j.match("stderr", s2)
	if s2.resolved {
		t.Error("a live line the log never showed matched")
	}
}
