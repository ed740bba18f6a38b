package protocol

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

// encodedSize is the size json.Marshal gives both output strings of r,
// without their quotes.
func encodedSize(t *testing.T, r ExecResult) int {
	t.Helper()
	o, err := json.Marshal(r.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	e, err := json.Marshal(r.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	return len(o) - 2 + len(e) - 2
}

// The cost model is encoding/json's own, character class by character
// class, including invalid bytes (which json.Marshal writes as \ufffd).
func TestEncodedLenMatchesEncodingJSON(t *testing.T) {
	samples := []string{
		"", "plain ascii", "\x00\x01\x1f", "\b\f\n\r\t", `"quoted" \ back`, "<a href='x'>&amp;</a>", "\x7f",
		"é€😀", "\u2028\u2029", "\uFFFD", "\xff", "a\xe2\x82", "\xc3",
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		b := make([]byte, rng.IntN(64))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		samples = append(samples, string(b))
	}
	for _, s := range samples {
		j, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := encodedLen(s), len(j)-2; got != want {
			t.Errorf("encodedLen(%q) = %d, json.Marshal gives %d", s, got, want)
		}
	}
}

func TestExecOutputNULFloodIsBoundedByEncodedSize(t *testing.T) {
	o := NewExecOutput(0)
	chunk := make([]byte, 32<<10)
	for range (2 << 20) / len(chunk) { // 2 MiB of NULs on each stream, interleaved
		o.Write(StreamStdout, chunk)
		o.Write(StreamStderr, chunk)
	}
	r := o.Result(0)
	if !r.Truncated {
		t.Error("not truncated")
	}
	if got := encodedSize(t, r); got > ExecOutputEncodedCap {
		t.Errorf("encoded output %d bytes, want at most %d", got, ExecOutputEncodedCap)
	}
	// NUL is \u0000 (6 bytes): each stream gets its half.
	if want := ExecOutputEncodedCap / 2 / 6; len(r.Stdout) != want || len(r.Stderr) != want {
		t.Errorf("kept %d and %d NULs, want %d each", len(r.Stdout), len(r.Stderr), want)
	}
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("4 MiB of NULs: result of %d bytes", len(data))
	if len(data) > ExecOutputEncodedCap+64 {
		t.Errorf("result %d bytes", len(data))
	}
}

func TestExecOutputShares(t *testing.T) {
	const budget = 1000
	t.Run("one stream takes all", func(t *testing.T) {
		o := NewExecOutput(budget)
		o.Write(StreamStdout, bytes.Repeat([]byte("a"), 5000))
		r := o.Result(0)
		if len(r.Stdout) != budget || r.Stderr != "" || !r.Truncated {
			t.Errorf("stdout %d bytes, stderr %q, truncated %v", len(r.Stdout), r.Stderr, r.Truncated)
		}
	})
	t.Run("a late error message keeps its room", func(t *testing.T) {
		o := NewExecOutput(budget)
		o.Write(StreamStdout, bytes.Repeat([]byte("a"), 5000))
		o.Write(StreamStderr, []byte("error: boom\n"))
		r := o.Result(1)
		if r.Stderr != "error: boom\n" || !r.Truncated {
			t.Errorf("stderr %q, truncated %v", r.Stderr, r.Truncated)
		}
		if got := encodedSize(t, r); got != budget {
			t.Errorf("encoded %d bytes, want all %d used", got, budget)
		}
		if !strings.HasPrefix(strings.Repeat("a", 5000), r.Stdout) {
			t.Errorf("stdout is not a prefix of the output")
		}
		// Stdout was cut: what it prints later is not appended after the gap.
		o.Write(StreamStdout, []byte("late"))
		if r := o.Result(1); strings.Contains(r.Stdout, "late") {
			t.Errorf("output after a cut was kept")
		}
	})
	t.Run("both over half", func(t *testing.T) {
		o := NewExecOutput(budget)
		for range 50 {
			o.Write(StreamStderr, bytes.Repeat([]byte("e"), 100))
			o.Write(StreamStdout, bytes.Repeat([]byte("o"), 100))
		}
		r := o.Result(0)
		if len(r.Stdout) != budget/2 || len(r.Stderr) != budget/2 || !r.Truncated {
			t.Errorf("stdout %d, stderr %d, truncated %v; want %d each", len(r.Stdout), len(r.Stderr), r.Truncated, budget/2)
		}
	})
	t.Run("fits", func(t *testing.T) {
		o := NewExecOutput(budget)
		o.Write(StreamStdout, []byte("out\n"))
		o.Write(StreamStderr, []byte("err\n"))
		if r := o.Result(0); r.Stdout != "out\n" || r.Stderr != "err\n" || r.Truncated {
			t.Errorf("result %+v", r)
		}
	})
}

// Cuts fall between characters and the text is valid UTF-8; a character
// split across writes is kept whole; invalid bytes become U+FFFD (a run
// one), as strings.ToValidUTF8 does.
func TestExecOutputUTF8(t *testing.T) {
	t.Run("multi-byte character at the boundary", func(t *testing.T) {
		o := NewExecOutput(9) // "aaaa€" is 7 bytes; another € would make 10
		o.Write(StreamStdout, []byte("aaaa€€"))
		r := o.Result(0)
		if r.Stdout != "aaaa€" || !r.Truncated {
			t.Errorf("stdout %q truncated %v, want \"aaaa€\" cut", r.Stdout, r.Truncated)
		}
	})
	t.Run("escape at the boundary", func(t *testing.T) {
		o := NewExecOutput(8) // "ab" 2 + NUL 6 = 8; "<" would be 6 more
		o.Write(StreamStdout, []byte("ab\x00<"))
		if r := o.Result(0); r.Stdout != "ab\x00" || !r.Truncated {
			t.Errorf("stdout %q truncated %v", r.Stdout, r.Truncated)
		}
	})
	t.Run("character split across writes", func(t *testing.T) {
		o := NewExecOutput(0)
		for _, b := range []byte("x€😀y") {
			o.Write(StreamStdout, []byte{b})
		}
		if r := o.Result(0); r.Stdout != "x€😀y" || r.Truncated {
			t.Errorf("stdout %q truncated %v", r.Stdout, r.Truncated)
		}
	})
	t.Run("invalid bytes", func(t *testing.T) {
		o := NewExecOutput(0)
		o.Write(StreamStdout, []byte("ok\xff\xfe\xfdok\xe2\x82"))
		if r := o.Result(0); r.Stdout != "ok\uFFFDok\uFFFD" || r.Truncated {
			t.Errorf("stdout %q truncated %v", r.Stdout, r.Truncated)
		}
	})
	t.Run("random chunks agree with ToValidUTF8", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(3, 4))
		alphabet := []string{"a", "\x00", "€", "😀", "\xff", "\xe2", "\x82", "<", "\n", "é"}
		for range 300 {
			var in []byte
			for range rng.IntN(40) {
				in = append(in, alphabet[rng.IntN(len(alphabet))]...)
			}
			o := NewExecOutput(0)
			for rest := in; len(rest) > 0; {
				n := 1 + rng.IntN(min(len(rest), 5))
				o.Write(StreamStderr, rest[:n])
				rest = rest[n:]
			}
			r := o.Result(0)
			if want := strings.ToValidUTF8(string(in), "\uFFFD"); r.Stderr != want || r.Truncated {
				t.Fatalf("input %q: got %q, want %q", in, r.Stderr, want)
			}
		}
	})
	t.Run("cut output is valid UTF-8 and within budget", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(5, 6))
		for range 200 {
			budget := 1 + rng.IntN(60)
			o := NewExecOutput(budget)
			for range 20 {
				b := make([]byte, rng.IntN(8))
				for i := range b {
					b[i] = byte(rng.IntN(256))
				}
				stream := StreamStdout
				if rng.IntN(2) == 0 {
					stream = StreamStderr
				}
				o.Write(stream, b)
			}
			r := o.Result(0)
			if !utf8.ValidString(r.Stdout) || !utf8.ValidString(r.Stderr) {
				t.Fatalf("invalid UTF-8 kept: %q %q", r.Stdout, r.Stderr)
			}
			if got := encodedSize(t, r); got > budget {
				t.Fatalf("budget %d: encoded %d", budget, got)
			}
		}
	})
}

// Memory: whatever the process prints, the collector holds at most its
// budget of text.
func TestExecOutputHoldsAtMostItsBudget(t *testing.T) {
	o := NewExecOutput(0)
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	for range 160 { // 10 MiB on each stream
		o.Write(StreamStdout, chunk)
		o.Write(StreamStderr, chunk)
	}
	if held := cap(o.out.text) + cap(o.err.text); held > 2*ExecOutputEncodedCap {
		t.Errorf("holds %d bytes of text for a budget of %d", held, ExecOutputEncodedCap)
	}
	if got := encodedSize(t, o.Result(0)); got != ExecOutputEncodedCap {
		t.Errorf("encoded %d, want the whole budget %d", got, ExecOutputEncodedCap)
	}
}

func TestExecResultFit(t *testing.T) {
	r := ExecResult{Stdout: strings.Repeat("\x00", 1000), Stderr: "short error"}
	got := r.Fit(600)
	if !got.Truncated || got.Stderr != "short error" || encodedSize(t, got) > 600 || len(got.Stdout) != (600-11)/6 {
		t.Errorf("Fit(600): stdout %d NULs, stderr %q, truncated %v", len(got.Stdout), got.Stderr, got.Truncated)
	}
	if same := (ExecResult{Stdout: "a", Stderr: "b"}).Fit(2); same.Truncated || same.Stdout != "a" || same.Stderr != "b" {
		t.Errorf("Fit of what fits changed it: %+v", same)
	}
	both := ExecResult{Stdout: strings.Repeat("€", 100), Stderr: strings.Repeat("é", 100)}.Fit(100)
	if !utf8.ValidString(both.Stdout) || !utf8.ValidString(both.Stderr) || encodedSize(t, both) > 100 {
		t.Errorf("Fit(100) = %q %q", both.Stdout, both.Stderr)
	}
}
