package docker

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// socketPeerPID returns the pid of the process serving the unix socket at
// path, as seen from the agent's pid namespace (SO_PEERCRED; 0 when that
// process lies outside it or the socket cannot be reached).
func socketPeerPID(path string) int {
	conn, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return 0
	}
	defer conn.Close()
	raw, err := conn.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0
	}
	pid := 0
	_ = raw.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}
