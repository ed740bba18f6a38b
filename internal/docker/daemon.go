package docker

import (
	"cmp"
	"net/http"
	"os"
	"path/filepath"

	"github.com/docker/docker/client"
	"github.com/docker/go-connections/tlsconfig"
)

// Daemon is where the Docker daemon is and how to reach it: DOCKER_HOST,
// DOCKER_TLS_VERIFY and DOCKER_CERT_PATH as the agent's configuration read
// them (the environment or .env), handed to the client explicitly. An empty
// field is taken from the process environment as the Docker CLI does, then
// the client's default (unix:///var/run/docker.sock).
type Daemon struct {
	Host      string // DOCKER_HOST
	TLSVerify string // DOCKER_TLS_VERIFY: non-empty verifies the daemon's certificate
	CertPath  string // DOCKER_CERT_PATH: directory of ca.pem, cert.pem, key.pem
}

// ClientOpts are the options of a client for the daemon, the equivalent
// of client.FromEnv with d's fields in place of the variables
// (DOCKER_API_VERSION is still read from the environment).
func (d Daemon) ClientOpts() []client.Opt {
	opts := []client.Opt{client.WithTLSClientConfigFromEnv()}
	if d.CertPath != "" {
		opts[0] = func(c *client.Client) error {
			tc, err := tlsconfig.Client(tlsconfig.Options{
				CAFile:             filepath.Join(d.CertPath, "ca.pem"),
				CertFile:           filepath.Join(d.CertPath, "cert.pem"),
				KeyFile:            filepath.Join(d.CertPath, "key.pem"),
				InsecureSkipVerify: d.TLSVerify == "",
			})
			if err != nil {
				return err
			}
			return client.WithHTTPClient(&http.Client{
				Transport:     &http.Transport{TLSClientConfig: tc},
				CheckRedirect: client.CheckRedirect,
			})(c)
		}
	}
	if d.Host != "" {
		opts = append(opts, client.WithHost(d.Host))
	} else {
		opts = append(opts, client.WithHostFromEnv())
	}
	return append(opts, client.WithVersionFromEnv())
}

// HostOrDefault is the address a client made with ClientOpts dials: Host,
// else DOCKER_HOST of the process environment, else the client's default.
func (d Daemon) HostOrDefault() string {
	return cmp.Or(d.Host, os.Getenv(client.EnvOverrideHost), client.DefaultDockerHost)
}
