package protocol

import (
	"errors"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"1024", 1024},
		{"512b", 512},
		{"1k", 1 << 10},
		{"1KB", 1 << 10},
		{"512m", 536870912},
		{"512MB", 536870912},
		{"512Mi", 536870912},
		{"512MiB", 536870912},
		{"512mb", 536870912},
		{"1g", 1 << 30},
		{"1GiB", 1 << 30},
		{"1.5g", 1610612736},
		{"0.5m", 1 << 19},
		{"2t", 2 << 40},
		{" 10g ", 10 << 30},
		{"8388607t", 8388607 << 40},
		{"9223372036854775807", 9223372036854775807},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if err != nil {
				t.Fatalf("ParseSize(%q) error: %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseSize(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseSizeRejects(t *testing.T) {
	for _, in := range []string{
		"", "abc", "-1g", "+1g", "1e99g", "1e3", "1.5", "1.5b", "1..5g", ".5g", "5.g",
		"1 g", "1gg", "1p", "9223372036854775808", "8388608t", "99999999999999999999g",
		"0x10", "NaN", "Infinity", "1,5g", "１g",
	} {
		t.Run(in, func(t *testing.T) {
			got, err := ParseSize(in)
			if err == nil {
				t.Fatalf("ParseSize(%q) = %d, want an error", in, got)
			}
			if !errors.Is(err, ErrSize) {
				t.Errorf("ParseSize(%q) error %v does not wrap ErrSize", in, err)
			}
		})
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"512m", "1.5g", "1GiB", "-1g", "1e99g", "abc", "9223372036854775807", "0.000001k"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d: negative", s, n)
		}
	})
}

func TestFormatMemory(t *testing.T) {
	for in, want := range map[uint64]string{0: "0MB", 512 << 20: "512MB", 512<<20 + 1: "512MB", 16 << 30: "16384MB"} {
		if got := FormatMemory(in); got != want {
			t.Errorf("FormatMemory(%d) = %q, want %q", in, got, want)
		}
	}
}
