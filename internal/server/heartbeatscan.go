package server

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// scanHeartbeat reads a heartbeat frame as agents write it, without
// encoding/json's reflection: a fleet's heartbeats are nearly all the
// server reads, and decoding them with encoding/json was a third of the
// server's CPU under a fleet, its garbage the most of the collector's work,
// and its depth what grew every read loop's stack (copied at each growth,
// and held by every connected agent).
//
// It returns the frame's nodeId as written and its resources object (a
// slice of frame) and ok=true only when encoding/json would decode the
// frame into the same: a valid JSON object of type "heartbeat" whose
// resources is an object that protocol.HostResources takes without a type
// error. Anything it does not recognise plainly (a key written with escapes
// or in another case than the field's, an escaped nodeId, a null or absent
// resources, a number out of its field's range...) gets ok=false and is left
// to encoding/json, which decodes it or reports it exactly as before; so
// the fast path never accepts a frame the general one would refuse.
func scanHeartbeat(frame []byte) (nodeID, resources []byte, ok bool) {
	if !json.Valid(frame) {
		return nil, nil, false
	}
	// From here the frame is valid JSON: the scan follows its structure
	// and checks only the types of the fields.
	sc := jsonScan{b: frame}
	if sc.next() != '{' {
		return nil, nil, false
	}
	sc.i++
	var typ []byte
	ok = sc.members(func(key []byte) bool {
		var plain bool
		switch string(key) {
		case "type":
			typ, plain = sc.plainString()
			return plain
		case "nodeId":
			// encoding/json would replace bytes that are not UTF-8.
			nodeID, plain = sc.plainString()
			return plain && isASCII(nodeID)
		case "timestamp":
			return sc.next() == '"' && sc.skipValue()
		case "resources":
			start := sc.next()
			if start != '{' {
				return false // null or a type error: the general path decides
			}
			from := sc.i
			if !sc.resources() {
				return false
			}
			resources = frame[from:sc.i]
			return true
		}
		return !foldsToAny(key, heartbeatFields) && sc.skipValue()
	})
	if !ok || string(typ) != "heartbeat" || resources == nil {
		return nil, nil, false
	}
	return nodeID, resources, true
}

// The JSON names of protocol.Heartbeat's, protocol.HostResources' and
// protocol.ContainerCounts' fields; encoding/json matches keys to them
// without regard to case, so a key that differs from them in case only is
// left to it.
var (
	heartbeatFields = []string{"type", "nodeId", "timestamp", "resources"}
	resourceFields  = []string{"cpu", "memory", "cpuCores", "memoryUsedBytes", "memoryTotalBytes",
		"diskUsedBytes", "diskTotalBytes", "load1", "load5", "load15", "uptimeSeconds", "containers"}
	containerFields = []string{"running", "total"}
)

func foldsToAny(key []byte, names []string) bool {
	for _, n := range names {
		if bytes.EqualFold(key, []byte(n)) {
			return true
		}
	}
	return false
}

// resources checks, at the '{' of a resources object, that
// protocol.HostResources takes it; it ends past the '}'.
func (sc *jsonScan) resources() bool {
	sc.i++
	return sc.members(func(key []byte) bool {
		switch string(key) {
		case "cpu", "load1", "load5", "load15":
			return sc.number(isFloat64)
		case "cpuCores":
			return sc.number(isInt)
		case "memoryUsedBytes", "memoryTotalBytes", "diskUsedBytes", "diskTotalBytes", "uptimeSeconds":
			return sc.number(isUint64)
		case "memory":
			return sc.stringOrNull()
		case "containers":
			switch sc.next() {
			case 'n':
				return sc.skipValue()
			case '{':
				sc.i++
				return sc.members(func(key []byte) bool {
					switch string(key) {
					case "running", "total":
						return sc.number(isInt)
					}
					return !foldsToAny(key, containerFields) && sc.skipValue()
				})
			}
			return false
		}
		return !foldsToAny(key, resourceFields) && sc.skipValue()
	})
}

// The conversions encoding/json makes of a number into a float64, an int
// and a uint64 field: one that fails is its type error.
func isFloat64(n []byte) bool {
	if !bytes.ContainsAny(n, "eE") && len(n) < 300 {
		// Without an exponent, fewer than 300 digits are far from
		// float64's range (1.8e308): ParseFloat, whose frame is a
		// kilobyte of the read loop's stack, cannot fail.
		return true
	}
	_, err := strconv.ParseFloat(string(n), 64)
	return err == nil
}

func isInt(n []byte) bool {
	_, err := strconv.ParseInt(string(n), 10, strconv.IntSize)
	return err == nil
}

func isUint64(n []byte) bool {
	_, err := strconv.ParseUint(string(n), 10, 64)
	return err == nil
}

// jsonScan walks a document json.Valid accepted; its methods report false
// for what they do not take, never for a syntax error (there is none).
type jsonScan struct {
	b []byte
	i int
}

// next skips white space and returns the byte there (0 at the end).
func (sc *jsonScan) next() byte {
	for sc.i < len(sc.b) {
		switch c := sc.b[sc.i]; c {
		case ' ', '\t', '\n', '\r':
			sc.i++
		default:
			return c
		}
	}
	return 0
}

// members calls member for each key of the object whose '{' it is past,
// with the scan at the key's value, which member consumes; it ends past the
// '}'. Keys with escapes or other than ASCII are not taken: encoding/json
// would unescape and fold them.
func (sc *jsonScan) members(member func(key []byte) bool) bool {
	if sc.next() == '}' {
		sc.i++
		return true
	}
	for {
		sc.next()
		key, ok := sc.plainString()
		if !ok || !isASCII(key) {
			return false
		}
		sc.next() // ':'
		sc.i++
		sc.next()
		if !member(key) {
			return false
		}
		if sc.next() == '}' {
			sc.i++
			return true
		}
		sc.i++ // ','
	}
}

// plainString returns the contents of the string at the scan, which must
// have no escapes, and moves past it.
func (sc *jsonScan) plainString() ([]byte, bool) {
	if sc.next() != '"' {
		return nil, false
	}
	start := sc.i + 1
	end := bytes.IndexByte(sc.b[start:], '"')
	s := sc.b[start : start+end]
	if bytes.IndexByte(s, '\\') >= 0 {
		return nil, false
	}
	sc.i = start + end + 1
	return s, true
}

// stringOrNull takes a string (escapes allowed) or null.
func (sc *jsonScan) stringOrNull() bool {
	switch sc.next() {
	case '"', 'n':
		return sc.skipValue()
	}
	return false
}

// number takes null or a number that fits (as encoding/json converts it).
func (sc *jsonScan) number(fits func([]byte) bool) bool {
	c := sc.next()
	if c == 'n' {
		return sc.skipValue()
	}
	if c != '-' && (c < '0' || c > '9') {
		return false
	}
	start := sc.i
	sc.skipValue()
	return fits(sc.b[start:sc.i])
}

// skipValue moves past the value at the scan.
func (sc *jsonScan) skipValue() bool {
	switch c := sc.next(); c {
	case '"':
		sc.i++
		for sc.i < len(sc.b) {
			switch sc.b[sc.i] {
			case '\\':
				sc.i += 2
			case '"':
				sc.i++
				return true
			default:
				sc.i++
			}
		}
		return false
	case '{', '[':
		depth := 0
		for sc.i < len(sc.b) {
			switch sc.b[sc.i] {
			case '"':
				sc.skipValue()
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
			sc.i++
			if depth == 0 {
				return true
			}
		}
		return false
	default: // a number, true, false, null
		for sc.i < len(sc.b) {
			switch sc.b[sc.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return true
			}
			sc.i++
		}
		return true
	}
}

func isASCII(s []byte) bool {
	for _, c := range s {
		if c >= 0x80 {
			return false
		}
	}
	return true
}
