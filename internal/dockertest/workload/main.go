// Command workload is the test workload of the Docker integration tests. It is
// built as a static binary into a FROM-scratch image by dockertest.WorkloadImage
// and behaves as each test asks, through flags (the container's Cmd) or
// WORKLOAD_* environment variables (flags win):
//
//	-lines N            print N numbered lines to stdout ("stdout line 1" ...)   WORKLOAD_LINES
//	-stderr-lines M     interleave M numbered lines on stderr ("stderr line 1")  WORKLOAD_STDERR_LINES
//	-interval D         pause D (a Go duration) between lines                    WORKLOAD_INTERVAL
//	-delay D            wait D before printing anything                          WORKLOAD_DELAY
//	-flood              print "flood line N" as fast as possible, forever        WORKLOAD_FLOOD
//	                    (or N lines with -lines N)
//	-rate N             with -flood: at most N lines a second                    WORKLOAD_RATE
//	-pad BYTES          pad every numbered line with "x" to BYTES (before "\n")   WORKLOAD_PAD
//	-run-stamp          begin every numbered line with "run T " where T is the   WORKLOAD_RUN_STAMP
//	                    process start in Unix nanoseconds (tells restarts apart)
//	-listen ADDR        serve HTTP 200 "ok" on TCP ADDR (":8080")                WORKLOAD_LISTEN
//	-listen-udp ADDR    echo UDP datagrams on ADDR                               WORKLOAD_LISTEN_UDP
//	-alloc BYTES        allocate and touch BYTES of memory                       WORKLOAD_ALLOC
//	-ignore-sigterm     ignore SIGTERM (stop must wait for the grace period)    WORKLOAD_IGNORE_SIGTERM
//	-exit CODE          exit with CODE after printing; default: sleep forever    WORKLOAD_EXIT
//
// File system probes, run first, in this order (for the volume tests):
//
//	-cat PATH           print the file PATH ("cat PATH:" then its lines)
//	-symlink LINK=TGT   create the symlink LINK pointing to TGT ("symlink LINK -> TGT: ok|error")
//	-escape DIR         try every way out of the bind mount DIR a process of the container
//	                    can take, printing "escape <what>: ok|<error>" for each
//	-ls DIR             print "ls DIR: <names, sorted, space-separated>" (every start)
//	-plant DIR          leave DIR/suid (a copy of this program, setuid, mode 04755) and
//	                    DIR/null (the character device 1:3), as a root workload can:
//	                    "plant DIR/suid: ok|<error>", "plant DIR/null: ok|<error>"
//	-whoami             print "whoami: uid=U euid=E" (run as a setuid copy: E is its owner)
//
// As PID 1 of a container a process without a SIGTERM handler never sees
// SIGTERM, so the workload handles it: it exits 0 unless -ignore-sigterm.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	lines := flag.Int("lines", envInt("WORKLOAD_LINES", 0), "stdout lines to print")
	stderrLines := flag.Int("stderr-lines", envInt("WORKLOAD_STDERR_LINES", 0), "stderr lines to print")
	interval := flag.Duration("interval", envDuration("WORKLOAD_INTERVAL", 0), "pause between lines")
	delay := flag.Duration("delay", envDuration("WORKLOAD_DELAY", 0), "wait before printing")
	flood := flag.Bool("flood", envBool("WORKLOAD_FLOOD"), "print lines as fast as possible")
	rate := flag.Int("rate", envInt("WORKLOAD_RATE", 0), "flood: at most this many lines a second")
	pad := flag.Int("pad", envInt("WORKLOAD_PAD", 0), "pad numbered lines with x to this many bytes")
	runStamp := flag.Bool("run-stamp", envBool("WORKLOAD_RUN_STAMP"), `begin numbered lines with "run <start ns> "`)
	listen := flag.String("listen", os.Getenv("WORKLOAD_LISTEN"), "TCP address to serve HTTP 200 on")
	listenUDP := flag.String("listen-udp", os.Getenv("WORKLOAD_LISTEN_UDP"), "UDP address to echo on")
	alloc := flag.Int64("alloc", int64(envInt("WORKLOAD_ALLOC", 0)), "bytes of memory to allocate")
	ignoreTerm := flag.Bool("ignore-sigterm", envBool("WORKLOAD_IGNORE_SIGTERM"), "ignore SIGTERM")
	exit := flag.Int("exit", envInt("WORKLOAD_EXIT", -1), "exit code after printing; -1 sleeps forever")
	cat := flag.String("cat", "", "file to print first")
	symlink := flag.String("symlink", "", "LINK=TARGET: symlink to create")
	escape := flag.String("escape", "", "bind mount to try to escape from")
	ls := flag.String("ls", "", "directory to list")
	plantDir := flag.String("plant", "", "directory to leave a setuid program and a device node in")
	whoami := flag.Bool("whoami", false, "print the real and effective uid")
	flag.Parse()

	if *whoami {
		fmt.Printf("whoami: uid=%d euid=%d\n", os.Getuid(), os.Geteuid())
	}
	if *plantDir != "" {
		plant(*plantDir)
	}

	if *cat != "" {
		b, err := os.ReadFile(*cat)
		fmt.Printf("cat %s: %v\n%s", *cat, err, b)
	}
	if *symlink != "" {
		link, target, _ := strings.Cut(*symlink, "=")
		fmt.Printf("symlink %s -> %s: %s\n", link, target, result(os.Symlink(target, link)))
	}
	if *escape != "" {
		tryEscape(*escape)
	}
	if *ls != "" {
		list(*ls)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for s := range sig {
			if s == syscall.SIGTERM && *ignoreTerm {
				fmt.Println("ignoring SIGTERM")
				continue
			}
			os.Exit(0)
		}
	}()

	if *alloc > 0 {
		buf := make([]byte, *alloc)
		for i := range buf {
			if i%4096 == 0 {
				buf[i] = 1
			}
		}
		// Touch it now and then, so it stays referenced and resident.
		go func() {
			for {
				time.Sleep(time.Minute)
				buf[0]++
			}
		}()
	}
	if *listen != "" {
		go serveHTTP(*listen)
	}
	if *listenUDP != "" {
		go echoUDP(*listenUDP)
	}

	prefix := ""
	if *runStamp {
		prefix = fmt.Sprintf("run %d ", time.Now().UnixNano())
	}
	line := func(buf []byte, kind string, i int) []byte {
		buf = fmt.Appendf(buf[:0], "%s%s line %d", prefix, kind, i)
		if n := *pad - len(buf); n > 0 {
			buf = append(buf, ' ')
			for ; n > 1; n-- {
				buf = append(buf, 'x')
			}
		}
		return append(buf, '\n')
	}
	var buf []byte
	time.Sleep(*delay)
	if *flood {
		out := bufio.NewWriterSize(os.Stdout, 64<<10)
		began := time.Now()
		for i := 1; *lines == 0 || i <= *lines; i++ {
			buf = line(buf, "flood", i)
			out.Write(buf)
			if *rate > 0 && i%1000 == 0 {
				out.Flush()
				time.Sleep(time.Until(began.Add(time.Duration(i) * time.Second / time.Duration(*rate))))
			}
		}
		out.Flush()
	} else {
		for i := 1; i <= max(*lines, *stderrLines); i++ {
			if i <= *lines {
				buf = line(buf, "stdout", i)
				os.Stdout.Write(buf)
			}
			if i <= *stderrLines {
				buf = line(buf, "stderr", i)
				os.Stderr.Write(buf)
			}
			if *interval > 0 {
				time.Sleep(*interval)
			}
		}
	}
	if *exit >= 0 {
		os.Exit(*exit)
	}
	select {}
}

func result(err error) string {
	if err != nil {
		return err.Error()
	}
	return "ok"
}

func list(dir string) {
	entries, err := os.ReadDir(dir)
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	if err != nil {
		fmt.Printf("ls %s: error %v\n", dir, err)
		return
	}
	fmt.Printf("ls %s: %s\n", dir, strings.Join(names, " "))
}

// plant leaves a setuid copy of this program and a device node in dir.
func plant(dir string) {
	suid := func() error {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		data, err := os.ReadFile(self)
		if err != nil {
			return err
		}
		if err := os.WriteFile(dir+"/suid", data, 0o755); err != nil {
			return err
		}
		return os.Chmod(dir+"/suid", os.ModeSetuid|0o755)
	}
	fmt.Printf("plant %s/suid: %s\n", dir, result(suid()))
	fmt.Printf("plant %s/null: %s\n", dir, result(syscall.Mknod(dir+"/null", syscall.S_IFCHR|0o666, 1<<8|3)))
}

// tryEscape attempts, as the container's user with Docker's default
// capabilities, to change what lies beside or above the bind mount dir on
// the host: through "..", by replacing the mount point, by planting
// symlinks, by renaming, and by mounting.
func tryEscape(dir string) {
	parent := filepath.Dir(dir)
	base := filepath.Base(dir)
	steps := []struct {
		what string
		do   func() error
	}{
		{"mkdir " + dir + "/../b", func() error { return os.Mkdir(dir+"/../b", 0o755) }},
		{"symlink " + dir + "/../c -> /", func() error { return os.Symlink("/", dir+"/../c") }},
		{"write " + dir + "/../planted", func() error { return os.WriteFile(dir+"/../planted", []byte("x"), 0o644) }},
		{"rename " + dir, func() error { return os.Rename(dir, parent+"/"+base+".old") }},
		{"remove " + dir, func() error { return os.Remove(dir) }},
		{"symlink over " + dir, func() error { return os.Symlink("/", dir) }},
		{"symlink " + dir + "/b -> /", func() error { return os.Symlink("/", dir+"/b") }},
		{"symlink " + dir + "/up -> ..", func() error { return os.Symlink("..", dir+"/up") }},
		{"mkdir " + dir + "/up/d", func() error { return os.Mkdir(dir+"/up/d", 0o755) }},
		{"mount tmpfs on " + dir, func() error { return syscall.Mount("tmpfs", dir, "tmpfs", 0, "") }},
		{"bind / onto " + dir, func() error { return syscall.Mount("/", dir, "", syscall.MS_BIND, "") }},
		{"unmount " + dir, func() error { return syscall.Unmount(dir, syscall.MNT_DETACH) }},
	}
	for _, s := range steps {
		fmt.Printf("escape %s: %s\n", s.what, result(s.do()))
	}
}

func serveHTTP(addr string) {
	err := http.ListenAndServe(addr, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	}))
	fmt.Fprintln(os.Stderr, "listen:", err)
	os.Exit(3)
}

func echoUDP(addr string) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen-udp:", err)
		os.Exit(3)
	}
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			continue
		}
		_, _ = pc.WriteTo(buf[:n], from)
	}
}

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil {
		return v
	}
	return def
}

func envDuration(key string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(key)); err == nil {
		return v
	}
	return def
}

func envBool(key string) bool {
	v, _ := strconv.ParseBool(os.Getenv(key))
	return v
}
