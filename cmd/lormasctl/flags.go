package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// errHelp ends a command after its help was printed.
var errHelp = errors.New("help printed")

// flags is a command's flag set with docker's conventions: long flags with
// two dashes, one-letter aliases that can be combined ("-it"), flags before
// the positional arguments.
type flags struct {
	fs      *flag.FlagSet
	cmd     command
	out     io.Writer
	short   map[string]string // alias -> long name
	bools   map[string]bool   // long names of bool flags
	entries []flagEntry       // for help, in order
}

type flagEntry struct {
	short, long, typ, usage, def string
}

func (c *cli) newFlags(name string) *flags {
	cmd, _ := lookupCommand(name)
	f := &flags{fs: flag.NewFlagSet(name, flag.ContinueOnError), cmd: cmd, out: c.stdout, short: map[string]string{}, bools: map[string]bool{}}
	f.fs.SetOutput(io.Discard)
	f.String(&c.node, "n", "node", c.node, "Node to act on: id or name")
	return f
}

func (f *flags) add(short, long, typ, def, usage string) {
	if short != "" {
		f.short[short] = long
	}
	f.entries = append(f.entries, flagEntry{short, long, typ, usage, def})
}

func (f *flags) Bool(p *bool, short, long string, usage string) {
	f.fs.BoolVar(p, long, *p, usage)
	f.bools[long] = true
	f.add(short, long, "", "", usage)
}

func (f *flags) String(p *string, short, long, def, usage string) {
	f.fs.StringVar(p, long, def, usage)
	f.add(short, long, "string", def, usage)
}

func (f *flags) Int(p *int, short, long string, def int, usage string) {
	f.fs.IntVar(p, long, def, usage)
	d := ""
	if def != 0 {
		d = fmt.Sprint(def)
	}
	f.add(short, long, "int", d, usage)
}

func (f *flags) Float(p *float64, short, long string, def float64, usage string) {
	f.fs.Float64Var(p, long, def, usage)
	f.add(short, long, "decimal", fmt.Sprint(def), usage)
}

// dropShort removes a one-letter alias (logs uses -n for --tail, as docker).
func (f *flags) dropShort(short string) {
	delete(f.short, short)
	for i := range f.entries {
		if f.entries[i].short == short {
			f.entries[i].short = ""
		}
	}
}

// List is a repeatable string flag (-e A=1 -e B=2).
func (f *flags) List(p *[]string, short, long, usage string) {
	f.fs.Var((*listValue)(p), long, usage)
	f.add(short, long, "list", "", usage)
}

type listValue []string

func (l *listValue) String() string     { return strings.Join(*l, ",") }
func (l *listValue) Set(s string) error { *l = append(*l, s); return nil }

// Parse parses args, expanding one-letter aliases and combinations; it
// returns the positional arguments, or errHelp after printing help.
func (f *flags) Parse(args []string) ([]string, error) {
	var expanded []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || !strings.HasPrefix(a, "-") || a == "-" {
			expanded = append(expanded, args[i:]...)
			break
		}
		if a == "-h" || a == "--help" {
			printCommandHelp(f.out, f.cmd, f)
			return nil, errHelp
		}
		// takesNext: a flag with a value in the next argument.
		takesNext := func(long string) {
			if !f.bools[long] && f.fs.Lookup(long) != nil && i+1 < len(args) {
				i++
				expanded = append(expanded, args[i])
			}
		}
		if strings.HasPrefix(a, "--") {
			expanded = append(expanded, a)
			if !strings.Contains(a, "=") {
				takesNext(a[2:])
			}
			continue
		}
		name, value, hasValue := strings.Cut(a[1:], "=")
		if long, ok := f.short[name]; ok {
			if hasValue {
				expanded = append(expanded, "--"+long+"="+value)
			} else {
				expanded = append(expanded, "--"+long)
				takesNext(long)
			}
			continue
		}
		// Combined one-letter flags: -it, or -p8080 style for the last.
		var parts []string
		ok := true
		name = a[1:] // -eKEY=VALUE: the value may hold '='
		for j := 0; j < len(name); j++ {
			long, known := f.short[name[j:j+1]]
			if !known {
				ok = false
				break
			}
			if !f.bools[long] {
				rest := name[j+1:]
				if rest == "" {
					parts = append(parts, "--"+long)
					if i+1 < len(args) {
						i++
						parts = append(parts, args[i])
					}
				} else {
					parts = append(parts, "--"+long+"="+rest)
				}
				break
			}
			parts = append(parts, "--"+long)
		}
		if !ok {
			return nil, usagef("unknown shorthand flag: %q in %s", name, a)
		}
		expanded = append(expanded, parts...)
	}
	if err := f.fs.Parse(expanded); err != nil {
		return nil, usagef("%v", err)
	}
	return f.fs.Args(), nil
}

func printCommandHelp(w io.Writer, cmd command, f *flags) {
	fmt.Fprintf(w, "\nUsage:  lormasctl %s %s\n\n%s\n", cmd.name, cmd.usage, cmd.summary)
	if cmd.name == "ps" {
		fmt.Fprint(w, "\nAliases:\n  lormasctl ps, lormasctl ls\n")
	}
	if f == nil || len(f.entries) == 0 {
		return
	}
	fmt.Fprint(w, "\nOptions:\n")
	for _, e := range f.entries {
		name := "    --" + e.long
		if e.short != "" {
			name = "-" + e.short + ", --" + e.long
		}
		if e.typ != "" {
			name += " " + e.typ
		}
		line := fmt.Sprintf("  %-26s %s", name, e.usage)
		if e.def != "" && e.def != "0" {
			line += fmt.Sprintf(" (default %s)", e.def)
		}
		fmt.Fprintln(w, line)
	}
}
