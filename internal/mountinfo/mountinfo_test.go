package mountinfo

import (
	"strings"
	"testing"
)

const table = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
30 22 8:17 / /srv rw,nosuid,nodev,relatime shared:20 - xfs /dev/sdb1 rw,attr2
31 30 8:17 /lormas\040data /srv/with\040space rw,relatime shared:20 - xfs /dev/sdb1 rw
32 30 0:40 / /srv rw,relatime - tmpfs tmpfs rw
`

func TestParse(t *testing.T) {
	m, err := Parse(strings.NewReader(table))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 5 {
		t.Fatalf("%d mounts, want 5", len(m))
	}
	if got := m[3]; got.Root != "/lormas data" || got.Point != "/srv/with space" || got.FSType != "xfs" || got.ID != 31 {
		t.Errorf("escaped entry %+v", got)
	}
	if !m[2].Has("nosuid") || !m[2].Has("nodev") || m[0].Has("nosuid") || m[0].Has("relatim") {
		t.Errorf("options: %q, %q", m[2].Opts, m[0].Opts)
	}
	for _, bad := range []string{"", "1 2 3\n", "x 1 0:1 / / rw - ext4 /dev/x rw\n", "1 2 0:1 / / rw shared:1\n"} {
		if _, err := Parse(strings.NewReader(bad)); err == nil {
			t.Errorf("Parse(%q): no error", bad)
		}
	}
	if got := Unescape(`a\040b\134c\0`); got != `a b\c\0` {
		t.Errorf("Unescape = %q", got)
	}
}

func TestCovering(t *testing.T) {
	m, err := Parse(strings.NewReader(table))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path string
		want int
	}{
		{"/", 22},
		{"/etc/passwd", 22},
		{"/proc/1", 23},
		{"/procs", 22},
		{"/srv/x", 32}, // stacked: the last listed is on top
		{"/srv/with space/a", 31},
	} {
		if got := Covering(m, tt.path); got == nil || got.ID != tt.want {
			t.Errorf("Covering(%q) = %+v, want mount %d", tt.path, got, tt.want)
		}
	}
	if got := Covering(nil, "/x"); got != nil {
		t.Errorf("Covering of an empty table = %+v", got)
	}
}
