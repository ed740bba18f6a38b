// Package docker runs the agent's commands against the local Docker Engine
// API: it implements agent.Runtime with Engine.
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
// Every Docker call runs under its own deadline (Options.CallTimeout, longer
// for image pulls and for stop grace periods), so a hung daemon turns into
// timeout or unavailable errors instead of a hung agent. Errors carry
// protocol codes (errors.go).
package docker
