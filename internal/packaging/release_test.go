package packaging

import (
	"bufio"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"

	"github.com/lormas/lormas-agent/internal/dockertest"
)

// TestReleaseScript runs scripts/release.sh as a maintainer would, as far as
// this machine allows (no registry, no BuildKit): six static binaries (three
// programs for linux/amd64 and linux/arm64) whose SHA256SUMS verify, each an
// ELF executable of its architecture without an interpreter, the amd64 ones
// printing the release's version; and both images, tagged with the
// registry and version, labelled with the version, and the push commands
// printed. The images get the version and commit of the packaging tests'
// own image builds, so Docker's layer cache makes them cheap.
func TestReleaseScript(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles six binaries and builds the images")
	}
	buildImages(t) // the base image stand-ins, and the cache for the image build below
	cli := dockertest.Require(t)
	repo := repoRoot(t)
	out := t.TempDir()
	registry := uniqueName("lormas-reltest-")
	version, commit := buildVersion, buildCommit
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	images := []string{registry + "/lormas-agent:" + version, registry + "/lormas-server:" + version}
	t.Cleanup(func() {
		for _, ref := range images {
			// Untags only: the layers are those of the packaging images.
			_, _ = cli.ImageRemove(context.Background(), ref, image.RemoveOptions{})
		}
	})
	r := run(ctx, repo, []string{"VERSION=" + version, "COMMIT=" + commit, "REGISTRY=" + registry, "OUT=" + out},
		"bash", "scripts/release.sh")
	if r.err != nil {
		t.Fatalf("release.sh: %s", r)
	}
	// One line per phase while it works.
	for _, phase := range []string{"build lormas-agent for linux/arm64", "checksums", "build image " + images[0]} {
		if !strings.Contains(r.stdout, "release: "+phase) {
			t.Errorf("release.sh did not say %q:\n%s", phase, r.stdout)
		}
	}
	for _, ref := range images {
		if !strings.Contains(r.stdout, "docker push "+ref) {
			t.Errorf("release.sh does not print how to push %s:\n%s", ref, r.stdout)
		}
	}

	sums := readSums(t, filepath.Join(out, "SHA256SUMS"))
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	var names []string
	for _, arch := range []string{"amd64", "arm64"} {
		for _, prog := range []string{"lormas-agent", "lormas-server", "lormasctl"} {
			name := prog + "-" + version + "-linux-" + arch
			names = append(names, name)
			path := filepath.Join(out, name)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("artefact %s: %v", name, err)
			}
			sum := sha256.Sum256(b)
			if sums[name] != hex.EncodeToString(sum[:]) {
				t.Errorf("SHA256SUMS has %q for %s, the file hashes to %x", sums[name], name, sum)
			}
			f, err := elf.Open(path)
			if err != nil {
				t.Fatalf("%s is not an ELF file: %v", name, err)
			}
			if f.Machine != machines[arch] || f.Class != elf.ELFCLASS64 || f.Type != elf.ET_EXEC {
				t.Errorf("%s: %v %v %v, want a 64-bit %v executable", name, f.Class, f.Machine, f.Type, machines[arch])
			}
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
					t.Errorf("%s is dynamically linked (%v)", name, p.Type)
				}
			}
			f.Close()
			if arch == runtime.GOARCH && prog != "lormasctl" {
				v, err := exec.Command(path, "version").Output()
				if err != nil || !strings.HasPrefix(string(v), prog+" "+version+" (commit "+commit+",") {
					t.Errorf("%s version = %q, %v", name, v, err)
				}
			}
		}
	}
	if len(sums) != len(names) {
		t.Errorf("SHA256SUMS lists %d files, want the %d binaries", len(sums), len(names))
	}
	if r := run(ctx, out, nil, "sha256sum", "--strict", "-c", "SHA256SUMS"); r.err != nil {
		t.Errorf("sha256sum -c SHA256SUMS: %s", r)
	}

	for _, ref := range images {
		inspect, err := cli.ImageInspect(ctx, ref)
		if err != nil {
			t.Fatalf("image %s: %v", ref, err)
		}
		if got := inspect.Config.Labels["org.opencontainers.image.version"]; got != version {
			t.Errorf("%s: version label %q, want %q", ref, got, version)
		}
	}
}

// readSums parses a sha256sum file into name -> hex digest.
func readSums(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sums := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 {
			t.Fatalf("SHA256SUMS line %q is not sha256sum's", sc.Text())
		}
		sums[name] = sum
	}
	return sums
}

// TestBashScripts lints the bash scripts a newcomer runs from a checkout.
func TestBashScripts(t *testing.T) {
	shellcheck := requireTool(t, "shellcheck", "")
	repo := repoRoot(t)
	for _, name := range []string{"quickstart.sh", "release.sh", "test.sh"} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := contextWithTimeout()
			defer cancel()
			if r := run(ctx, repo, nil, shellcheck, "--shell=bash", "--severity=info", filepath.Join("scripts", name)); r.err != nil {
				t.Errorf("shellcheck:\n%s", r.stdout+r.stderr)
			}
		})
	}
}
