// Package packaging tests the ways the agent is shipped (docs/deploy.md): the
// Dockerfile and the images it builds (from local stand-ins of the base
// images, since no registry is reachable), compose.yaml brought up as a
// whole system, the Helm chart in helm/lormas-agent rendered and decoded
// strictly into Kubernetes API types, and the systemd unit and install script
// in scripts/. It holds no code of its own: everything is in its tests.
//
// Tools: helm (go install helm.sh/helm/v3/cmd/helm@v3.22.0, found on PATH,
// in $(go env GOPATH)/bin or through $HELM), systemd-analyze and systemctl
// (Debian's systemd), useradd (Debian's passwd), busybox (Debian's
// busybox-static, for the stand-in Go image), docker-compose or a Compose v2
// plugin ($COMPOSE overrides, e.g. COMPOSE="docker compose"), and the Docker
// Engine. scripts/ci-tools.sh installs the missing ones. A missing tool fails
// the test under CI=true and skips it, loudly, elsewhere.
//
// go test ./internal/packaging -update rewrites the golden Helm render.
package packaging
