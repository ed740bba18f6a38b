package docker

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// The volume attacks of issue 7, with the agent on the host (the Engine in
// this process) and real Docker; agent_container_test.go runs them with the
// agent in a container.

// bindEgg is a workload with one bind mount at /data.
func (it *itEnv) bindEgg(host string, args ...string) *protocol.EggConfig {
	egg := it.egg(args...)
	egg.TTY = boolp(false)
	egg.Volumes = []protocol.Volume{{Host: host, Container: "/data"}}
	return egg
}

// output returns what a container printed so far (stdout and stderr).
func (it *itEnv) output(name string) string {
	it.t.Helper()
	rc, err := it.cli.ContainerLogs(it.ctx, name, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		it.t.Fatalf("logs of %s: %v", name, err)
	}
	defer rc.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, rc); err != nil {
		it.t.Fatalf("read logs of %s: %v", name, err)
	}
	return out.String()
}

// waitOutput waits until a container has printed want n times.
func (it *itEnv) waitOutput(name, want string, n int) string {
	it.t.Helper()
	var out string
	testsupport.WaitFor(it.t, fmt.Sprintf("%s to print %q %d times", name, want, n), func() bool {
		out = it.output(name)
		return strings.Count(out, want) >= n
	})
	return out
}

// refused creates name binding host and wants a forbidden answer containing
// want, with no container left behind.
func (it *itEnv) refused(name, host, want string) {
	it.t.Helper()
	_, _, err := it.eng.Create(it.ctx, createOf(it.t, it.createCmd(name, it.bindEgg(host))), nil)
	wantCode(it.t, "create binding "+host, err, protocol.CodeForbidden)
	if !strings.Contains(err.Error(), want) {
		it.t.Errorf("create binding %s: %q, want it to contain %q", host, err, want)
	}
	if _, err := it.cli.ContainerInspect(it.ctx, name); err == nil {
		it.t.Errorf("container %s exists after a refused create", name)
	}
}

// rootEntries lists the volume root: name, type and inode of each entry.
func rootEntries(t *testing.T, root string) []string {
	t.Helper()
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		fi, err := os.Lstat(filepath.Join(root, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %v ino=%d", e.Name(), fi.Mode().Type(), fi.Sys().(*syscall.Stat_t).Ino))
	}
	slices.Sort(out)
	return out
}

// TestBindSymlinkPlant: a workload bound at <root>/a plants <root>/a/escape
// -> / in its own directory; a create that binds the symlink, or a path
// through it, would give a second container the host's "/".
//
// The code before this change approved both creates whenever the agent could
// not see the root (in a container, where it checked the strings only:
// <root>/a/escape lies inside <root>), and Docker then followed the symlink
// (TestAgentInContainer reproduces that setting). On the host its
// EvalSymlinks refused these two, but not the swap of TestBindSwap. Now a
// bind source is one directory directly under a root, so both are refused
// from the string alone, wherever the agent runs.
func TestBindSymlinkPlant(t *testing.T) {
	it := newIT(t)
	planter := it.name("planter")
	it.create(it.createCmd(planter, it.bindEgg(it.root+"/a", "-symlink", "/data/escape=/", "-ls", "/data")))
	if err := it.eng.Start(it.ctx, planter); err != nil {
		t.Fatalf("Start: %v", err)
	}
	it.waitOutput(planter, "symlink /data/escape -> /: ok", 1)
	if target, err := os.Readlink(it.root + "/a/escape"); err != nil || target != "/" {
		t.Fatalf("planted symlink on the host: %q, %v", target, err)
	}
	for _, host := range []string{it.root + "/a/escape", it.root + "/a/escape/etc", it.root + "/a/escape/var/run"} {
		it.refused(it.name("victim"), host, "is nested deeper than one directory below the volume root "+it.root)
	}
}

// TestBindSwap: a workload running as root with Docker's default
// capabilities, bound at <root>/a, tries every way to change <root> (to swap
// another container's source for a symlink between create and start, or
// before a restart): through "..", by renaming, removing or replacing its
// mount point, by planting symlinks, by mounting. <root>'s entries stay as
// they were, and a second container bound at <root>/b sees only its own
// directory, also after restarts by the Docker API (as Docker's restart
// policy restarts it, without the agent).
//
// The code before this change let a workload be bound at the root itself or
// at a directory above another container's source (<root>/a and
// <root>/a/b); that workload then swapped the source for a symlink to "/"
// and Docker followed it at the next start. Both creates are refused now.
func TestBindSwap(t *testing.T) {
	it := newIT(t)
	it.refused(it.name("atroot"), it.root, "is the volume root "+it.root+" itself")
	it.refused(it.name("atroot"), it.root+"/", "itself")
	it.refused(it.name("nested"), it.root+"/a/b", "is nested deeper than one directory")

	victim := it.name("victim")
	egg := it.bindEgg(it.root+"/b", "-ls", "/data")
	egg.RestartPolicy = "always"
	it.create(it.createCmd(victim, egg))
	if err := os.WriteFile(it.root+"/b/victim-marker", []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	attacker := it.name("attacker")
	it.create(it.createCmd(attacker, it.bindEgg(it.root+"/a", "-escape", "/data", "-exit", "0")))
	before := rootEntries(t, it.root)

	if err := it.eng.Start(it.ctx, attacker); err != nil {
		t.Fatalf("Start attacker: %v", err)
	}
	if code := it.waitExit(attacker); code != 0 {
		t.Fatalf("attacker exit code %d", code)
	}
	out := it.output(attacker)
	t.Logf("attacker:\n%s", out)
	for _, step := range []string{"rename /data", "remove /data", "symlink over /data", "mount tmpfs on /data", "bind / onto /data", "unmount /data"} {
		if strings.Contains(out, "escape "+step+": ok") {
			t.Errorf("attacker step %q succeeded", step)
		}
	}
	if after := rootEntries(t, it.root); !slices.Equal(after, before) {
		t.Errorf("volume root changed by the attacker:\nbefore %q\nafter  %q", before, after)
	}

	if err := it.eng.Start(it.ctx, victim); err != nil {
		t.Fatalf("Start victim: %v", err)
	}
	want := "ls /data: victim-marker\n"
	it.waitOutput(victim, want, 1)
	for i := 2; i <= 3; i++ {
		if err := it.cli.ContainerRestart(it.ctx, victim, container.StopOptions{Timeout: intp(1)}); err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
		it.waitOutput(victim, want, i)
	}
	if out := it.output(victim); strings.Count(out, "ls /data: ") != strings.Count(out, want) {
		t.Errorf("the victim saw something else than its own directory:\n%s", out)
	}
	c := it.inspect(victim)
	if len(c.Mounts) != 1 || c.Mounts[0].Source != it.root+"/b" {
		t.Errorf("victim mounts %+v, want %s/b only", c.Mounts, it.root)
	}
}

// TestBindPlantedByHost: what the host put at <root>/<name> is taken only
// when it is a real directory: a symlink (to "/") or a file there is refused
// at create. And since Docker is given mounts, not binds, it never makes a
// missing source itself: a source removed after the create fails the start
// instead of being made again.
func TestBindPlantedByHost(t *testing.T) {
	it := newIT(t)
	if err := os.Symlink("/", it.root+"/c"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(it.root+"/f", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	it.refused(it.name("link"), it.root+"/c", `bind source `+it.root+`/c is a symbolic link (to "/"), not a directory`)
	it.refused(it.name("file"), it.root+"/f", "bind source "+it.root+"/f exists and is not a directory (a regular file)")
	if target, err := os.Readlink(it.root + "/c"); err != nil || target != "/" {
		t.Errorf("the planted symlink was changed: %q %v", target, err)
	}

	gone := it.name("gone")
	it.create(it.createCmd(gone, it.bindEgg(it.root+"/gone", "-ls", "/data")))
	if err := os.Remove(it.root + "/gone"); err != nil {
		t.Fatal(err)
	}
	err := it.eng.Start(it.ctx, gone)
	if err == nil {
		t.Fatalf("Start with the bind source removed: no error")
	}
	t.Logf("start with the source removed: %v", err)
	if _, err := os.Lstat(it.root + "/gone"); err == nil {
		t.Errorf("Docker made the removed bind source again")
	}
}

// probeAsNobodyEnv makes TestBindPlantUnreachable's child process: it runs as
// uid 65534 (any host user) and tries the paths given there.
const probeAsNobodyEnv = "LORMAS_TEST_PROBE_AS_NOBODY"

// TestBindPlantUnreachable: M1. A workload running as root (Docker's
// default capabilities, no-new-privileges) leaves a setuid-root copy of a
// program and a device node in its bind directory. Under the code before,
// the root the agent made was 0755, so any host user could walk into
// <root>/<name>, open the device and run the program as root (it printed
// euid=0). Now the agent makes the root 0700: a host user gets EACCES for
// each, while the daemon and the containers (which see only their own
// mount, also as a non-root user) are not hindered.
func TestBindPlantUnreachable(t *testing.T) {
	if paths := os.Getenv(probeAsNobodyEnv); paths != "" {
		probeAsNobody(strings.Split(paths, ","))
		return
	}
	// A base every user may enter, as /var/lib is; the root inside is
	// missing, so the agent makes it.
	base, err := os.MkdirTemp("", "lormas-plant-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	base, _ = filepath.EvalSymlinks(base)
	root := filepath.Join(base, "volumes")
	it := newIT(t, func(o *Options) { o.VolumeRoots = []string{root} })
	it.root = root

	planter := it.name("planter")
	it.create(it.createCmd(planter, it.bindEgg(root+"/a", "-plant", "/data", "-exit", "0")))
	if err := it.eng.Start(it.ctx, planter); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if code := it.waitExit(planter); code != 0 {
		t.Fatalf("planter exit code %d:\n%s", code, it.output(planter))
	}
	out := it.output(planter)
	for _, want := range []string{"plant /data/suid: ok", "plant /data/null: ok"} {
		if !strings.Contains(out, want) {
			t.Fatalf("planter output lacks %q:\n%s", want, out)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(root+"/a/suid", &st); err != nil || st.Mode&syscall.S_ISUID == 0 || st.Uid != 0 {
		t.Fatalf("planted %s/a/suid: %v, mode %o, uid %d; want setuid root", root, err, st.Mode, st.Uid)
	}
	if err := syscall.Lstat(root+"/a/null", &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFCHR {
		t.Fatalf("planted %s/a/null: %v, mode %o; want a character device", root, err, st.Mode)
	}
	if err := syscall.Stat(root, &st); err != nil || st.Mode&0o7777 != 0o700 {
		t.Errorf("volume root %s: %v, mode %04o, want 0700", root, err, st.Mode&0o7777)
	}

	// Any host user: uid 65534 in a child process (the test's own copy).
	if os.Geteuid() != 0 {
		t.Logf("running as uid %d, not root: the root's mode is checked, the attempt as another user needs root", os.Geteuid())
	} else {
		bin := filepath.Join(base, "docker.test")
		data, err := os.ReadFile(os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, data, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-test.run=^TestBindPlantUnreachable$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), probeAsNobodyEnv+"="+root+"/a/suid,"+root+"/a/null")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		got, err := cmd.CombinedOutput()
		t.Logf("as uid 65534:\n%s", got)
		if err != nil || !strings.Contains(string(got), "PASS") {
			t.Fatalf("probe as uid 65534: %v", err)
		}
		for _, line := range []string{
			"stat " + root + "/a/suid: permission denied",
			"exec " + root + "/a/suid: permission denied",
			"stat " + root + "/a/null: permission denied",
			"open " + root + "/a/null: permission denied",
		} {
			if !strings.Contains(string(got), "probe: "+line+"\n") {
				t.Errorf("as uid 65534, want %q", line)
			}
		}
	}

	// A container's non-root user still uses its bind under the 0700 root.
	if err := os.WriteFile(root+"/a/marker", []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	reader := it.name("reader")
	egg := it.bindEgg(root+"/a", "-whoami", "-cat", "/data/marker", "-ls", "/data", "-exit", "0")
	egg.User = "65534:65534"
	it.create(it.createCmd(reader, egg))
	if err := it.eng.Start(it.ctx, reader); err != nil {
		t.Fatalf("Start as a non-root user: %v", err)
	}
	if code := it.waitExit(reader); code != 0 {
		t.Fatalf("reader exit code %d:\n%s", code, it.output(reader))
	}
	out = it.output(reader)
	for _, want := range []string{"whoami: uid=65534 euid=65534", "cat /data/marker: <nil>\nfrom the host", "ls /data: marker null suid"} {
		if !strings.Contains(out, want) {
			t.Errorf("reader (uid 65534 in the container) output lacks %q:\n%s", want, out)
		}
	}
}

// probeAsNobody is the child of TestBindPlantUnreachable: it stats each
// path, opens the device, runs the program, and prints what happened.
func probeAsNobody(paths []string) {
	errText := func(err error) string {
		switch {
		case err == nil:
			return "ok"
		case errors.Is(err, syscall.EACCES):
			return "permission denied"
		}
		return err.Error()
	}
	for _, p := range paths {
		_, err := os.Lstat(p)
		fmt.Printf("probe: stat %s: %s\n", p, errText(err))
		if strings.HasSuffix(p, "/null") {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err == nil {
				f.Close()
			}
			fmt.Printf("probe: open %s: %s\n", p, errText(err))
			continue
		}
		out, err := exec.Command(p, "-whoami", "-exit", "0").CombinedOutput()
		fmt.Printf("probe: exec %s: %s\n", p, strings.TrimSpace(errText(err)+" "+string(out)))
	}
}
