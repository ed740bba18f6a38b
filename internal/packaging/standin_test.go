package packaging

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
)

// The base images the Dockerfile names. No registry is reachable here, so the
// test imports stand-ins under exactly these names (unless the real images are
// present) and builds the Dockerfile unchanged.
const (
	builderImage = "golang:1.26-bookworm"
	runtimeImage = "gcr.io/distroless/static-debian12:nonroot"
	// standinComment marks a stand-in (the import message, so that no label
	// leaks into the images built on it), followed by the hash of what went
	// in: a stand-in is rebuilt when the local Go, busybox or CA bundle change.
	standinComment = "lormas packaging test stand-in "
	// standinRecipe changes whenever the recipe below changes.
	standinRecipe = "3"
	caBundle      = "/etc/ssl/certs/ca-certificates.crt"
	busyboxPath   = "/bin/busybox"
)

// dockerfileBases returns the images of the Dockerfile's FROM lines that are
// not earlier stages.
func dockerfileBases(t testing.TB, dockerfile string) []string {
	t.Helper()
	f, err := os.Open(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stages := map[string]bool{}
	var bases []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || !strings.EqualFold(fields[0], "FROM") {
			continue
		}
		fields = fields[1:]
		for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
			fields = fields[1:]
		}
		if len(fields) == 0 {
			t.Fatalf("FROM line without an image: %q", sc.Text())
		}
		if !stages[strings.ToLower(fields[0])] && !contains(bases, fields[0]) {
			bases = append(bases, fields[0])
		}
		if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
			stages[strings.ToLower(fields[2])] = true
		}
	}
	return bases
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// ensureStandins makes sure both base images exist, importing stand-ins
// where needed. It returns a description of what it used, for the log.
func ensureStandins(ctx context.Context, t testing.TB, cli *client.Client) []string {
	t.Helper()
	for _, p := range []string{busyboxPath, caBundle} {
		if _, err := os.Stat(p); err != nil {
			unavailable(t, "stand-in base images need %s: %v (Debian: apt-get install busybox-static ca-certificates)", p, err)
		}
	}
	goroot, goVersion := localGo(t)
	var used []string
	for _, s := range []struct {
		ref     string
		key     string
		write   func(*tar.Writer) error
		changes []string
	}{
		{
			ref:   builderImage,
			key:   standinKey(goroot, goVersion, busyboxPath, caBundle),
			write: func(tw *tar.Writer) error { return writeGoStandin(tw, goroot) },
			changes: []string{
				"ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				"ENV GOLANG_VERSION=" + strings.TrimPrefix(goVersion, "go"),
				"ENV GOPATH=/go",
				"ENV GOTOOLCHAIN=local",
				"WORKDIR /go",
			},
		},
		{
			ref:   runtimeImage,
			key:   standinKey(caBundle),
			write: writeDistrolessStandin,
			changes: []string{
				"ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				"ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
				"USER 65532",
				"WORKDIR /home/nonroot",
			},
		},
	} {
		what, err := ensureStandin(ctx, cli, s.ref, s.key, s.write, s.changes)
		if err != nil {
			t.Fatalf("base image %s: %v", s.ref, err)
		}
		used = append(used, s.ref+": "+what)
	}
	return used
}

func ensureStandin(ctx context.Context, cli *client.Client, ref, key string, write func(*tar.Writer) error, changes []string) (string, error) {
	inspect, err := cli.ImageInspect(ctx, ref)
	switch {
	case err == nil && !strings.HasPrefix(inspect.Comment, standinComment):
		return "the real image (present locally)", nil
	case err == nil && inspect.Comment == standinComment+key:
		return "stand-in " + key + " (cached)", nil
	case err != nil && !cerrdefs.IsNotFound(err):
		return "", fmt.Errorf("inspect: %w", err)
	}
	start := time.Now()
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := write(tw)
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	rc, err := cli.ImageImport(ctx, image.ImportSource{Source: pr, SourceName: "-"}, ref, image.ImportOptions{
		Changes: changes,
		Message: standinComment + key,
	})
	if err != nil {
		pr.CloseWithError(err)
		return "", fmt.Errorf("import: %w", err)
	}
	defer rc.Close()
	if err := jsonmessage.DisplayJSONMessagesStream(rc, io.Discard, 0, false, nil); err != nil {
		return "", fmt.Errorf("import: %w", err)
	}
	return fmt.Sprintf("stand-in %s (imported in %s)", key, time.Since(start).Round(time.Second)), nil
}

// localGo returns the GOROOT and version of the go command on PATH: the
// toolchain the stand-in builder image carries.
func localGo(t testing.TB) (goroot, version string) {
	t.Helper()
	out, err := exec.Command("go", "env", "GOROOT", "GOVERSION").Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	lines := strings.Fields(string(out))
	if len(lines) != 2 {
		t.Fatalf("go env GOROOT GOVERSION printed %q", out)
	}
	return lines[0], lines[1]
}

// standinKey hashes the recipe version and the identity (path, size, mtime)
// of the inputs, which is enough to notice a changed toolchain or bundle.
func standinKey(inputs ...string) string {
	h := sha256.New()
	fmt.Fprintln(h, standinRecipe)
	for _, in := range inputs {
		fmt.Fprintln(h, in)
		if fi, err := os.Stat(in); err == nil {
			fmt.Fprintln(h, fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// writeGoStandin writes a Go toolchain image: GOROOT at /usr/local/go, a
// static busybox as /bin/sh and the other applets, CA certificates (for the
// module proxy), and the directories the golang image has.
func writeGoStandin(tw *tar.Writer, goroot string) error {
	for _, d := range []struct {
		name string
		mode int64
	}{{"bin", 0o755}, {"etc", 0o755}, {"etc/ssl", 0o755}, {"etc/ssl/certs", 0o755}, {"root", 0o700},
		{"tmp", 0o1777}, {"go", 0o1777}, {"go/bin", 0o777}, {"usr", 0o755}, {"usr/local", 0o755}} {
		if err := tarDir(tw, d.name, d.mode, 0); err != nil {
			return err
		}
	}
	for name, content := range map[string]string{
		"etc/passwd":        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":         "root:x:0:\nnogroup:x:65534:\n",
		"etc/nsswitch.conf": "hosts: files dns\n",
	} {
		if err := tarBytes(tw, name, []byte(content), 0o644, 0); err != nil {
			return err
		}
	}
	if err := tarFile(tw, caBundle, "etc/ssl/certs/ca-certificates.crt", 0o644); err != nil {
		return err
	}
	if err := tarFile(tw, busyboxPath, "bin/busybox", 0o755); err != nil {
		return err
	}
	applets, err := exec.Command(busyboxPath, "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w", err)
	}
	for _, a := range strings.Fields(string(applets)) {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777}); err != nil {
			return err
		}
	}
	// GOROOT, without what building programs never reads.
	skip := map[string]bool{"test": true, "doc": true, "misc": true, "api": true, "pkg/obj": true, ".git": true}
	return filepath.WalkDir(goroot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(goroot, p)
		if skip[filepath.ToSlash(rel)] {
			return filepath.SkipDir
		}
		name := "usr/local/go"
		if rel != "." {
			name += "/" + filepath.ToSlash(rel)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return tarDir(tw, name, int64(info.Mode().Perm()), 0)
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777})
		case info.Mode().IsRegular():
			return tarFile(tw, p, name, int64(info.Mode().Perm()))
		}
		return nil
	})
}

// writeDistrolessStandin writes what gcr.io/distroless/static-debian12:nonroot
// offers a static binary: the passwd and group entries (nonroot = 65532), CA
// certificates, /tmp and the nonroot home. No shell, like the real one.
func writeDistrolessStandin(tw *tar.Writer) error {
	for _, d := range []struct {
		name string
		mode int64
		uid  int
	}{{"etc", 0o755, 0}, {"etc/ssl", 0o755, 0}, {"etc/ssl/certs", 0o755, 0}, {"tmp", 0o1777, 0},
		{"home", 0o755, 0}, {"home/nonroot", 0o700, 65532}, {"root", 0o700, 0}} {
		if err := tarDir(tw, d.name, d.mode, d.uid); err != nil {
			return err
		}
	}
	for name, content := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
			"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
		"etc/group":      "root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n",
		"etc/os-release": "PRETTY_NAME=\"Lormas test stand-in for Distroless static (Debian 12)\"\nID=debian\nVERSION_ID=\"12\"\n",
	} {
		if err := tarBytes(tw, name, []byte(content), 0o644, 0); err != nil {
			return err
		}
	}
	return tarFile(tw, caBundle, "etc/ssl/certs/ca-certificates.crt", 0o644)
}

func tarDir(tw *tar.Writer, name string, mode int64, uid int) error {
	return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: uid, ModTime: time.Unix(0, 0)})
}

func tarBytes(tw *tar.Writer, name string, content []byte, mode int64, uid int) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(content)), Uid: uid, Gid: uid, ModTime: time.Unix(0, 0)}); err != nil {
		return err
	}
	_, err := tw.Write(content)
	return err
}

// tarFile copies a host file (following symlinks) into the archive.
func tarFile(tw *tar.Writer, src, name string, mode int64) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}

// imageSummary is what the tests print about a built image.
func imageSummary(inspect image.InspectResponse) string {
	b, _ := json.Marshal(map[string]any{"id": inspect.ID[:19], "size": humanBytes(inspect.Size), "arch": inspect.Architecture})
	return string(b)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
