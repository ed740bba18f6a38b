#!/usr/bin/env bash
# Build the release artefacts of one version:
#
#   dist/<version>/lormas-agent-<version>-linux-amd64      static binaries (CGO_ENABLED=0) of
#   dist/<version>/lormas-agent-<version>-linux-arm64      lormas-agent, lormas-server and lormasctl
#   dist/<version>/lormas-server-<version>-linux-...       for linux/amd64 and linux/arm64
#   dist/<version>/lormasctl-<version>-linux-...
#   dist/<version>/SHA256SUMS                              their SHA-256 checksums (sha256sum -c)
#   <registry>/lormas-agent:<version>                      both images, built from the Dockerfile
#   <registry>/lormas-server:<version>                     with the legacy builder, for this host's
#                                                          architecture, tagged locally
#
# Nothing is pushed: the last lines printed are the `docker push` commands for your registry.
#
#   scripts/release.sh                                     # version from git describe
#   VERSION=1.2.0 REGISTRY=registry.example.com/lormas scripts/release.sh
#
#   VERSION   version stamped into the binaries and images (default: git describe --tags --always
#             --dirty, else "dev")
#   COMMIT    commit stamped in (default: git rev-parse HEAD, else "unknown")
#   REGISTRY  image name prefix (default ghcr.io/lormas, the Helm chart's default image.repository)
#   OUT       output directory (default dist/<version>)
#   IMAGES    0 skips the images (binaries and checksums only)
#
# Multi-arch images need BuildKit (docker buildx build --platform linux/amd64,linux/arm64 --push,
# see the Dockerfile's header); the legacy builder used here builds for this host only.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "release: $*"; }

version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
commit=${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
registry=${REGISTRY:-ghcr.io/lormas}
out=${OUT:-dist/$version}
case $version in
*/* | *' '* | '') echo "release: VERSION \"$version\" must be one word without /" >&2 && exit 2 ;;
esac

say "version $version, commit $commit, into $out"
rm -rf "$out"
mkdir -p "$out"
for arch in amd64 arm64; do
	for prog in lormas-agent lormas-server lormasctl; do
		say "build $prog for linux/$arch"
		CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath \
			-ldflags "-s -w -X main.version=$version -X main.commit=$commit" \
			-o "$out/$prog-$version-linux-$arch" "./cmd/$prog"
	done
done
say "checksums"
(cd "$out" && sha256sum -- lormas* >SHA256SUMS && sha256sum --quiet -c SHA256SUMS)

if [ "${IMAGES:-1}" = 0 ]; then
	say "images skipped (IMAGES=0)"
else
	for target in agent server; do
		image=$registry/lormas-$target:$version
		say "build image $image (docker build --target $target, legacy builder)"
		DOCKER_BUILDKIT=0 docker build --quiet --target "$target" \
			--build-arg VERSION="$version" --build-arg COMMIT="$commit" \
			--tag "$image" . >/dev/null
	done
fi

say "done:"
(cd "$out" && ls -l -- *)
if [ "${IMAGES:-1}" != 0 ]; then
	cat <<TXT

Push the images to your registry (docker login first), then set the Helm chart's image.repository
to $registry/lormas-agent and image.tag to $version:
  docker push $registry/lormas-agent:$version
  docker push $registry/lormas-server:$version
Another registry: REGISTRY=registry.example.com/team scripts/release.sh, or retag:
  docker tag $registry/lormas-agent:$version registry.example.com/team/lormas-agent:$version
TXT
fi
