// Package e2e holds the end-to-end tests: the built lormas-agent and
// lormas-server binaries, run as real processes, against the real Docker
// Engine of this machine. The package has no non-test code beyond this
// comment; everything lives in _test.go files.
package e2e
