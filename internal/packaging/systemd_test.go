package packaging

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	unitName = "lormas-agent.service"
	unitSrc  = "scripts/lormas-agent.service"
	// maxExposure is the highest `systemd-analyze security` exposure accepted
	// (0 = fully locked down, 10 = unprotected; "OK" is below 3.0). The unit
	// scores 1.6 when written; the margin allows for other systemd versions.
	maxExposure = 2.5
)

// fakeRoot is a temporary root file system with the unit installed as
// install.sh does and an executable at ExecStart, so systemd-analyze checks
// this unit and nothing of the host's.
func fakeRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	unit, err := os.ReadFile(filepath.Join(repoRoot(t), unitSrc))
	if err != nil {
		t.Fatal(err)
	}
	for p, f := range map[string]struct {
		content []byte
		mode    os.FileMode
	}{
		"etc/systemd/system/" + unitName: {unit, 0o644},
		"usr/local/bin/lormas-agent":     {[]byte("#!/bin/sh\nexit 0\n"), 0o755},
		"etc/lormas-agent/agent.env":     {[]byte("SERVER_URL=ws://localhost:3000\n"), 0o600},
	} {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, f.content, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// TestSystemdUnitVerify: systemd's own parser accepts every line of the unit
// (an unknown key or a bad value makes verify print and fail).
func TestSystemdUnitVerify(t *testing.T) {
	analyze := requireTool(t, "systemd-analyze", "")
	root := fakeRoot(t)
	ctx, cancel := contextWithTimeout()
	defer cancel()
	r := run(ctx, root, nil, analyze, "verify", "--recursive-errors=no", "--root="+root, "/etc/systemd/system/"+unitName)
	if r.err != nil || strings.TrimSpace(r.stdout+r.stderr) != "" {
		t.Fatalf("systemd-analyze verify found problems:\n%s", r)
	}

	// The check is real: a misspelt directive fails it.
	broken := filepath.Join(root, "etc/systemd/system", unitName)
	unit, _ := os.ReadFile(broken)
	if err := os.WriteFile(broken, bytes.Replace(unit, []byte("ProtectHome=yes"), []byte("ProtectHomme=yes"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	r = run(ctx, root, nil, analyze, "verify", "--recursive-errors=no", "--root="+root, "/etc/systemd/system/"+unitName)
	if !strings.Contains(r.stderr, "ProtectHomme") {
		t.Errorf("verify did not report a misspelt directive:\n%s", r)
	}
}

// TestSystemdUnitHardening checks the directives the unit promises and
// systemd's own exposure score of the result.
func TestSystemdUnitHardening(t *testing.T) {
	unit := parseUnit(t, filepath.Join(repoRoot(t), unitSrc))
	want := map[string]string{
		"User":                     "lormas-agent",
		"SupplementaryGroups":      "docker",
		"EnvironmentFile":          "/etc/lormas-agent/agent.env",
		"ExecStart":                "/usr/local/bin/lormas-agent",
		"StateDirectory":           "lormas-agent",
		"Restart":                  "always",
		"KillSignal":               "SIGTERM",
		"NoNewPrivileges":          "yes",
		"ProtectSystem":            "strict",
		"ProtectHome":              "yes",
		"PrivateTmp":               "yes",
		"PrivateDevices":           "yes",
		"ProtectKernelTunables":    "yes",
		"ProtectKernelModules":     "yes",
		"ProtectKernelLogs":        "yes",
		"ProtectControlGroups":     "yes",
		"RestrictNamespaces":       "yes",
		"RestrictAddressFamilies":  "AF_UNIX AF_INET AF_INET6",
		"LockPersonality":          "yes",
		"MemoryDenyWriteExecute":   "yes",
		"RestrictRealtime":         "yes",
		"SystemCallArchitectures":  "native",
		"CapabilityBoundingSet":    "",
		"RestartPreventExitStatus": "2",
		"WantedBy":                 "multi-user.target",
	}
	for key, value := range want {
		got, ok := unit[key]
		if !ok {
			t.Errorf("%s= is missing", key)
		} else if got[len(got)-1] != value {
			t.Errorf("%s=%s, want %s", key, got[len(got)-1], value)
		}
	}
	if env := unit["Environment"]; !slices.Contains(env, "HEALTH_ADDR=127.0.0.1:9321") {
		t.Errorf("Environment=%q: want HEALTH_ADDR=127.0.0.1:9321 (metrics on this host only unless agent.env says otherwise)", env)
	}
	stop, err := time.ParseDuration(last(unit["TimeoutStopSec"]) + "s")
	if err != nil || stop <= 10*time.Second {
		t.Errorf("TimeoutStopSec=%s: must exceed the agent's SHUTDOWN_TIMEOUT (10s) (%v)", last(unit["TimeoutStopSec"]), err)
	}
	if rs := last(unit["RestartSec"]); rs == "" || rs == "0" {
		t.Errorf("RestartSec=%q: a crashing agent must not restart in a tight loop", rs)
	}

	analyze := requireTool(t, "systemd-analyze", "")
	root := fakeRoot(t)
	ctx, cancel := contextWithTimeout()
	defer cancel()
	r := run(ctx, root, nil, analyze, "security", "--offline=true", "--root="+root, unitName)
	if r.err != nil {
		t.Fatalf("systemd-analyze security: %s", r)
	}
	m := regexp.MustCompile(`Overall exposure level for ` + regexp.QuoteMeta(unitName) + `: ([0-9.]+)`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", r.stdout)
	}
	exposure, _ := strconv.ParseFloat(m[1], 64)
	t.Logf("systemd-analyze security exposure: %.1f (0 = locked down, 10 = unprotected)", exposure)
	if exposure > maxExposure {
		t.Errorf("exposure %.1f above %.1f:\n%s", exposure, maxExposure, r.stdout)
	}
}

// parseUnit reads a unit file into key -> values (in order; a key may repeat).
func parseUnit(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	unit := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("unit line %q is not key=value", line)
		}
		unit[k] = append(unit[k], v)
	}
	return unit
}

func last(values []string) string {
	if len(values) == 0 {
		return ""
	}
	return values[len(values)-1]
}

// TestInstallScript installs into a temporary root twice: the first run
// creates the binary, user, env file and enabled unit; the second upgrades the
// binary and changes nothing else, above all not the operator's env file.
func TestInstallScript(t *testing.T) {
	requireTool(t, "useradd", "")
	requireTool(t, "systemctl", "")
	if os.Geteuid() != 0 {
		unavailable(t, "install.sh must run as root (useradd, chown); the test runs as uid %d", os.Geteuid())
	}
	repo := repoRoot(t)
	script := filepath.Join(repo, "scripts/install.sh")

	t.Run("help and bad arguments", func(t *testing.T) {
		r := mustRun(t, repo, nil, "sh", script, "--help")
		if !strings.Contains(r.stdout, "--no-start") || !strings.Contains(r.stdout, "--root") {
			t.Errorf("--help does not document the options:\n%s", r.stdout)
		}
		ctx, cancel := contextWithTimeout()
		defer cancel()
		if r := run(ctx, repo, nil, "sh", script, "--bogus"); exitCode(r.err) == 0 || !strings.Contains(r.stderr, "--bogus") {
			t.Errorf("unknown argument accepted:\n%s", r)
		}
		if r := run(ctx, repo, nil, "sh", script, "--binary", "/nonexistent", "--root", t.TempDir()); exitCode(r.err) == 0 {
			t.Errorf("missing binary accepted:\n%s", r)
		}
	})

	t.Run("with docker group", func(t *testing.T) {
		root := minimalRoot(t, true)
		bin := filepath.Join(t.TempDir(), "lormas-agent")
		writeExecutable(t, bin, "#!/bin/sh\necho v1\n")

		env := []string{"SERVER_URL=wss://lormas.example.com", "ENROLLMENT_TOKEN=enroll-secret-1", "NODE_TOKEN=", "DESTDIR="}
		r := mustRun(t, repo, env, "sh", script, "--binary", bin, "--root", root, "--no-start")
		t.Logf("first run:\n%s", r.stdout)

		checkFile(t, root, "usr/local/bin/lormas-agent", 0o755, 0, "#!/bin/sh\necho v1\n")
		unit, _ := os.ReadFile(filepath.Join(repo, unitSrc))
		checkFile(t, root, "etc/systemd/system/"+unitName, 0o644, 0, string(unit))
		envFile := checkFile(t, root, "etc/lormas-agent/agent.env", 0o600, 0, "")
		for _, line := range []string{"SERVER_URL=wss://lormas.example.com", "ENROLLMENT_TOKEN=enroll-secret-1", "#NODE_TOKEN="} {
			if !hasLine(envFile, line) {
				t.Errorf("agent.env lacks line %q:\n%s", line, envFile)
			}
		}
		link, err := os.Readlink(filepath.Join(root, "etc/systemd/system/multi-user.target.wants", unitName))
		if err != nil || link != "/etc/systemd/system/"+unitName {
			t.Errorf("unit not enabled: multi-user.target.wants link %q (%v)", link, err)
		}
		user := passwdEntry(t, root, "lormas-agent")
		uid, _ := strconv.Atoi(user[2])
		if uid == 0 || uid >= 1000 {
			t.Errorf("lormas-agent uid %d: want a system uid (1..999)", uid)
		}
		if !strings.HasSuffix(user[6], "nologin") && user[6] != "/bin/false" {
			t.Errorf("lormas-agent shell %q: want no login", user[6])
		}
		if members := groupEntry(t, root, "docker")[3]; !strings.Contains(","+members+",", ",lormas-agent,") {
			t.Errorf("docker group members %q lack lormas-agent", members)
		}
		// The agent makes bind sources under the volume root itself: the root
		// must be its own, and writable in the unit's sandbox. Mode 0700: no
		// other host user may reach what a root workload leaves there
		// (setuid programs, device nodes).
		volumeRoot := filepath.Join(root, "var/lib/lormas/volumes")
		checkVolumeRoot := func(when string) {
			t.Helper()
			vr, err := os.Stat(volumeRoot)
			if err != nil {
				t.Fatalf("%s: volume root not created: %v", when, err)
			}
			if st := vr.Sys().(*syscall.Stat_t); int(st.Uid) != uid || vr.Mode().Perm() != 0o700 {
				t.Errorf("%s: volume root owner %d mode %v, want %d and 0700", when, st.Uid, vr.Mode().Perm(), uid)
			}
		}
		checkVolumeRoot("first run")
		if !strings.Contains(string(unit), "\nReadWritePaths=-/var/lib/lormas/volumes\n") {
			t.Errorf("unit does not make the volume root writable (ReadWritePaths)")
		}

		// Second run: a new binary, other settings in the environment, and a
		// volume root left 0755 by an earlier version.
		snapshot := readFiles(t, root, "etc/passwd", "etc/group", "etc/lormas-agent/agent.env", "etc/systemd/system/"+unitName)
		if err := os.Chmod(volumeRoot, 0o755); err != nil {
			t.Fatal(err)
		}
		writeExecutable(t, bin, "#!/bin/sh\necho v2\n")
		env = []string{"SERVER_URL=wss://changed.example.com", "ENROLLMENT_TOKEN=other", "DESTDIR="}
		r = mustRun(t, repo, env, "sh", script, "--binary", bin, "--root", root, "--no-start")
		if !strings.Contains(r.stdout, "kept existing") {
			t.Errorf("second run does not say it kept agent.env:\n%s", r.stdout)
		}
		checkFile(t, root, "usr/local/bin/lormas-agent", 0o755, 0, "#!/bin/sh\necho v2\n")
		for p, before := range snapshot {
			if after := readFiles(t, root, p)[p]; after != before {
				t.Errorf("second run changed %s:\nbefore:\n%s\nafter:\n%s", p, before, after)
			}
		}
		checkFile(t, root, "etc/lormas-agent/agent.env", 0o600, 0, snapshot["etc/lormas-agent/agent.env"])
		checkVolumeRoot("second run")

		// A root another user owns is left alone, with the command to fix it.
		if err := os.Chown(volumeRoot, 0, 0); err != nil {
			t.Fatal(err)
		}
		r = mustRun(t, repo, env, "sh", script, "--binary", bin, "--root", root, "--no-start")
		if want := "WARNING: volume root " + volumeRoot + " is not owned by lormas-agent"; !strings.Contains(r.stderr, want) {
			t.Errorf("third run, root's volume root: stderr lacks %q:\n%s", want, r.stderr)
		}
	})

	t.Run("without docker group", func(t *testing.T) {
		root := minimalRoot(t, false)
		bin := filepath.Join(t.TempDir(), "lormas-agent")
		writeExecutable(t, bin, "#!/bin/sh\n")
		r := mustRun(t, repo, []string{"DESTDIR="}, "sh", script, "--binary", bin, "--root", root)
		if !strings.Contains(r.stderr, "WARNING: no docker group") {
			t.Errorf("no warning about the missing docker group:\n%s", r)
		}
		passwdEntry(t, root, "lormas-agent")
		env := checkFile(t, root, "etc/lormas-agent/agent.env", 0o600, 0, "")
		if !hasLine(env, "SERVER_URL=ws://localhost:3000") {
			t.Errorf("agent.env without SERVER_URL in the environment lacks the default:\n%s", env)
		}
	})
}

// minimalRoot is a root file system with just the account databases useradd
// edits (root, and a docker group when withDocker).
func minimalRoot(t *testing.T, withDocker bool) string {
	t.Helper()
	root := t.TempDir()
	group, gshadow := "root:x:0:\n", "root:*::\n"
	if withDocker {
		group += "docker:x:105:\n"
		gshadow += "docker:!::\n"
	}
	for p, c := range map[string]struct {
		content string
		mode    os.FileMode
	}{
		"etc/passwd":  {"root:x:0:0:root:/root:/bin/sh\n", 0o644},
		"etc/shadow":  {"root:*:19000:0:99999:7:::\n", 0o600},
		"etc/group":   {group, 0o644},
		"etc/gshadow": {gshadow, 0o600},
	} {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c.content), c.mode); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func writeExecutable(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}

// checkFile asserts mode and owner of root/p, and its content unless want is
// empty; it returns the content.
func checkFile(t *testing.T, root, p string, mode os.FileMode, uid uint32, want string) string {
	t.Helper()
	full := filepath.Join(root, p)
	fi, err := os.Lstat(full)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	if fi.Mode().Perm() != mode || !fi.Mode().IsRegular() {
		t.Errorf("%s mode %v, want regular %v", p, fi.Mode(), mode)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != uid {
		t.Errorf("%s owner uid %d, want %d", p, st.Uid, uid)
	}
	got, err := os.ReadFile(full)
	if err != nil {
		t.Fatal(err)
	}
	if want != "" && string(got) != want {
		t.Errorf("%s content:\n%s\nwant:\n%s", p, got, want)
	}
	return string(got)
}

func readFiles(t *testing.T, root string, paths ...string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		m[p] = string(b)
	}
	return m
}

func hasLine(text, line string) bool {
	for _, l := range strings.Split(text, "\n") {
		if l == line {
			return true
		}
	}
	return false
}

// passwdEntry returns the fields of name's line in root/etc/passwd, failing
// unless there is exactly one.
func passwdEntry(t *testing.T, root, name string) []string {
	t.Helper()
	return dbEntry(t, filepath.Join(root, "etc/passwd"), name, 7)
}

func groupEntry(t *testing.T, root, name string) []string {
	t.Helper()
	return dbEntry(t, filepath.Join(root, "etc/group"), name, 4)
}

func dbEntry(t *testing.T, path, name string, fields int) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var found [][]string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Split(line, ":"); len(f) == fields && f[0] == name {
			found = append(found, f)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d entries for %s in %s, want 1:\n%s", len(found), name, path, b)
	}
	return found[0]
}

// TestShellScripts lints the packaging scripts as POSIX sh: they run on hosts
// whose /bin/sh may be dash or busybox.
func TestShellScripts(t *testing.T) {
	shellcheck := requireTool(t, "shellcheck", "")
	repo := repoRoot(t)
	for _, name := range []string{"install.sh", "ci-tools.sh"} {
		s := filepath.Join(repo, "scripts", name)
		t.Run(filepath.Base(s), func(t *testing.T) {
			ctx, cancel := contextWithTimeout()
			defer cancel()
			if r := run(ctx, repo, nil, shellcheck, "--shell=sh", "--severity=info", s); r.err != nil {
				t.Errorf("shellcheck:\n%s", r.stdout+r.stderr)
			}
			if r := run(ctx, repo, nil, "sh", "-n", s); r.err != nil {
				t.Errorf("sh -n: %s", r)
			}
		})
	}
}
