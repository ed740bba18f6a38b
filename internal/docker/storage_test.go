package docker

import (
	"strings"
	"testing"

	"github.com/docker/docker/api/types/system"
)

func TestDiskLimitSupport(t *testing.T) {
	tests := []struct {
		driver, backing string
		want            bool
		reason          string
	}{
		{"overlay2", "xfs", true, ""},
		{"overlay2", "extfs", false, "backing file system is extfs"},
		{"overlay2", "", false, "backing file system is unknown"},
		{"fuse-overlayfs", "", false, "fuse-overlayfs cannot enforce"},
		{"devicemapper", "", true, ""},
		{"btrfs", "btrfs", true, ""},
		{"zfs", "zfs", true, ""},
		{"windowsfilter", "", true, ""},
		{"vfs", "", false, "vfs"},
		{"aufs", "extfs", false, "aufs"},
		{"", "", false, "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.driver+"/"+tt.backing, func(t *testing.T) {
			info := system.Info{Driver: tt.driver}
			if tt.backing != "" {
				info.DriverStatus = [][2]string{{"Backing Filesystem", tt.backing}, {"Supports d_type", "true"}}
			}
			got := diskLimitSupport(info)
			if got.Supported != tt.want {
				t.Fatalf("Supported = %t, want %t (%s)", got.Supported, tt.want, got.Reason)
			}
			if !tt.want && !strings.Contains(got.Reason, tt.reason) {
				t.Errorf("Reason %q, want it to mention %q", got.Reason, tt.reason)
			}
		})
	}
}

func TestIsStorageOptRefused(t *testing.T) {
	refused := "Error response from daemon: --storage-opt is supported only for overlay over xfs with 'pquota' mount option"
	if !isStorageOptRefused(errString(refused)) {
		t.Errorf("not recognised: %q", refused)
	}
	if isStorageOptRefused(errString("Error response from daemon: No such image: x")) {
		t.Error("an unrelated error was taken for a storage-opt refusal")
	}
}

type errString string

func (e errString) Error() string { return string(e) }
