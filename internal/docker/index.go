package docker

import (
	"context"
	"strings"
	"sync"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// containerIndex remembers, for the containers this agent manages, the
// Docker id behind each name and the few immutable facts commands need
// (tty, stop timeout), so that a command costs one Docker call instead of
// an inspect and the call.
//
// It is a cache of the managed check, and the managed check is a security
// check, so it relies on what cannot change rather than on being current:
//
//   - an entry is made only from an inspect (or the agent's own create)
//     that passed policy.Ownership.Owns, and keyed by the Docker id; labels
//     cannot change after creation and Docker never reuses an id, so the id
//     names a managed container for as long as it exists;
//   - a command on an entry addresses the container by that id, never by
//     name: when the name now belongs to another container (the managed one
//     was removed and someone created another under its name), Docker
//     answers "no such container" for the old id, the entry is dropped and
//     the command goes the slow way (inspect by name, ownership check);
//   - the Docker events stream the agent reads anyway drops entries when
//     their container is destroyed or renamed, and a name that shows up
//     for a new id replaces nothing until an inspect checked it; a lookup
//     that raced with such an event is not recorded (generation count);
//   - the index is used only while an events subscription runs, and it is
//     emptied whenever one starts or ends: events missed in a gap cannot
//     leave entries behind.
//
// Only containers of this agent's own node are kept (Owns), so
// ALLOW_UNMANAGED changes nothing here: other containers always take the
// inspect path.
type containerIndex struct {
	mu     sync.Mutex
	live   int    // running events subscriptions
	gen    uint64 // bumped when an entry may have become stale
	byName map[string]indexEntry
	byID   map[string]string // Docker id -> name
}

// indexEntry is what the index keeps of one container.
type indexEntry struct {
	id          string
	tty         bool
	stopTimeout *int
}

func newContainerIndex() *containerIndex {
	return &containerIndex{byName: map[string]indexEntry{}, byID: map[string]string{}}
}

// get returns the entry of the container named name, if the index is live
// and knows it.
func (x *containerIndex) get(name string) (indexEntry, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.live == 0 {
		return indexEntry{}, false
	}
	e, ok := x.byName[name]
	return e, ok
}

// generation is the token a lookup takes before it asks Docker; record
// accepts its answer only when nothing that could make it stale happened
// meanwhile.
func (x *containerIndex) generation() uint64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.gen
}

// record remembers the container named name, found under generation gen.
// The caller has checked that the agent owns it.
func (x *containerIndex) record(gen uint64, name string, e indexEntry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.live == 0 || gen != x.gen || e.id == "" {
		return
	}
	if old, ok := x.byName[name]; ok && old.id != e.id {
		delete(x.byID, old.id)
	}
	if oldName, ok := x.byID[e.id]; ok && oldName != name {
		delete(x.byName, oldName)
	}
	x.byName[name] = e
	x.byID[e.id] = name
}

// forget drops the entry of the Docker id id, if any.
func (x *containerIndex) forget(id string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.forgetLocked(id)
}

func (x *containerIndex) forgetLocked(id string) {
	x.gen++
	if name, ok := x.byID[id]; ok {
		delete(x.byID, id)
		if x.byName[name].id == id {
			delete(x.byName, name)
		}
	}
}

// subscribed marks an events subscription as started (up) or ended; both
// empty the index.
func (x *containerIndex) subscribed(up bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if up {
		x.live++
	} else {
		x.live--
	}
	x.gen++
	clear(x.byName)
	clear(x.byID)
}

// size is the number of entries (tests, metrics).
func (x *containerIndex) size() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.byName)
}

// apply updates the index from one Docker event. destroy and rename drop
// the container's entry; a create under a name the index maps to another
// id drops that entry (the name was reused: the next command inspects).
func (x *containerIndex) apply(m events.Message) {
	if m.Type != events.ContainerEventType {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	switch m.Action {
	case events.ActionDestroy, events.ActionRename:
		x.forgetLocked(m.Actor.ID)
	case events.ActionCreate:
		name := strings.TrimPrefix(m.Actor.Attributes["name"], "/")
		if e, ok := x.byName[name]; ok && e.id != m.Actor.ID {
			x.forgetLocked(e.id)
		}
	}
}

// response is the part of an inspect answer the commands on an indexed
// container read: id, name, tty and stop timeout. State is nil: commands
// then leave the state checks to Docker (start of a running container and
// stop of a stopped one are no-ops there too).
func (e indexEntry) response(name string) container.InspectResponse {
	return container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{ID: e.id, Name: "/" + name},
		Config:            &container.Config{Tty: e.tty, StopTimeout: e.stopTimeout},
	}
}

// entryOf is the index entry of an inspected container.
func entryOf(c container.InspectResponse) indexEntry {
	e := indexEntry{}
	if c.ContainerJSONBase != nil {
		e.id = c.ID
	}
	if c.Config != nil {
		e.tty = c.Config.Tty
		if c.Config.StopTimeout != nil {
			t := *c.Config.StopTimeout
			e.stopTimeout = &t
		}
	}
	return e
}

// withContainer runs op on the container named id that this agent may act
// on: from the index when it knows the container (op's call is then the
// only Docker call), else after an inspect and the ownership check
// (lookup). When op reports the indexed container missing, its entry is
// dropped and op runs again on a fresh lookup: a stale entry costs a call,
// never a wrong answer. op returns protocol errors (dockerError).
func (e *Engine) withContainer(ctx context.Context, action, id string, op func(c container.InspectResponse) error) error {
	if c, ok := e.indexed(ctx, id); ok {
		err := op(c)
		if protocol.CodeOf(err) != protocol.CodeNotFound {
			return err
		}
		e.index.forget(c.ID)
	}
	c, err := e.lookup(ctx, action, id)
	if err != nil {
		return err
	}
	return op(c)
}

// indexed returns the indexed container named id, if any.
func (e *Engine) indexed(ctx context.Context, id string) (container.InspectResponse, bool) {
	if protocol.ValidateContainerID(id) != nil || e.ready(ctx, "") != nil {
		return container.InspectResponse{}, false
	}
	entry, ok := e.index.get(id)
	if !ok {
		return container.InspectResponse{}, false
	}
	return entry.response(id), true
}
