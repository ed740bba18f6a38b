package packaging

import (
	"context"
	"debug/elf"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// TestMultiArch: the image is buildable for linux/arm64 as well as amd64.
// No buildx (or arm64 base image) is available here, so the test checks the
// two halves of that promise: the Dockerfile hands BuildKit's target platform
// to the Go compiler running on the build platform, and both binaries
// cross-compile for linux/arm64 exactly as the Dockerfile builds them
// (CGO_ENABLED=0, -trimpath) into static arm64 executables.
func TestMultiArch(t *testing.T) {
	repo := repoRoot(t)
	dockerfile, err := os.ReadFile(filepath.Join(repo, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for what, re := range map[string]string{
		// Without BuildKit (legacy builder, Compose v1) BUILDPLATFORM is unset: the
		// fallback "linux" lets the daemon fill in its own architecture, where
		// "linux/amd64" would build amd64 binaries into an arm64 host's image.
		"builder on the build platform, native without BuildKit": `(?m)^FROM --platform=\$\{BUILDPLATFORM:-linux\} ` + regexp.QuoteMeta(builderImage) + ` AS \w+$`,
		"GOOS from TARGETOS":           `GOOS="\$\{TARGETOS:-`,
		"GOARCH from TARGETARCH":       `GOARCH="\$\{TARGETARCH:-`,
		"TARGETARCH without a default": `(?m)^ARG TARGETARCH$`,
		"TARGETOS without a default":   `(?m)^ARG TARGETOS$`,
		"static build":                 `CGO_ENABLED=0`,
	} {
		if !regexp.MustCompile(re).Match(dockerfile) {
			t.Errorf("Dockerfile: no %s (%s)", what, re)
		}
	}

	if testing.Short() {
		t.Skip("short mode: skipping the cross-compile")
	}
	out := t.TempDir()
	// A cold cross-compile of both binaries takes about a minute on 2 cores.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if r := run(ctx, repo, []string{"GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0"},
		"go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out+"/", "./cmd/lormas-agent", "./cmd/lormas-server"); r.err != nil {
		t.Fatalf("cross-compile for linux/arm64: %s", r)
	}
	for _, name := range []string{"lormas-agent", "lormas-server"} {
		f, err := elf.Open(filepath.Join(out, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		defer f.Close()
		if f.Machine != elf.EM_AARCH64 || f.OSABI != elf.ELFOSABI_NONE && f.OSABI != elf.ELFOSABI_LINUX {
			t.Errorf("%s: machine %v, OS ABI %v; want aarch64 Linux", name, f.Machine, f.OSABI)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("%s is dynamically linked (%v): the distroless static image has no libc", name, p.Type)
			}
		}
	}
}
