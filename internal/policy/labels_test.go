package policy

import (
	"maps"
	"strings"
	"testing"

	"github.com/lormas/lormas-agent/internal/protocol"
)

func TestOwnershipLabels(t *testing.T) {
	got := Ownership{NodeID: "node-1"}.Labels("web-1")
	want := map[string]string{"lormas.managed": "true", "lormas.node": "node-1", "lormas.container": "web-1"}
	if !maps.Equal(got, want) {
		t.Errorf("Labels = %v, want %v", got, want)
	}
	if got := (Ownership{}).Labels("web-1"); got[LabelNode] != "" || len(got) != 2 {
		t.Errorf("Labels without node id = %v, want no %s", got, LabelNode)
	}
}

func TestOwnershipCheck(t *testing.T) {
	managed := map[string]string{LabelManaged: "true", LabelNode: "node-1"}
	managedNoNode := map[string]string{LabelManaged: "true"}
	otherNode := map[string]string{LabelManaged: "true", LabelNode: "node-2"}
	unmanaged := map[string]string{"com.example": "x"}
	falseLabel := map[string]string{LabelManaged: "false", LabelNode: "node-1"}

	tests := []struct {
		name    string
		o       Ownership
		labels  map[string]string
		allowed bool
		says    string
	}{
		{"own container", Ownership{NodeID: "node-1"}, managed, true, ""},
		{"managed without node label", Ownership{NodeID: "node-1"}, managedNoNode, true, ""},
		{"agent without node id", Ownership{}, otherNode, true, ""},
		{"other node", Ownership{NodeID: "node-1"}, otherNode, false, `belongs to node "node-2"`},
		{"unmanaged", Ownership{NodeID: "node-1"}, unmanaged, false, "ALLOW_UNMANAGED=true"},
		{"no labels", Ownership{NodeID: "node-1"}, nil, false, "not managed"},
		{"managed=false", Ownership{NodeID: "node-1"}, falseLabel, false, "not managed"},
		{"unmanaged allowed", Ownership{NodeID: "node-1", AllowUnmanaged: true}, unmanaged, true, ""},
		{"other node allowed", Ownership{NodeID: "node-1", AllowUnmanaged: true}, otherNode, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.o.Check("web-1", tt.labels)
			if tt.allowed {
				if err != nil {
					t.Fatalf("Check: %v, want allowed", err)
				}
				return
			}
			if protocol.CodeOf(err) != protocol.CodeForbidden {
				t.Fatalf("Check = %v (code %s), want forbidden", err, protocol.CodeOf(err))
			}
			if !strings.Contains(err.Error(), "web-1") || !strings.Contains(err.Error(), tt.says) {
				t.Errorf("error %q: want the container name and %q", err, tt.says)
			}
		})
	}
}
