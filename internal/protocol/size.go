package protocol

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ErrSize is wrapped by every ParseSize error.
var ErrSize = errors.New("invalid size")

// unitShift maps a size suffix (lower case) to its power of two. Every unit is
// binary, as the seed's parser: "512m", "512MB" and "512Mi" are all 512 MiB.
var unitShift = map[string]uint{
	"": 0, "b": 0,
	"k": 10, "kb": 10, "ki": 10, "kib": 10,
	"m": 20, "mb": 20, "mi": 20, "mib": 20,
	"g": 30, "gb": 30, "gi": 30, "gib": 30,
	"t": 40, "tb": 40, "ti": 40, "tib": 40,
}

// ParseSize parses a byte size: a non-negative decimal number (a fraction is
// allowed with a unit, "1.5g") followed by an optional unit b, k, m, g, t,
// optionally with "b", "i" or "ib" after it, in any case. It refuses signs,
// exponents, spaces inside the number, and values that overflow int64.
func ParseSize(s string) (int64, error) {
	in := strings.TrimSpace(s)
	i := 0
	for i < len(in) && (in[i] >= '0' && in[i] <= '9' || in[i] == '.') {
		i++
	}
	num, unit := in[:i], strings.ToLower(in[i:])
	shift, ok := unitShift[unit]
	if num == "" || !ok || strings.Count(num, ".") > 1 || num[0] == '.' || num[len(num)-1] == '.' {
		return 0, fmt.Errorf("%w %q: want a number with an optional unit such as 512m, 1.5g or 1GiB", ErrSize, s)
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseUint(num, 10, 63)
		if err != nil || n > math.MaxInt64>>shift {
			return 0, fmt.Errorf("%w %q: too large", ErrSize, s)
		}
		return int64(n) << shift, nil
	}
	if shift == 0 {
		return 0, fmt.Errorf("%w %q: a fraction of a byte", ErrSize, s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("%w %q: %v", ErrSize, s, err)
	}
	v := math.Round(f * float64(uint64(1)<<shift))
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("%w %q: too large", ErrSize, s)
	}
	return int64(v), nil
}
