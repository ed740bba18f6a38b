package protocol_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// TestCommandResultMarshalJSON: the agent encodes results by calling
// MarshalJSON directly (json.Marshal would scan and copy the output twice
// more); the bytes must be json.Marshal's, escapes included.
func TestCommandResultMarshalJSON(t *testing.T) {
	tricky := "<b>&amp;</b> \u2028\u2029 \x1b[31m \xff\xfe \"quoted\" \\ tab\t"
	for _, res := range []*protocol.CommandResult{
		protocol.Success("c1", protocol.LogsResult{Logs: []string{tricky, "plain"}}, []string{tricky}),
		protocol.Success("c2", protocol.MessageResult{Message: protocol.MsgStarted}, nil),
		protocol.Failure("c3", protocol.Errorf(protocol.CodeInvalid, "bad %s", tricky), nil),
	} {
		want, err := json.Marshal(res)
		if err != nil {
			t.Fatal(err)
		}
		got, err := res.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("MarshalJSON:\n%s\njson.Marshal:\n%s", got, want)
		}
	}
}
