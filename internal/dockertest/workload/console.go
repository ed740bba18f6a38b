package main

// Console modes of the workload, chosen by its first argument (checked
// before the flags of main.go are parsed):
//
//	console     a line console on stdin: prints "ready", then answers each
//	            line: "size" prints "size ROWS COLS" (the terminal size of
//	            stdin, TIOCGWINSZ; "size 0 0" without a terminal), "err TEXT"
//	            prints TEXT on stderr, "exit N" exits with N, anything else
//	            is echoed as "echo: LINE". At the end of stdin it prints
//	            "stdin closed" and exits 0.
//	size        prints "size ROWS COLS" once and exits 0.
//	burn N      keeps N CPUs busy until killed.
//	nuls N      writes N NUL bytes to stdout and N to stderr, interleaved in
//	            32 KiB chunks, and exits 0 (output that grows sixfold as
//	            JSON: \u0000).
//
// SIGTERM and SIGINT end every mode with status 0.

import (
	"bufio"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

func init() {
	if len(os.Args) < 2 {
		return
	}
	switch os.Args[1] {
	case "console":
		exitOnSignal()
		console()
	case "size":
		rows, cols := termSize()
		fmt.Printf("size %d %d\n", rows, cols)
		os.Exit(0)
	case "nuls":
		n := 0
		if len(os.Args) > 2 {
			n, _ = strconv.Atoi(os.Args[2])
		}
		nuls(n)
		os.Exit(0)
	case "burn":
		exitOnSignal()
		n := 1
		if len(os.Args) > 2 {
			n, _ = strconv.Atoi(os.Args[2])
		}
		burn(n)
	}
}

func exitOnSignal() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		os.Exit(0)
	}()
}

func console() {
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64<<10), 1<<20)
	for in.Scan() {
		line := strings.TrimRight(in.Text(), "\r")
		switch {
		case line == "size":
			rows, cols := termSize()
			fmt.Printf("size %d %d\n", rows, cols)
		case strings.HasPrefix(line, "err "):
			fmt.Fprintln(os.Stderr, strings.TrimPrefix(line, "err "))
		case strings.HasPrefix(line, "exit "):
			code, _ := strconv.Atoi(strings.TrimPrefix(line, "exit "))
			os.Exit(code)
		default:
			fmt.Printf("echo: %s\n", line)
		}
	}
	fmt.Println("stdin closed")
	os.Exit(0)
}

// termSize reads the terminal size of stdin.
func termSize() (rows, cols int) {
	var ws struct{ Row, Col, X, Y uint16 }
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, 0, uintptr(syscall.TIOCGWINSZ), uintptr(unsafe.Pointer(&ws)))
	if errno != 0 {
		return 0, 0
	}
	return int(ws.Row), int(ws.Col)
}

func nuls(n int) {
	chunk := make([]byte, 32<<10)
	for n > 0 {
		c := chunk[:min(n, len(chunk))]
		_, _ = os.Stdout.Write(c)
		_, _ = os.Stderr.Write(c)
		n -= len(c)
	}
}

func burn(n int) {
	runtime.GOMAXPROCS(max(n, 1))
	for i := 0; i < n; i++ {
		go func() {
			x := 0
			for {
				x++
			}
		}()
	}
	select {}
}
