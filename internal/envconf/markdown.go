package envconf

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// tableHeader is a configuration table's header row; CheckMarkdown finds
// the table in a document by it.
var tableHeader = []string{"Variable", "Default", "Meaning"}

// Markdown renders vars as a Markdown table (Variable, Default, Meaning),
// for a README, with the first two columns padded.
func Markdown(vars []Variable) string {
	rows := [][]string{tableHeader}
	for _, v := range vars {
		def := ""
		switch {
		case strings.HasPrefix(v.Default, "("):
			def = v.Default // a description such as "(host name)"
		case v.Default != "":
			def = "`" + v.Default + "`"
		}
		rows = append(rows, []string{"`" + v.Name + "`", def, v.Help})
	}
	w0, w1 := 0, 0
	for _, r := range rows {
		w0, w1 = max(w0, len(r[0])), max(w1, len(r[1]))
	}
	var b strings.Builder
	line := func(c0, c1, c2 string) {
		fmt.Fprintf(&b, "| %-*s | %-*s | %s |\n", w0, c0, w1, c1, c2)
	}
	line(rows[0][0], rows[0][1], rows[0][2])
	line(strings.Repeat("-", w0), strings.Repeat("-", w1), "---")
	for _, r := range rows[1:] {
		line(r[0], r[1], r[2])
	}
	return b.String()
}

// ErrNoTable is CheckMarkdown's error for a document without a table whose
// header is | Variable | Default | Meaning |.
var ErrNoTable = errors.New("no configuration table (a table whose header is | Variable | Default | Meaning |)")

// CheckMarkdown reports whether doc (a README) contains the table of vars
// exactly as Markdown renders it, cell by cell (padding and the separator
// row's dashes are free). The table is found by its header row; the error
// names the first row that differs.
func CheckMarkdown(doc []byte, vars []Variable) error {
	want := parseTable(Markdown(vars))
	lines := strings.Split(string(bytes.ReplaceAll(doc, []byte("\r\n"), []byte("\n"))), "\n")
	for i, l := range lines {
		if !slices.Equal(splitRow(l), tableHeader) {
			continue
		}
		var block []string
		for _, l := range lines[i:] {
			if !strings.HasPrefix(strings.TrimSpace(l), "|") {
				break
			}
			block = append(block, l)
		}
		got := parseTable(strings.Join(block, "\n"))
		for j := range max(len(got), len(want)) {
			switch {
			case j >= len(got):
				return fmt.Errorf("row %d missing, want %q", j+1, strings.Join(want[j], " | "))
			case j >= len(want):
				return fmt.Errorf("extra row %d %q", j+1, strings.Join(got[j], " | "))
			case !slices.Equal(got[j], want[j]):
				return fmt.Errorf("row %d is %q, want %q", j+1, strings.Join(got[j], " | "), strings.Join(want[j], " | "))
			}
		}
		return nil
	}
	return ErrNoTable
}

// parseTable splits a Markdown table into trimmed cells, dropping the
// separator row.
func parseTable(s string) [][]string {
	var rows [][]string
	for _, l := range strings.Split(s, "\n") {
		cells := splitRow(l)
		if cells == nil || isSeparator(cells) {
			continue
		}
		rows = append(rows, cells)
	}
	return rows
}

func splitRow(l string) []string {
	l = strings.TrimSpace(l)
	if !strings.HasPrefix(l, "|") || !strings.HasSuffix(l, "|") || len(l) < 2 {
		return nil
	}
	cells := strings.Split(l[1:len(l)-1], "|")
	for i := range cells {
		cells[i] = strings.TrimSpace(cells[i])
	}
	return cells
}

func isSeparator(cells []string) bool {
	for _, c := range cells {
		if strings.Trim(c, "-: ") != "" || c == "" {
			return false
		}
	}
	return true
}
