package health

import (
	"bufio"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// The agent's metrics are a handful of counters, gauges and one histogram.
// They are kept here, with the Prometheus text exposition format (0.0.4),
// instead of in the Prometheus client library: that library and the
// protocol buffers it brings were a sixth of the agent's binary, and the
// binary is most of an idle agent's resident memory.

// family is one metric: its name, help, type and series by label values.
type family struct {
	name, help, typ string
	labels          []string  // label names, in the order series values give them
	buckets         []float64 // histogram upper bounds, ascending, without +Inf

	mu     sync.Mutex
	series map[string]*series // by label values joined with "\xff"
}

// series is one labelled time series of a family.
type series struct {
	values []string
	bits   atomic.Uint64   // counter or gauge value (float64 bits)
	counts []atomic.Uint64 // histogram: observations per bucket (not cumulative), +Inf last
	sum    atomic.Uint64   // histogram: sum of observations (float64 bits)
}

func newFamily(typ, name, help string, labels ...string) *family {
	return &family{typ: typ, name: name, help: help, labels: labels, series: map[string]*series{}}
}

// with returns the series for the label values, creating it.
func (f *family) with(values ...string) *series {
	key := strings.Join(values, "\xff")
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.series[key]
	if s == nil {
		s = &series{values: slices.Clone(values)}
		if f.typ == "histogram" {
			s.counts = make([]atomic.Uint64, len(f.buckets)+1)
		}
		f.series[key] = s
	}
	return s
}

func addFloat(u *atomic.Uint64, d float64) {
	for {
		old := u.Load()
		if u.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+d)) {
			return
		}
	}
}

func (s *series) add(d float64)  { addFloat(&s.bits, d) }
func (s *series) set(v float64)  { s.bits.Store(math.Float64bits(v)) }
func (s *series) value() float64 { return math.Float64frombits(s.bits.Load()) }

// observe records one observation in a histogram series of f.
func (f *family) observe(s *series, v float64) {
	i, _ := slices.BinarySearch(f.buckets, v) // first bucket with bound >= v
	s.counts[i].Add(1)
	addFloat(&s.sum, v)
}

// write appends the family in the text format.
func (f *family) write(w *bufio.Writer) {
	f.mu.Lock()
	all := make([]*series, 0, len(f.series))
	for _, s := range f.series {
		all = append(all, s)
	}
	f.mu.Unlock()
	slices.SortFunc(all, func(a, b *series) int { return slices.Compare(a.values, b.values) })
	w.WriteString("# HELP " + f.name + " " + escapeHelp(f.help) + "\n")
	w.WriteString("# TYPE " + f.name + " " + f.typ + "\n")
	for _, s := range all {
		if f.typ != "histogram" {
			writeSample(w, f.name, f.labels, s.values, "", "", s.value())
			continue
		}
		var total uint64
		for i := range s.counts {
			total += s.counts[i].Load()
			le := "+Inf"
			if i < len(f.buckets) {
				le = formatFloat(f.buckets[i])
			}
			writeSample(w, f.name+"_bucket", f.labels, s.values, "le", le, float64(total))
		}
		writeSample(w, f.name+"_sum", f.labels, s.values, "", "", math.Float64frombits(s.sum.Load()))
		writeSample(w, f.name+"_count", f.labels, s.values, "", "", float64(total))
	}
}

// writeSample writes one line: name{labels} value, the labels sorted by
// name (extra, when not "", last, as le is).
func writeSample(w *bufio.Writer, name string, labels, values []string, extra, extraValue string, v float64) {
	w.WriteString(name)
	if len(labels) > 0 || extra != "" {
		idx := make([]int, len(labels))
		for i := range idx {
			idx[i] = i
		}
		slices.SortFunc(idx, func(a, b int) int { return strings.Compare(labels[a], labels[b]) })
		w.WriteByte('{')
		for n, i := range idx {
			if n > 0 {
				w.WriteByte(',')
			}
			w.WriteString(labels[i] + `="` + escapeLabel(values[i]) + `"`)
		}
		if extra != "" {
			if len(labels) > 0 {
				w.WriteByte(',')
			}
			w.WriteString(extra + `="` + escapeLabel(extraValue) + `"`)
		}
		w.WriteByte('}')
	}
	w.WriteByte(' ')
	w.WriteString(formatFloat(v))
	w.WriteByte('\n')
}

// gaugeLine writes a whole family of one unlabelled sample.
func gaugeLine(w *bufio.Writer, typ, name, help string, v float64) {
	w.WriteString("# HELP " + name + " " + escapeHelp(help) + "\n# TYPE " + name + " " + typ + "\n")
	writeSample(w, name, nil, nil, "", "", v)
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }
