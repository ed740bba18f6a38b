#!/bin/sh
# Install the tools the packaging tests (internal/packaging) need, when they are missing:
#   helm             go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION into $(go env GOPATH)/bin
#                    (kept there: later runs reuse it; the tests find it on PATH or via $HELM)
#   systemd-analyze  Debian's systemd package (systemd-analyze verify / security, systemctl --root)
#   busybox          Debian's busybox-static (the shell of the stand-in Go builder image)
#   useradd          Debian's passwd package (install.sh into a temporary root)
#   ShellCheck       Debian's shellcheck package (lint of install.sh and ci-tools.sh)
# Run as root on Debian (apt-get); idempotent and quick when everything is present.
set -eu

HELM_VERSION=${HELM_VERSION:-v3.22.0}

gobin=$(go env GOBIN)
[ -n "$gobin" ] || gobin=$(go env GOPATH)/bin

# helm: `go version -m` tells which module version a binary was built from.
if go version -m "$gobin/helm" 2>/dev/null | grep -q "mod[[:space:]]*helm.sh/helm/v3[[:space:]]*$HELM_VERSION"; then
	echo "ci-tools: helm $HELM_VERSION present in $gobin"
else
	echo "ci-tools: go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
	GOBIN=$gobin go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi

packages=
command -v systemd-analyze >/dev/null 2>&1 || packages="$packages systemd"
[ -x /bin/busybox ] || packages="$packages busybox-static"
command -v useradd >/dev/null 2>&1 || packages="$packages passwd"
command -v shellcheck >/dev/null 2>&1 || packages="$packages shellcheck"
if [ -n "$packages" ]; then
	echo "ci-tools: apt-get install$packages"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086 # word splitting of the package list is intended
	apt-get install -y -qq --no-install-recommends $packages
else
	echo "ci-tools: systemd-analyze, busybox, useradd and shellcheck present"
fi
echo "ci-tools: add $gobin to PATH (or set HELM=$gobin/helm) for the packaging tests"
