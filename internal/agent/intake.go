package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// Estimated memory of a queued command beyond its decoded fields: the
// job, its closures and logger, the dedup entry and a share of a lane
// goroutine. Charged for every command so that many tiny commands are
// bounded by bytes too.
const jobOverhead = 2 << 10

// Per-element costs of decoded fields (Go 1.2x on 64-bit), with slack for
// allocation size classes; commandCost must never underestimate (the test
// TestCommandCostCoversDecodedHeap measures it against the real heap).
const (
	mapEntryCost = 80 // one map[string]string entry: slot, control byte, load-factor slack
	stringHeader = 16
	portSize     = 48 // protocol.Port
	volumeSize   = 40 // protocol.Volume
	commandSize  = 256
	eggSize      = 256
	resourceSize = 64
)

// peekString decodes a JSON string of at most peekMax bytes and ignores
// anything else, without allocating for it (the peek must not cost what
// decoding the frame would).
type peekString string

const peekMax = 1024

func (p *peekString) UnmarshalJSON(b []byte) error {
	// The last of repeated keys counts, as for every decoder of the frame:
	// a later null leaves the value before it (as in a string field), any
	// other value that is not a string of at most peekMax bytes leaves
	// nothing.
	if string(b) == "null" {
		return nil
	}
	*p = ""
	if len(b) < 2 || b[0] != '"' || len(b) > peekMax {
		return nil
	}
	// The common case, a plain string: no second decoder pass.
	if inner := b[1 : len(b)-1]; !bytes.ContainsAny(inner, "\\\"") && utf8.Valid(inner) && !hasControl(inner) {
		*p = peekString(inner)
		return nil
	}
	var s string
	if json.Unmarshal(b, &s) == nil {
		*p = peekString(s)
	}
	return nil
}

// hasControl reports a byte JSON does not allow unescaped in a string.
func hasControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 {
			return true
		}
	}
	return false
}

// peekType is the peek of "type", which protocol.Decode reads into an
// interface: there a later null clears it, and so here.
type peekType peekString

func (p *peekType) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*p = ""
		return nil
	}
	return (*peekString)(p).UnmarshalJSON(b)
}

// frameHead is what admit reads of a frame before decoding it.
type frameHead struct {
	Type        peekType   `json:"type"`
	ID          peekString `json:"id"`
	Action      peekString `json:"action"`
	ContainerID peekString `json:"containerId"`
}

// laneKey is the dispatcher's ordering key of a command, and the key its
// memory is accounted under: its container, or none for list.
func laneKey(action protocol.Action, containerID string) string {
	if action == protocol.ActionList {
		return ""
	}
	return containerID
}

// admit runs before a frame is decoded. A command frame takes room for its
// size in the pending budget; when there is none the command is answered
// at once with unavailable, from its id, action and container alone, and
// its body is never decoded. admit returns the room held (nil for other
// frames), whether the frame is a command, and false when the frame has
// been answered.
func (a *Agent) admit(frame []byte) (rsv *reservation, command, ok bool) {
	var head frameHead
	if json.Unmarshal(frame, &head) != nil || head.Type != protocol.TypeCommand {
		return nil, false, true // not a command, or malformed: Decode reports it
	}
	rsv, ok = a.admitCommand(frame, head)
	return rsv, true, ok
}

func (a *Agent) admitCommand(frame []byte, head frameHead) (*reservation, bool) {
	action := protocol.Action(head.Action)
	key := laneKey(action, string(head.ContainerID))
	rsv, err := a.pending.reserve(key, int64(len(frame))+jobOverhead)
	if err == nil {
		return rsv, true
	}
	if id := string(head.ID); id != "" {
		if state, _ := a.seen.lookup(id); state != seenNew {
			return nil, true // a duplicate takes no room: answered after decoding
		}
	}
	if a.draining.Load() {
		return nil, true // answered as shutting down after decoding
	}
	a.refuse(string(head.ID), action, err)
	return nil, false
}

// refuse answers a command that found no room: unavailable (or invalid
// when it can never fit), counted, logged at most once a second with the
// number of refusals since.
func (a *Agent) refuse(id string, action protocol.Action, err error) {
	if id == "" {
		id = uuid.NewString()
	}
	reason := RefusedNodeBytes
	var r *refusal
	if errors.As(err, &r) {
		reason = r.reason
	}
	a.obs.CommandRefused(reason)
	if ok, suppressed := a.refuseLog.Allow(); ok {
		a.log.Warn("command refused: no room for it among the pending commands", "commandId", id, "action", action,
			"reason", reason, "err", err, "refusedSinceLastLog", suppressed)
	}
	if !action.Known() {
		action = "unknown" // the server's string must not become a metric label
	}
	a.obs.CommandDone(action, protocol.StatusError, 0)
	a.deliver(id, protocol.Failure(id, err, nil))
}

// shed drops the fields cmd's action never reads, so a queued command
// keeps only what it needs: a stop queued behind a slow one does not hold
// on to a megabyte of environment.
func shed(cmd *protocol.Command) {
	if cmd.Action == protocol.ActionCreate {
		return
	}
	cmd.EggConfig = nil
	cmd.Environment = nil
	if cmd.Action != protocol.ActionUpdate {
		cmd.Resources = nil
	}
}

// commandCost estimates the heap a decoded command holds, from above:
// every string, map entry and slice (by capacity) it references, plus
// jobOverhead. Decoded JSON costs more than its frame when it is made of
// many small parts (a map entry of two bytes on the wire holds ~80 here).
func commandCost(cmd *protocol.Command) int64 {
	n := int64(jobOverhead + commandSize)
	n += str(cmd.Type) + str(cmd.ID) + str(string(cmd.Action)) + str(cmd.ContainerID) + str(cmd.Since) + str(cmd.Signal)
	n += strMap(cmd.Environment)
	n += strSlice(cmd.Cmd) + strMap(cmd.Env) + str(cmd.User) + str(cmd.WorkingDir) // exec
	if cmd.Lines != nil {
		n += 8
	}
	if cmd.Timeout != nil {
		n += 8
	}
	if r := cmd.Resources; r != nil {
		n += resourceSize + str(string(r.Memory)) + str(string(r.Disk))
	}
	if e := cmd.EggConfig; e != nil {
		n += eggSize + str(e.Image) + str(e.WorkingDir) + str(e.User) + str(e.StopSignal) + str(e.RestartPolicy) + str(e.PullPolicy)
		n += alloc(int64(cap(e.Ports)) * portSize)
		for _, p := range e.Ports {
			n += str(p.Protocol) + str(p.HostIP)
		}
		n += alloc(int64(cap(e.Volumes)) * volumeSize)
		for _, v := range e.Volumes {
			n += str(v.Host) + str(v.Container)
		}
		n += strSlice(e.Command) + strSlice(e.Entrypoint) + strMap(e.Labels)
		if e.TTY != nil {
			n += 8
		}
	}
	return n
}

// alloc is the heap of an allocation of n bytes, rounded up to the
// allocator's size class (at most 1/8 more, at least 8 bytes).
func alloc(n int64) int64 {
	if n == 0 {
		return 0
	}
	return n + n/8 + 8
}

// str is the heap of a string's bytes.
func str(s string) int64 { return alloc(int64(len(s))) }

func strSlice(ss []string) int64 {
	n := alloc(int64(cap(ss)) * stringHeader)
	for _, s := range ss {
		n += str(s)
	}
	return n
}

func strMap(m map[string]string) int64 {
	n := int64(len(m)) * mapEntryCost
	for k, v := range m {
		n += str(k) + str(v)
	}
	return n
}
