package policy

import (
	"fmt"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// Labels the agent puts on every container and named volume it creates. They
// use protocol.ReservedLabelPrefix, which eggConfig.labels cannot use.
const (
	LabelManaged   = protocol.ReservedLabelPrefix + "managed"   // "true"
	LabelNode      = protocol.ReservedLabelPrefix + "node"      // the node id
	LabelContainer = protocol.ReservedLabelPrefix + "container" // the containerId
	LabelSpec      = protocol.ReservedLabelPrefix + "spec"      // hash of the create request
)

// ManagedValue is the value of LabelManaged.
const ManagedValue = "true"

// Ownership decides which containers this agent may act on.
//
// A container is the agent's when it carries lormas.managed=true and, when the
// agent knows its node id, lormas.node equal to that id. The node check keeps
// two agents that share one Docker Engine (a test setup, a migration) from
// listing, stopping or deleting each other's containers; node ids are stable
// across token rotation and re-enrollment by name, so the check does not
// orphan a node's own containers.
type Ownership struct {
	NodeID         string // "" skips the node check
	AllowUnmanaged bool   // ALLOW_UNMANAGED: act on any container
}

// Labels returns the agent's labels for a container or volume named
// containerID.
func (o Ownership) Labels(containerID string) map[string]string {
	l := map[string]string{LabelManaged: ManagedValue, LabelContainer: containerID}
	if o.NodeID != "" {
		l[LabelNode] = o.NodeID
	}
	return l
}

// Owns reports whether labels mark a container of this agent, ignoring
// AllowUnmanaged.
func (o Ownership) Owns(labels map[string]string) bool {
	if labels[LabelManaged] != ManagedValue {
		return false
	}
	return o.NodeID == "" || labels[LabelNode] == "" || labels[LabelNode] == o.NodeID
}

// Check returns a forbidden error when the container named containerID, with
// these labels, is not this agent's and AllowUnmanaged is off.
func (o Ownership) Check(containerID string, labels map[string]string) error {
	if o.AllowUnmanaged || o.Owns(labels) {
		return nil
	}
	if labels[LabelManaged] == ManagedValue {
		return protocol.Errorf(protocol.CodeForbidden,
			"container %s belongs to node %q, not to this node (%q)", containerID, labels[LabelNode], o.NodeID)
	}
	return protocol.Errorf(protocol.CodeForbidden,
		"container %s is not managed by this agent (it has no %s=%s label); set ALLOW_UNMANAGED=true to allow it",
		containerID, LabelManaged, ManagedValue)
}

// String describes the policy for logs.
func (o Ownership) String() string {
	return fmt.Sprintf("node=%q allowUnmanaged=%t", o.NodeID, o.AllowUnmanaged)
}
