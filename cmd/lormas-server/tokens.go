package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/lormas/lormas-agent/internal/server"
)

// printToken is `lormas-server admin-token` and `lormas-server
// enrollment-token`: it prints the token the server uses, read from the
// same environment the server reads (in compose: docker compose exec -T
// lormas-server lormas-server admin-token). A configured token (ADMIN_TOKEN
// or its _FILE) is printed as given; a generated one is read from the file
// the server wrote it to. Only the token goes to stdout, so the output can
// be captured: ADMIN=$(lormas-server admin-token).
func printToken(which string, args, environ []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "lormas-server %s: unexpected arguments %q\n", which, args)
		return exitUsage
	}
	cfg, err := server.LoadConfig(server.Environ(environ))
	if err != nil {
		var ce *server.ConfigError
		if errors.As(err, &ce) {
			for _, p := range ce.Problems {
				fmt.Fprintf(stderr, "lormas-server: %s\n", p)
			}
		} else {
			fmt.Fprintf(stderr, "lormas-server: %v\n", err)
		}
		return exitUsage
	}
	var configured, path, fix string
	switch which {
	case "admin-token":
		configured, path = cfg.AdminToken.Reveal(), server.AdminTokenPath(cfg.DataDir)
		fix = "the server writes it on the start that generates the admin token, and removes it when it no longer holds the token in use.\n" +
			"To set a new admin token, start the server with ADMIN_TOKEN (or ADMIN_TOKEN_FILE)."
	default:
		configured, path = cfg.EnrollmentToken.Reveal(), cfg.EnrollmentTokenExport
		if path == "" {
			path = filepath.Join(cfg.DataDir, "enrollment-token")
		}
		fix = "the server writes it at every start when ENROLLMENT_TOKEN is not set: start the server first (with this DATA_DIR)."
	}
	if configured != "" {
		fmt.Fprintln(stdout, configured)
		return exitOK
	}
	b, err := os.ReadFile(path)
	token := strings.TrimSpace(string(b))
	switch {
	case errors.Is(err, fs.ErrNotExist) || err == nil && token == "":
		fmt.Fprintf(stderr, "lormas-server %s: no token in %s (DATA_DIR=%s): %s\n", which, path, cfg.DataDir, fix)
		return exitFailure
	case err != nil:
		fmt.Fprintf(stderr, "lormas-server %s: %v (run this as the server's user, with the server's DATA_DIR)\n", which, err)
		return exitFailure
	}
	fmt.Fprintln(stdout, token)
	return exitOK
}
