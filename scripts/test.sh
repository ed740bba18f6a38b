#!/usr/bin/env bash
# The project's test command (README "Test"; .ci/run runs it): installs the tools the packaging
# tests need when missing, then runs every test with the race detector.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$(go env GOPATH)/bin:$PATH"
sh scripts/ci-tools.sh
go test -race -count=1 -timeout 40m "$@" ./...
