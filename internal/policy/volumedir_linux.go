package policy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/lormas/lormas-agent/internal/mountinfo"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// bindDirMode is the mode of the directories the agent makes for binds, as
// Docker made them (root-owned 0755) when it created bind sources itself:
// a container's non-root users may enter their own mount.
const bindDirMode = 0o755

// rootMode is the mode of the roots the agent makes. No other host user may
// pass through a root: a workload running as root can leave setuid programs
// and device nodes in its own directory, which would work as such for any
// host user who reaches them. The daemon (root) and the containers (which
// see only their own mount) do not need to pass.
const rootMode = 0o700

// ErrRootNotWritable is wrapped by Ensure's error when the agent's user may
// not create the bind directory in its root; the directory does not exist.
// The Docker layer may then have the daemon create it (see internal/docker).
var ErrRootNotWritable = errors.New("the agent's user may not create directories in the volume root")

// Ensure makes the bind source of m exist as a real directory directly under
// its root and refuses anything else found there. It creates the root itself
// (mode 0700, see rootMode) when it is missing. It works relative to an open descriptor of
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
		// ENOENT: nothing there. EACCES: the agent may not even look into
		// the root (a root's 0700 root, the agent not root).
		if serr := unix.Fstatat(rootfd, m.Name, &st, unix.AT_SYMLINK_NOFOLLOW); errors.Is(serr, unix.ENOENT) || errors.Is(serr, unix.EACCES) {
			return protocol.Errorf(protocol.CodeForbidden,
				"cannot create the bind source %s: %w (%v); let the agent's user (uid %d) write to the volume root, e.g. chown %d %s",
				m.Source, ErrRootNotWritable, err, os.Geteuid(), os.Geteuid(), r.Path)
		}
		// Something exists there: judged below.
	default:
		return protocol.Errorf(protocol.CodeInternal, "create the bind source %s: %v", m.Source, err)
	}

	var st unix.Stat_t
	if err := unix.Fstatat(rootfd, m.Name, &st, unix.AT_SYMLINK_NOFOLLOW); errors.Is(err, unix.EACCES) {
		return protocol.Errorf(protocol.CodeForbidden,
			"cannot check the bind source %s: %v; let the agent's user (uid %d) use the volume root, e.g. chown %d %s",
			m.Source, err, os.Geteuid(), os.Geteuid(), r.Path)
	} else if err != nil {
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
		// Missing parents are made private too; the root's mode is set
		// exactly, whatever the umask.
		err := os.MkdirAll(r.Resolved, rootMode)
		if err == nil {
			err = os.Chmod(r.Resolved, rootMode)
		}
		if err != nil {
			return -1, protocol.Errorf(protocol.CodeForbidden, "volume root %s is missing and cannot be created: %v", r.Path, err)
		}
		v.log.Info("volume root created", "root", r.Path, "path", r.Resolved, "mode", fmt.Sprintf("%04o", rootMode))
	}
	fd, err := unix.Open(r.Resolved, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, protocol.Errorf(protocol.CodeForbidden, "open volume root %s (%s): %v", r.Path, r.Resolved, err)
	}
	return fd, nil
}

// Audit returns a warning for each thing about the roots that lets someone
// other than root and the agent's user get at the bind sources:
//   - a root that is not a directory, that others may write to, or that
//     another user owns: whoever can write a root can swap a bind source
//     for a symlink between the agent's check and Docker's start;
//   - a parent directory of a root (up to "/") that another user owns, or
//     that group or others may write to without the sticky bit: its owner or
//     writers can rename the root itself and put another in its place;
//   - a root that every host user can reach (it and all its parents
//     searchable by others): a workload running as root can leave setuid
//     programs and device nodes in its directory, which work as such for
//     whoever reaches them;
//   - a root on a mount without nosuid and nodev (the same files; defence in
//     depth when the modes are right).
//
// In a container, the agent sees its own container's parents and mounts.
func (v *Volumes) Audit() []string {
	euid, egid := uint32(os.Geteuid()), uint32(os.Getegid())
	var out []string
	mounts, mountsErr := mountinfo.Read(v.mountTable)
	if mountsErr != nil {
		out = append(out, fmt.Sprintf("cannot check the mount options of the volume roots: %v", mountsErr))
	}
	for _, r := range v.roots {
		out = append(out, auditParents(r, euid)...)
		if mountsErr == nil {
			if m := mountinfo.Covering(mounts, r.Resolved); m != nil && (!m.Has("nosuid") || !m.Has("nodev")) {
				out = append(out, fmt.Sprintf("volume root %s lies on the mount at %s without nosuid,nodev (options %s): setuid programs and device nodes a workload leaves in its directory keep working on the host; put the roots on a file system mounted nosuid,nodev", r.Path, m.Point, strings.Join(m.Opts, ",")))
			}
		}
		var st unix.Stat_t
		if err := unix.Lstat(r.Resolved, &st); err != nil {
			if !errors.Is(err, unix.ENOENT) {
				out = append(out, fmt.Sprintf("volume root %s cannot be checked: %v", r.Path, err))
			}
			continue // the agent makes it, private, at its first use
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			out = append(out, fmt.Sprintf("volume root %s is not a directory (%s): bind mounts under it fail", r.Path, fileType(st.Mode)))
			continue
		}
		perm := st.Mode & 0o7777
		if perm&0o022 != 0 {
			out = append(out, fmt.Sprintf("volume root %s is writable by its group or others (mode %04o): whoever can write it can swap a bind source for a symlink; run chmod go-w %s", r.Path, perm, r.Path))
		}
		if st.Uid != 0 && st.Uid != euid {
			out = append(out, fmt.Sprintf("volume root %s is owned by uid %d, neither root nor the agent's user (uid %d): that user can swap a bind source for a symlink", r.Path, st.Uid, euid))
		}
		if reachableByOthers(r.Resolved, egid) {
			fix := "chmod 0700 " + r.Path
			if euid != 0 && st.Uid != euid {
				fix = fmt.Sprintf("chown %d:%d %s && chmod 0700 %s", euid, egid, r.Path, r.Path)
			}
			out = append(out, fmt.Sprintf("volume root %s can be entered by every host user (mode %04o, and every directory above it is searchable): a workload running as root can leave setuid programs and device nodes in its directory that they could then use; run %s", r.Path, perm, fix))
		}
	}
	return out
}

// auditParents warns about each existing parent directory of r (up to "/")
// that lets someone other than root and the agent's user rename or replace
// the root: owned by another user, or writable by group or others without
// the sticky bit (with it, only an entry's owner may rename it).
func auditParents(r *rootState, euid uint32) []string {
	var out []string
	for dir := filepath.Dir(r.Resolved); ; dir = filepath.Dir(dir) {
		var st unix.Stat_t
		if err := unix.Lstat(dir, &st); err == nil {
			perm := st.Mode & 0o7777
			switch {
			case st.Uid != 0 && st.Uid != euid:
				out = append(out, fmt.Sprintf("directory %s, above the volume root %s, is owned by uid %d, neither root nor the agent's user (uid %d): that user can rename the root and put another in its place between the agent's check and Docker's start; make it root's (chown root %s)", dir, r.Path, st.Uid, euid, dir))
			case perm&0o022 != 0 && perm&unix.S_ISVTX == 0:
				out = append(out, fmt.Sprintf("directory %s, above the volume root %s, is writable by its group or others without the sticky bit (mode %04o): they can rename the root and put another in its place between the agent's check and Docker's start; run chmod go-w %s", dir, r.Path, perm, dir))
			}
		} else if !errors.Is(err, unix.ENOENT) {
			out = append(out, fmt.Sprintf("directory %s, above the volume root %s, cannot be checked: %v", dir, r.Path, err))
		}
		if dir == "/" {
			return out
		}
	}
}

// reachableByOthers reports whether a host user other than the owners of
// path and its parents can enter path (clean, absolute, existing): every
// directory on the way is searchable by others, or by a group that is
// neither root's nor the agent's.
func reachableByOthers(path string, egid uint32) bool {
	for dir := path; ; dir = filepath.Dir(dir) {
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err != nil {
			return false
		}
		others := st.Mode&0o001 != 0
		group := st.Mode&0o010 != 0 && st.Gid != 0 && st.Gid != egid
		if !others && !group {
			return false
		}
		if dir == "/" {
			return true
		}
	}
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
