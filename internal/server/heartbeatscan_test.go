package server

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// heartbeatScanCases are frames scanHeartbeat must take (true) or leave to
// encoding/json (false).
var heartbeatScanCases = []struct {
	frame string
	fast  bool
}{
	{fleetHeartbeat, true},
	{`{"type":"heartbeat","nodeId":"n1","resources":{"cpu":0.5,"memory":"512MB"},"timestamp":"t"}`, true},
	{` { "type" : "heartbeat" , "nodeId" : "n1" , "resources" : { "cpu" : 1e-3 , "memory" : null } } `, true},
	{`{"type":"heartbeat","resources":{}}`, true},
	{`{"type":"heartbeat","nodeId":"n1","resources":{"cpu":0,"newField":{"a":[1,"}",{"b":null}]},"containers":null}}`, true},
	{`{"type":"heartbeat","nodeId":"n1","extra":[1,2,{"x":"\"}"}],"resources":{"containers":{"running":1,"total":2,"paused":0}}}`, true},
	{`{"type":"ping","type":"heartbeat","nodeId":"a","nodeId":"b","resources":{"cpu":2},"resources":{"cpu":1}}`, true},
	{`{"type":"heartbeat","nodeId":"n1","resources":{"memory":"\u00e9\"\\"}}`, true},
	{`{"type":"heartbeat","nodeId":"n1","resources":{"uptimeSeconds":18446744073709551615,"cpuCores":-9223372036854775808}}`, true},

	{`{"type":"heartbeat","nodeId":"n1"}`, false},                       // no resources
	{`{"type":"heartbeat","nodeId":"n1","resources":null}`, false},      // null resources
	{`{"type":"heartbeat","nodeId":"n1","resources":[]}`, false},        // not an object
	{`{"Type":"heartbeat","nodeId":"n1","resources":{}}`, false},        // folded key
	{`{"type":"heartbeat","NODEID":"n1","resources":{}}`, false},        // folded key
	{`{"type":"heartbeat","nodeId":"n1","resources":{"CPU":1}}`, false}, // folded key
	{`{"type":"heartbeat","nodeId":"n1","resources":{"containers":{"Total":1}}}`, false},
	{`{"\u0074ype":"heartbeat","nodeId":"n1","resources":{}}`, false},          // escaped key
	{`{"type":"heart\u0062eat","nodeId":"n1","resources":{}}`, false},          // escaped type
	{`{"type":"heartbeat","nodeId":"n\u0031","resources":{}}`, false},          // escaped nodeId
	{"{\"type\":\"heartbeat\",\"nodeId\":\"n\xff\",\"resources\":{}}", false},  // not UTF-8
	{`{"type":"Heartbeat","nodeId":"n1","resources":{}}`, false},               // another type
	{`{"type":"heartbeat","nodeId":1,"resources":{}}`, false},                  // type error
	{`{"type":"heartbeat","nodeId":"n1","timestamp":5,"resources":{}}`, false}, // type error
	{`{"type":"heartbeat","nodeId":"n1","resources":{"cpu":"1"}}`, false},      // type error
	{`{"type":"heartbeat","nodeId":"n1","resources":{"cpu":1e400}}`, false},    // out of range
	{`{"type":"heartbeat","nodeId":"n1","resources":{"cpu":1` + strings.Repeat("0", 298) + `.5}}`, true},
	{`{"type":"heartbeat","nodeId":"n1","resources":{"cpu":1` + strings.Repeat("0", 309) + `}}`, false}, // out of range
	{`{"type":"heartbeat","nodeId":"n1","resources":{"cpuCores":1.5}}`, false},                          // not an int
	{`{"type":"heartbeat","nodeId":"n1","resources":{"uptimeSeconds":-1}}`, false},                      // negative
	{`{"type":"heartbeat","nodeId":"n1","resources":{"memory":5}}`, false},                              // type error
	{`{"type":"heartbeat","nodeId":"n1","resources":{"containers":3}}`, false},                          // type error
	{`{"type":"heartbeat","nodeId":"n1","resources":{"containers":{"total":true}}}`, false},
	{`{"type":"heartbeat","nodeId":"n1","resources":{}}x`, false}, // not JSON
	{`{"type":"heartbeat","nodeId":"n1","resources":{}`, false},   // not JSON
	{`["heartbeat"]`, false},
	{``, false},
}

// heartbeatScanEdges are frames at the edges of what the scan may take:
// whatever it does with them, what it takes must read as encoding/json
// reads it.
var heartbeatScanEdges = []string{
	`{"type":"heartbeat","nodeId":"n","reſources":{"cpu":"x"},"resources":{}}`, // folds to "resources"
	`{"type":"heartbeat","nodeId":"n","resources":{"\u212Apu":1}}`,             // Kelvin sign
	`{"type":"heartbeat","nodeId":"n","resources":{"cpuCores":-0,"uptimeSeconds":0,"cpu":-0.0e-0}}`,
	`{"type":"heartbeat","nodeId":"n","resources":{"cpuCores":1E2}}`,
	`{"type":"heartbeat","nodeId":"n","resources":{"x":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `}}`,
	`{"type":"heartbeat","nodeId":"n","resources":{"cpu":4.9e-400}}`,
	`{"type":"heartbeat","nodeId":"n\u0000","resources":{}}`,
	`{"type":"heartbeat","nodeId":"n","resources":{},"resources":{"load1":"1"}}`,
	`{"type":"heartbeat","nodeId":"n","resources":{"containers":{"running":1},"containers":{"total":"2"}}}`,
}

// TestScanHeartbeat checks the frames scanHeartbeat takes and that it reads
// them as encoding/json does.
func TestScanHeartbeat(t *testing.T) {
	for _, c := range heartbeatScanCases {
		nodeID, resources, ok := scanHeartbeat([]byte(c.frame))
		if ok != c.fast {
			t.Errorf("scanHeartbeat(%s): ok=%v, want %v", c.frame, ok, c.fast)
		}
		if ok {
			checkAsDecoded(t, []byte(c.frame), nodeID, resources)
		}
	}
	for _, frame := range heartbeatScanEdges {
		if nodeID, resources, ok := scanHeartbeat([]byte(frame)); ok {
			checkAsDecoded(t, []byte(frame), nodeID, resources)
		}
	}
}

// The scan's lists of field names are those of the protocol's types: a
// field added to one of them and not to the scan would be skipped by it
// unchecked, and a frame encoding/json refuses taken.
func TestScanFieldListsMatchProtocol(t *testing.T) {
	for _, c := range []struct {
		list []string
		v    any
	}{
		{heartbeatFields, protocol.Heartbeat{}},
		{resourceFields, protocol.HostResources{}},
		{containerFields, protocol.ContainerCounts{}},
	} {
		var names []string
		typ := reflect.TypeOf(c.v)
		for i := range typ.NumField() {
			name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			names = append(names, name)
		}
		if got, want := slices.Sorted(slices.Values(c.list)), slices.Sorted(slices.Values(names)); !slices.Equal(got, want) {
			t.Errorf("%T: the scan knows %v, the type has %v", c.v, got, want)
		}
	}
}

// FuzzScanHeartbeat checks that whatever scanHeartbeat takes, encoding/json
// decodes to the same node id and resources without an error.
func FuzzScanHeartbeat(f *testing.F) {
	for _, c := range heartbeatScanCases {
		f.Add([]byte(c.frame))
	}
	for _, frame := range heartbeatScanEdges {
		f.Add([]byte(frame))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		if nodeID, resources, ok := scanHeartbeat(frame); ok {
			checkAsDecoded(t, frame, nodeID, resources)
		}
	})
}

func checkAsDecoded(t *testing.T, frame, nodeID, resources []byte) {
	t.Helper()
	var hb struct {
		Type      string          `json:"type"`
		NodeID    string          `json:"nodeId"`
		Resources json.RawMessage `json:"resources"`
	}
	if err := json.Unmarshal(frame, &hb); err != nil || hb.Type != protocol.TypeHeartbeat {
		t.Fatalf("scanHeartbeat took %s; encoding/json: type %q, %v", frame, hb.Type, err)
	}
	if string(nodeID) != hb.NodeID || !bytes.Equal(resources, hb.Resources) {
		t.Fatalf("scanHeartbeat(%s) = %q, %s; encoding/json: %q, %s", frame, nodeID, resources, hb.NodeID, hb.Resources)
	}
	var known protocol.HostResources
	if err := json.Unmarshal(resources, &known); err != nil {
		t.Fatalf("scanHeartbeat took %s; its resources: %v", frame, err)
	}
	m, err := protocol.Decode(frame)
	if err != nil {
		t.Fatalf("scanHeartbeat took %s; protocol.Decode: %v", frame, err)
	}
	if got := m.(protocol.Heartbeat).NodeID; got != hb.NodeID || strings.Contains(got, "\ufffd") {
		t.Fatalf("protocol.Decode(%s): node id %q", frame, got)
	}
}
