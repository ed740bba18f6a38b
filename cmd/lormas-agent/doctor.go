package main

import (
	"context"
	"fmt"
	"io"

	"github.com/lormas/lormas-agent/internal/doctor"
)

// runDoctor runs the troubleshooting checks and prints one line each; status
// 0 only when all pass.
func runDoctor(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "lormas-agent doctor: unexpected arguments %q\n", args)
		return exitUsage
	}
	fmt.Fprintln(stdout, versionLine())
	if !doctor.Print(stdout, doctor.Run(ctx, doctor.Options{Environ: environ, Version: version})) {
		fmt.Fprintln(stdout, "\nsome checks failed: apply the fixes above")
		return exitFailure
	}
	fmt.Fprintln(stdout, "\nall checks passed")
	return exitOK
}
