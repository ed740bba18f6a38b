package envconf

import (
	"fmt"
	"strconv"
	"strings"
)

// Text renders variables for a terminal of the given width (80 when
// width < 40): one line with the name and its default, then the meaning
// wrapped and indented below it. A Markdown table with one row per
// variable is over 200 columns wide; this reads in an 80-column terminal.
func Text(vars []Variable, width int) string {
	if width < 40 {
		width = 80
	}
	const indent = "    "
	var b strings.Builder
	for i, v := range vars {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(v.Name)
		if v.Default != "" {
			d := v.Default
			if !strings.HasPrefix(d, "(") {
				d = "default " + d
			}
			b.WriteString("  " + d)
		}
		b.WriteByte('\n')
		for _, l := range Wrap(v.Help, width-len(indent)) {
			b.WriteString(indent + l + "\n")
		}
	}
	return b.String()
}

// Wrap breaks s into lines of at most width bytes at spaces; a word longer
// than width stands on a line of its own.
func Wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		switch {
		case line == "":
			line = w
		case len(line)+1+len(w) <= width:
			line += " " + w
		default:
			lines = append(lines, line)
			line = w
		}
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}

// DurationHint explains a duration value without a unit ("10"), which Go
// reports as `missing unit in duration "10"`: "" for any other value.
func DurationHint(name, value string) string {
	v := strings.TrimSpace(value)
	if _, err := strconv.ParseFloat(v, 64); err != nil || v == "0" {
		return ""
	}
	return fmt.Sprintf("%s: %q has no unit: add a unit: %ss (or %sm, %sms)", name, value, v, v, v)
}
