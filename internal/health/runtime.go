package health

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// writeGoMetrics writes the Go runtime metrics scrapers of Go programs
// expect (the names of the Prometheus client's Go collector).
func writeGoMetrics(w *bufio.Writer) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	gaugeLine(w, "gauge", "go_goroutines", "Number of goroutines that currently exist.", float64(runtime.NumGoroutine()))
	threads, _ := runtime.ThreadCreateProfile(nil)
	gaugeLine(w, "gauge", "go_threads", "Number of OS threads created.", float64(threads))
	w.WriteString("# HELP go_info Information about the Go environment.\n# TYPE go_info gauge\n")
	writeSample(w, "go_info", []string{"version"}, []string{runtime.Version()}, "", "", 1)
	for _, g := range []struct {
		typ, name, help string
		v               uint64
	}{
		{"gauge", "go_memstats_alloc_bytes", "Number of bytes allocated in heap and currently in use.", ms.HeapAlloc},
		{"counter", "go_memstats_alloc_bytes_total", "Total number of bytes allocated in heap until now.", ms.TotalAlloc},
		{"gauge", "go_memstats_sys_bytes", "Number of bytes obtained from system.", ms.Sys},
		{"counter", "go_memstats_mallocs_total", "Total number of heap objects allocated.", ms.Mallocs},
		{"counter", "go_memstats_frees_total", "Total number of heap objects frees.", ms.Frees},
		{"gauge", "go_memstats_heap_alloc_bytes", "Number of heap bytes allocated and currently in use.", ms.HeapAlloc},
		{"gauge", "go_memstats_heap_sys_bytes", "Number of heap bytes obtained from system.", ms.HeapSys},
		{"gauge", "go_memstats_heap_idle_bytes", "Number of heap bytes waiting to be used.", ms.HeapIdle},
		{"gauge", "go_memstats_heap_inuse_bytes", "Number of heap bytes that are in use.", ms.HeapInuse},
		{"gauge", "go_memstats_heap_released_bytes", "Number of heap bytes released to OS.", ms.HeapReleased},
		{"gauge", "go_memstats_heap_objects", "Number of currently allocated objects.", ms.HeapObjects},
		{"gauge", "go_memstats_stack_inuse_bytes", "Number of bytes obtained from system for stack allocator in non-CGO environments.", ms.StackInuse},
		{"gauge", "go_memstats_gc_sys_bytes", "Number of bytes used for garbage collection system metadata.", ms.GCSys},
		{"gauge", "go_memstats_next_gc_bytes", "Number of heap bytes when next garbage collection will take place.", ms.NextGC},
	} {
		gaugeLine(w, g.typ, g.name, g.help, float64(g.v))
	}
	gaugeLine(w, "gauge", "go_memstats_last_gc_time_seconds", "Number of seconds since 1970 of last garbage collection.",
		float64(ms.LastGC)/1e9)
	w.WriteString("# HELP go_gc_duration_seconds A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.\n# TYPE go_gc_duration_seconds summary\n")
	writeSample(w, "go_gc_duration_seconds_sum", nil, nil, "", "", float64(ms.PauseTotalNs)/1e9)
	writeSample(w, "go_gc_duration_seconds_count", nil, nil, "", "", float64(ms.NumGC))
}

// writeProcessMetrics writes the process metrics of the Prometheus client's
// process collector, read from /proc (left out where there is none).
func writeProcessMetrics(w *bufio.Writer) {
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return
	}
	// Fields after the command name, which may hold spaces and ")".
	i := strings.LastIndexByte(string(stat), ')')
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 22 {
		return
	}
	const userHZ = 100 // sysconf(_SC_CLK_TCK) on Linux
	field := func(n int) float64 { v, _ := strconv.ParseFloat(f[n], 64); return v }
	// f[0] is field 3 (state): utime 14, stime 15, starttime 22, vsize 23, rss 24.
	gaugeLine(w, "counter", "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
		(field(11)+field(12))/userHZ)
	gaugeLine(w, "gauge", "process_virtual_memory_bytes", "Virtual memory size in bytes.", field(20))
	gaugeLine(w, "gauge", "process_resident_memory_bytes", "Resident memory size in bytes.", field(21)*float64(os.Getpagesize()))
	if boot := bootTime(); boot > 0 {
		gaugeLine(w, "gauge", "process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
			boot+field(19)/userHZ)
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		gaugeLine(w, "gauge", "process_open_fds", "Number of open file descriptors.", float64(len(fds)))
	}
	if n, ok := maxOpenFiles(); ok {
		gaugeLine(w, "gauge", "process_max_fds", "Maximum number of open file descriptors.", n)
	}
}

// bootTime is the system's boot time in Unix seconds (btime in /proc/stat).
func bootTime() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "btime "); ok {
			t, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return t
		}
	}
	return 0
}

// maxOpenFiles reads the soft limit of open files from /proc/self/limits.
func maxOpenFiles() (float64, bool) {
	b, err := os.ReadFile("/proc/self/limits")
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "Max open files"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				if v, err := strconv.ParseFloat(f[0], 64); err == nil {
					return v, true
				}
			}
		}
	}
	return 0, false
}
