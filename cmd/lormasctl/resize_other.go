//go:build !unix

package main

// notifyResize is a no-op where there is no SIGWINCH.
func notifyResize(func()) (stop func()) { return func() {} }
