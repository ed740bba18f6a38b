package config

import "github.com/lormas/lormas-agent/internal/enroll"

// Credentials returns where the node's token comes from (NODE_TOKEN_FILE,
// NODE_TOKEN, or the token enrollment stored in STATE_DIR) and the
// enrollment token; internal/enroll owns the state files.
func (c *Config) Credentials() enroll.Credentials {
	return enroll.Credentials{
		State:               enroll.State{Dir: c.StateDir},
		NodeToken:           c.NodeToken,
		NodeTokenFile:       c.NodeTokenFile,
		EnrollmentToken:     c.EnrollmentToken,
		EnrollmentTokenFile: c.EnrollmentTokenFile,
	}
}
