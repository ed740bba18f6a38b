//go:build !unix

package dockertest

// lockFile is a no-op where flock does not exist: concurrent builds then
// only cost time, as they produce the same tag.
func lockFile(string) (func(), error) { return func() {}, nil }
