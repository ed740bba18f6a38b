package testsupport

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// FreeAddr returns a 127.0.0.1 address whose port is free (FreePort), for
// a program under test to listen on.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", FreePort(t))
}

// FreePort returns a TCP port that is free on every address now and that
// the kernel never hands out by itself: one below its ephemeral range
// (net.ipv4.ip_local_port_range), from which it picks the local port of
// every outgoing connection and of every listener on port 0. A port from
// that range, free when the test asked, can be taken by any connection
// before the program under test binds it (Docker's port proxy failed with
// "address already in use" so). A test that listens itself listens on
// port 0 instead.
func FreePort(t testing.TB) string {
	t.Helper()
	low, high := 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			l, err1 := strconv.Atoi(f[0])
			h, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil {
				low, high = l, h
			}
		}
	}
	from, to := 10000, low // [from, to)
	if to-from < 1000 {
		from, to = high+1, 65536
	}
	for range 100 {
		port := strconv.Itoa(from + rand.IntN(to-from))
		ln, err := net.Listen("tcp", net.JoinHostPort("0.0.0.0", port))
		if err != nil {
			continue // taken
		}
		_ = ln.Close()
		return port
	}
	t.Fatalf("no free TCP port in %d-%d", from, to-1)
	return ""
}
