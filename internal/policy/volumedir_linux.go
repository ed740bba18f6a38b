package policy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// bindDirMode is the mode of the directories the agent makes for binds, as
// Docker made them (root-owned 0755) when it created bind sources itself.
const bindDirMode = 0o755

// ErrRootNotWritable is wrapped by Ensure's error when the agent's user may
// not create the bind directory in its root; the directory does not exist.
// The Docker layer may then have the daemon create it (see internal/docker).
var ErrRootNotWritable = errors.New("the agent's user may not create directories in the volume root")

// Ensure makes the bind source of m exist as a real directory directly under
// its root and refuses anything else found there. It creates the root itself
// (mode 0755) when it is missing. It works relative to an open descriptor of
// the root and never follows a symlink at m.Name: a symlink or a file there is
// forbidden, naming it. A named volume needs nothing.
func (v *Volumes) Ensure(m Mount) error {
	if m.Kind != BindMount {
		return nil
	}
	r := v.rootOf(m.Root)
	if r == nil || m.Source != m.Root+"/"+m.Name || len(m.Name) > maxBindName || !bindNameRE.MatchString(m.Name) {
		return protocol.Errorf(protocol.CodeInternal, "bind source %q was not approved by the volume policy", m.Source)
	}
	rootfd, err := v.openRoot(r)
	if err != nil {
		return err
	}
	defer unix.Close(rootfd)

	created := false
	switch err := unix.Mkdirat(rootfd, m.Name, bindDirMode); {
	case err == nil:
		created = true
	case errors.Is(err, unix.EEXIST):
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM), errors.Is(err, unix.EROFS):
		var st unix.Stat_t
		if serr := unix.Fstatat(rootfd, m.Name, &st, unix.AT_SYMLINK_NOFOLLOW); errors.Is(serr, unix.ENOENT) {
			return protocol.Errorf(protocol.CodeForbidden,
				"cannot create the bind source %s: %w (%v); let the agent's user (uid %d) write to the volume root, e.g. chown %d %s",
				m.Source, ErrRootNotWritable, err, os.Geteuid(), os.Geteuid(), r.Path)
		}
		// Something exists there: judged below.
	default:
		return protocol.Errorf(protocol.CodeInternal, "create the bind source %s: %v", m.Source, err)
	}

	var st unix.Stat_t
	if err := unix.Fstatat(rootfd, m.Name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return protocol.Errorf(protocol.CodeInternal, "check the bind source %s: %v", m.Source, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
	case unix.S_IFLNK:
		target := "?"
		buf := make([]byte, 4096)
		if n, err := unix.Readlinkat(rootfd, m.Name, buf); err == nil {
			target = string(buf[:n])
		}
		return protocol.Errorf(protocol.CodeForbidden,
			"bind source %s is a symbolic link (to %q), not a directory; bind sources are never followed through symlinks", m.Source, target)
	default:
		return protocol.Errorf(protocol.CodeForbidden,
			"bind source %s exists and is not a directory (%s)", m.Source, fileType(st.Mode))
	}
	if created {
		// Mkdirat applied the umask (systemd's UMask=0077 would leave 0700).
		fd, err := unix.Openat(rootfd, m.Name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Fchmod(fd, bindDirMode)
			unix.Close(fd)
		}
		if err != nil {
			return protocol.Errorf(protocol.CodeInternal, "set the mode of the bind source %s: %v", m.Source, err)
		}
		v.log.Info("bind source created", "path", m.Source)
	}
	return nil
}

// openRoot opens the resolved root as a directory (O_PATH: no read
// permission needed), creating it first when it is missing.
func (v *Volumes) openRoot(r *rootState) (int, error) {
	if _, err := os.Lstat(r.Resolved); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(r.Resolved, 0o755); err != nil {
			return -1, protocol.Errorf(protocol.CodeForbidden, "volume root %s is missing and cannot be created: %v", r.Path, err)
		}
		v.log.Info("volume root created", "root", r.Path, "path", r.Resolved, "mode", "0755")
	}
	fd, err := unix.Open(r.Resolved, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, protocol.Errorf(protocol.CodeForbidden, "open volume root %s (%s): %v", r.Path, r.Resolved, err)
	}
	return fd, nil
}

// Audit returns a warning for each root that exists and that someone other
// than root and the agent's user can write to, or that is not a directory:
// whoever can write a root can swap a bind source for a symlink.
func (v *Volumes) Audit() []string {
	euid := uint32(os.Geteuid())
	var out []string
	for _, r := range v.roots {
		var st unix.Stat_t
		if err := unix.Lstat(r.Resolved, &st); err != nil {
			if !errors.Is(err, unix.ENOENT) {
				out = append(out, fmt.Sprintf("volume root %s cannot be checked: %v", r.Path, err))
			}
			continue
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			out = append(out, fmt.Sprintf("volume root %s is not a directory (%s): bind mounts under it fail", r.Path, fileType(st.Mode)))
			continue
		}
		if perm := st.Mode & 0o7777; perm&0o022 != 0 {
			out = append(out, fmt.Sprintf("volume root %s is writable by its group or others (mode %04o): whoever can write it can swap a bind source for a symlink; run chmod go-w %s", r.Path, perm, r.Path))
		}
		if st.Uid != 0 && st.Uid != euid {
			out = append(out, fmt.Sprintf("volume root %s is owned by uid %d, neither root nor the agent's user (uid %d): that user can swap a bind source for a symlink", r.Path, st.Uid, euid))
		}
	}
	return out
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFLNK:
		return "a symbolic link"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFIFO:
		return "a named pipe"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "a device"
	case unix.S_IFDIR:
		return "a directory"
	}
	return "type " + strconv.FormatUint(uint64(mode&unix.S_IFMT), 8)
}
