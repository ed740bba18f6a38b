// Package docker runs the agent's commands against the local Docker Engine
// API: it implements agent.Runtime with Engine. The agent validates each
// command once, when it arrives, and passes each operation only its
// arguments (protocol.CreateParams and the like), which Engine executes.
//
// Every command passes through the node-local policy (internal/policy) before
// it touches Docker: only containers carrying the agent's labels are acted
// on, and a bind mount is one directory directly under a configured volume
// root, made by the agent itself and given to Docker as a mount it may not
// create (binds.go); the agent checks that it sees each root at the path
// Docker does (visibility.go, mountinfo.go). The
// translation of a create command into Docker's container configuration is a
// pure function (translate.go), so the hardening defaults can be read and
// tested in one place.
//
// The ownership check needs the container's labels; while the Docker events
// stream is read, an index of the agent's containers (index.go) answers it
// without an inspect, so a command costs one Docker call. The index addresses
// containers by Docker id, which no other container can ever answer to; a
// stale entry fails with "no such container" and the command falls back to
// the inspect. Images are pulled per pullPolicy, by default Kubernetes' rule
// (always for untagged or :latest, else when missing), and concurrent creates
// of one image share one pull (pulls.go).
//
// Every Docker call runs under its own deadline (Options.CallTimeout, longer
// for image pulls and for stop grace periods), so a hung daemon turns into
// timeout or unavailable errors instead of a hung agent. Errors carry
// protocol codes (errors.go).
package docker
