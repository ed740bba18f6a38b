package config

import (
	"fmt"

	"github.com/lormas/lormas-agent/internal/envconf"
)

// Variable documents one configuration variable.
type Variable = envconf.Variable

// Variables lists every variable the agent reads or documents, in table
// order, from the Config struct's tags: the single source of the table.
func Variables() []Variable {
	return envconf.Of[Config]()
}

// Default returns the default of the variable name as the table shows it.
func Default(name string) string {
	for _, v := range Variables() {
		if v.Name == name {
			return v.Default
		}
	}
	return ""
}

// TextTable renders the variables for an 80-column terminal, as
// `lormas-agent help` prints them: a line with the name and default, then
// the meaning, wrapped and indented.
func TextTable() string {
	return envconf.Text(Variables(), 80)
}

// MarkdownTable renders the configuration table as Markdown, for the
// README, with the first two columns padded.
func MarkdownTable() string {
	return envconf.Markdown(Variables())
}

// CheckMarkdownTable reports whether doc (a README) contains the
// configuration table exactly as MarkdownTable renders it, cell by cell
// (padding and the separator row's dashes are free). The table is found by
// its header row "| Variable | Default | Meaning |".
func CheckMarkdownTable(doc []byte) error {
	if err := envconf.CheckMarkdown(doc, Variables()); err != nil {
		return fmt.Errorf("README configuration table: %w (paste config.MarkdownTable())", err)
	}
	return nil
}
