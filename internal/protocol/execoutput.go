package protocol

import (
	"unicode/utf8"
)

// The output of a run-to-completion exec travels in ONE command_result
// frame, as two JSON strings. Counting raw bytes is not enough: a NUL byte
// encodes as \u0000 (6 bytes), '<' as \u003c, an invalid byte as the 3
// bytes of U+FFFD, so 1 MiB of raw output could become 6 MiB of JSON (and
// more than the outgoing frame limit, failing the whole exec). The rule
// (docs/protocol.md, exec):
//
//   - each stream keeps its first bytes, at most ExecOutputCap (1 MiB) of
//     raw output, as UTF-8 text (each run of invalid bytes becomes one
//     U+FFFD), cut only between characters;
//   - stdout and stderr together take at most ExecOutputEncodedCap bytes
//     once JSON-encoded (without the quotes); a stream gets at least half
//     of that when it has that much, and what one leaves unused the other
//     may take;
//   - when a stream lost anything, the result has truncated: true.
//
// ExecOutput applies the rule while the output is read, so an exec never
// holds more than the encoded cap of text, whatever the process prints:
// MAX_SESSIONS (64) execs at once hold at most 64 x 768 KiB = 48 MiB.

// ExecOutputEncodedCap bounds the JSON-encoded size of stdout and stderr
// together in an exec result: 768 KiB, leaving a quarter of the default
// 1 MiB frame (MAX_MESSAGE_BYTES) for the rest of the result.
const ExecOutputEncodedCap = 768 << 10

// ExecOutput collects the output of an exec without stdin within the
// bounds above. The zero value is not usable: see NewExecOutput. It is not
// safe for concurrent use.
type ExecOutput struct {
	budget   int // encoded bytes of both streams together
	out, err execStream
}

type execStream struct {
	text    []byte // valid UTF-8
	enc     int    // JSON-encoded size of text, without quotes
	raw     int    // raw bytes consumed into text
	pending []byte // an incomplete UTF-8 sequence ending the last write (< 4 bytes)
	lastBad bool   // text ends with the U+FFFD of a run of invalid bytes
	cut     bool   // something was lost; later output is discarded
}

// NewExecOutput returns a collector whose streams together take at most
// budget encoded bytes (ExecOutputEncodedCap when budget <= 0).
func NewExecOutput(budget int) *ExecOutput {
	if budget <= 0 {
		budget = ExecOutputEncodedCap
	}
	return &ExecOutput{budget: budget}
}

// Write adds output of stream (StreamStderr, else stdout). What does not
// fit is read and discarded, and marks the result truncated.
func (o *ExecOutput) Write(stream string, p []byte) {
	s, other := &o.out, &o.err
	if stream == StreamStderr {
		s, other = &o.err, &o.out
	}
	// Complete a character cut by the previous write.
	for len(s.pending) > 0 && len(p) > 0 && !s.cut {
		var head [2 * utf8.UTFMax]byte
		n := copy(head[:], s.pending)
		n += copy(head[n:], p[:min(len(p), utf8.UTFMax)])
		if !utf8.FullRune(head[:n]) { // still incomplete: p is very short
			s.pending = append(s.pending, p...)
			return
		}
		r, size := utf8.DecodeRune(head[:n])
		o.add(s, other, r, head[:size])
		if size >= len(s.pending) {
			p = p[size-len(s.pending):]
			s.pending = s.pending[:0]
		} else {
			s.pending = append(s.pending[:0], s.pending[size:]...)
		}
	}
	for len(p) > 0 && !s.cut {
		// Fast path: a run of ASCII that JSON keeps as it is.
		if i := plainPrefix(p); i > 0 {
			i = o.room(s, other, min(i, ExecOutputCap-s.raw))
			if i == 0 {
				s.cut = true
				return
			}
			s.text = append(s.text, p[:i]...)
			s.enc += i
			s.raw += i
			s.lastBad = false
			p = p[i:]
			continue
		}
		if !utf8.FullRune(p) {
			s.pending = append(s.pending[:0], p...)
			return
		}
		r, size := utf8.DecodeRune(p)
		o.add(s, other, r, p[:size])
		p = p[size:]
	}
}

// Result is the exec result with the output collected.
func (o *ExecOutput) Result(exitCode int) ExecResult {
	// A character cut by the end of the output is invalid.
	for _, pair := range [][2]*execStream{{&o.out, &o.err}, {&o.err, &o.out}} {
		s, other := pair[0], pair[1]
		for _, b := range s.pending {
			o.add(s, other, utf8.RuneError, []byte{b})
		}
		s.pending = nil
	}
	return ExecResult{
		ExitCode:  exitCode,
		Stdout:    string(o.out.text),
		Stderr:    string(o.err.text),
		Truncated: o.out.cut || o.err.cut,
	}
}

// add appends one character of s, decoded from src (an invalid byte when r
// is RuneError and src is one byte), or cuts s.
func (o *ExecOutput) add(s, other *execStream, r rune, src []byte) {
	if s.cut {
		return
	}
	raw := len(src)
	if s.raw+raw > ExecOutputCap {
		s.cut = true
		return
	}
	bad := r == utf8.RuneError && raw == 1
	if bad && s.lastBad { // the same run of invalid bytes: one U+FFFD
		s.raw++
		return
	}
	if bad {
		src = replacement
	}
	c := jsonCost(r)
	if o.room(s, other, c) < c {
		s.cut = true
		return
	}
	s.text = append(s.text, src...)
	s.enc += c
	s.raw += raw
	s.lastBad = bad
}

// replacement is U+FFFD in UTF-8.
var replacement = []byte(string(utf8.RuneError))

// room returns how many of want encoded bytes s may add now (up to want),
// taking them from the tail of other when other holds more than its half
// and s less: other then keeps its first bytes only, and is cut.
func (o *ExecOutput) room(s, other *execStream, want int) int {
	free := max(o.budget-s.enc-other.enc, 0)
	if free >= want {
		return want
	}
	half := o.budget / 2
	if other.enc > half && s.enc < half {
		take := min(want, max(half-s.enc, free))
		if take > free {
			other.trim(o.budget - s.enc - take)
			other.cut = true
		}
		return take
	}
	return free
}

// trim drops characters from the end of s until its encoded size is at
// most limit.
func (s *execStream) trim(limit int) {
	for s.enc > limit && len(s.text) > 0 {
		r, size := utf8.DecodeLastRune(s.text)
		s.text = s.text[:len(s.text)-size]
		s.enc -= jsonCost(r)
	}
	s.lastBad = false
}

// Fit returns r with stdout and stderr cut by the rule above so that
// together they take at most budget encoded bytes (Truncated set when
// anything was cut): for a frame limit smaller than the default.
func (r ExecResult) Fit(budget int) ExecResult {
	budget = max(budget, 0)
	eo, ee := encodedLen(r.Stdout), encodedLen(r.Stderr)
	if eo+ee <= budget {
		return r
	}
	half := budget / 2
	lo, le := half, budget-half
	switch {
	case eo <= half:
		lo, le = eo, budget-eo
	case ee <= half:
		lo, le = budget-ee, ee
	}
	r.Stdout, r.Stderr = cutEncoded(r.Stdout, lo), cutEncoded(r.Stderr, le)
	r.Truncated = true
	return r
}

// encodedLen is the JSON-encoded size of s without quotes (s valid UTF-8;
// an invalid byte counts as the 6 bytes of \ufffd, as encoding/json writes
// it).
func encodedLen(s string) int {
	n := 0
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			n += 6
		} else {
			n += jsonCost(r)
		}
		i += size
	}
	return n
}

// cutEncoded returns the longest prefix of s, ending between characters,
// whose encoded size is at most limit.
func cutEncoded(s string, limit int) string {
	n := 0
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		c := jsonCost(r)
		if r == utf8.RuneError && size == 1 {
			c = 6
		}
		if n+c > limit {
			return s[:i]
		}
		n += c
		i += size
	}
	return s
}

// jsonCost is the size of r in a string encoded by encoding/json (HTML
// escaping on, as json.Marshal does).
func jsonCost(r rune) int {
	switch {
	case r == '"' || r == '\\' || r == '\b' || r == '\f' || r == '\n' || r == '\r' || r == '\t':
		return 2
	case r < 0x20 || r == '<' || r == '>' || r == '&' || r == '\u2028' || r == '\u2029':
		return 6
	case r < utf8.RuneSelf:
		return 1
	}
	return utf8.RuneLen(r)
}

// plainPrefix is the length of the run of ASCII at the start of p that
// encoding/json writes unchanged.
func plainPrefix(p []byte) int {
	for i, b := range p {
		if b < 0x20 || b >= utf8.RuneSelf || b == '"' || b == '\\' || b == '<' || b == '>' || b == '&' {
			return i
		}
	}
	return len(p)
}
