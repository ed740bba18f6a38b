// Package config reads the agent's configuration from the environment (and
// a .env file in the working directory), validates all of it at once, and
// documents it: the Config struct's tags are the single source of the
// configuration table printed by `lormas-agent help` and pasted into the
// README (MarkdownTable, CheckMarkdownTable).
//
// Credentials are held as secret.Value, which never prints its value.
package config
