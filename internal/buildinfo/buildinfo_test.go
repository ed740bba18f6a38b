package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestResolve(t *testing.T) {
	stamped := &debug.BuildInfo{
		Main: debug.Module{Version: "v0.0.0-20261130025326-fe2d16e0a1b2+dirty"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "fe2d16e0a1b2c3d4e5f6"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	tests := []struct {
		name                    string
		version, commit         string
		info                    *debug.BuildInfo
		wantVersion, wantCommit string
	}{
		{"ldflags win", "1.2.3", "abc1234", stamped, "1.2.3", "abc1234"},
		{"vcs stamp", DefaultVersion, DefaultCommit, stamped, "v0.0.0-20261130025326-fe2d16e0a1b2", "fe2d16e0a1b2-dirty"},
		{"clean tree", DefaultVersion, DefaultCommit, &debug.BuildInfo{
			Main:     debug.Module{Version: "v1.4.0"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef"}, {Key: "vcs.modified", Value: "false"}},
		}, "v1.4.0", "0123456789ab"},
		{"no stamp", DefaultVersion, DefaultCommit, &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, DefaultVersion, DefaultCommit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, c := resolve(tt.version, tt.commit, tt.info)
			if v != tt.wantVersion || c != tt.wantCommit {
				t.Errorf("resolve = %q, %q; want %q, %q", v, c, tt.wantVersion, tt.wantCommit)
			}
		})
	}
}
