// Package config reads the agent's configuration from the environment (and
// a .env file in the working directory, which the real environment
// overrides), validates all of it at once, and documents it: the Config
// struct's tags are the single source of the configuration table printed
// by `lormas-agent help` and pasted into the README (MarkdownTable,
// CheckMarkdownTable). Parsing, problems and tables come from
// internal/envconf, which lormas-server's configuration uses too.
//
// The settings of libraries (DOCKER_HOST, HOST_PROC, proxies) are fields
// like the others, handed to the libraries by cmd/lormas-agent; nothing is
// written into the process environment. The node's credentials and the
// state files are internal/enroll's (Config.Credentials).
//
// Credentials are held as secret.Value, which never prints its value.
package config
