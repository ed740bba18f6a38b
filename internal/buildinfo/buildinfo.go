// Package buildinfo names the running build: the version and commit given
// with -ldflags -X at release builds, else what the Go toolchain stamped
// into the binary from the module and version control (a plain `go build`
// in a clone), so `version` never answers "dev (commit unknown)" for a
// binary built from a checkout.
package buildinfo

import (
	"runtime/debug"
	"strings"
)

// Unset values of the -ldflags variables.
const (
	DefaultVersion = "dev"
	DefaultCommit  = "unknown"
)

// Resolve returns version and commit: the -ldflags values when they were set,
// else the toolchain's stamp (module version, vcs.revision, "-dirty" for a
// modified work tree), else the defaults.
func Resolve(version, commit string) (string, string) {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return version, commit
	}
	return resolve(version, commit, info)
}

func resolve(version, commit string, info *debug.BuildInfo) (string, string) {
	if version == DefaultVersion {
		if v := info.Main.Version; v != "" && v != "(devel)" {
			version = v
		}
	}
	if commit == DefaultCommit {
		var rev string
		var dirty bool
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			commit = rev[:min(len(rev), 12)]
			if dirty {
				commit += "-dirty"
			}
		}
	}
	// A pseudo-version already carries "+dirty"; keep one marker.
	if strings.HasSuffix(version, "+dirty") && strings.HasSuffix(commit, "-dirty") {
		version = strings.TrimSuffix(version, "+dirty")
	}
	return version, commit
}
