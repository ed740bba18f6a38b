#!/usr/bin/env bash
# The project's test command (README "Test"; .ci/run runs it): installs the tools the packaging
# tests need when missing, runs every test with the race detector in three phases, one line
# each, and removes the containers and images the tests made, whether they passed or not.
#
#   scripts/test.sh                   # everything (about 15 minutes on 2 CPUs, cold caches)
#   scripts/test.sh -run TestHelm     # extra arguments go to every `go test`
#   scripts/test.sh --cleanup         # only remove what earlier test runs left behind
#
# The fast tier for development is `go test -short ./...`: no Docker, no builds, seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$(go env GOPATH)/bin:$PATH"
export PATH

phase() { printf '\n== test.sh: %s\n' "$*"; }

# The label the test images carry (internal/dockertest.BuildImage), which the containers made from
# them inherit; the comment that marks the stand-ins of the Dockerfile's base images
# (internal/packaging); and the tags of the images built from the Dockerfile by the tests.
test_label=org.lormas.test
standin_comment="lormas packaging test stand-in "
test_tags='^lormas-(agent|server):pkgtest$|^lormas-reltest-[0-9a-f]+/'

# cleanup removes the test containers, then the test images: those labelled $test_label (only
# those labelled $test_label=$LORMAS_CLEANUP_LABEL when it is set, as the test of this script
# does; then nothing else), the Dockerfile images the packaging tests tag, the untagged images
# built on top of a test image, and the stand-in base images. Nothing else is touched: a
# container or image of this host's own Lormas agent carries neither the label nor the tags.
cleanup() {
	if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
		echo "test.sh: no Docker: nothing to clean up"
		return 0
	fi
	local only=${LORMAS_CLEANUP_LABEL:-}
	local images test_images='' id parent comment label tags
	# id|parent|label|tags|comment, one image per line (comment last: it is free text; | and not a
	# tab, which read would merge with the empty fields around it).
	images=$(docker image ls -aq --no-trunc | sort -u | xargs -r docker image inspect \
		--format '{{.Id}}|{{.Parent}}|{{with .Config.Labels}}{{index . "'"$test_label"'"}}{{end}}|{{range .RepoTags}}{{.}},{{end}}|{{.Comment}}')
	declare -A parent_of=() tagged=() is_test=()
	while IFS='|' read -r id parent label tags comment; do
		[ -n "$id" ] || continue
		parent_of[$id]=$parent
		tagged[$id]=$tags
		if [ -n "$only" ]; then
			[ "$label" = "$only" ] && is_test[$id]=1
			continue
		fi
		if [ -n "$label" ] || [[ $comment == "$standin_comment"* ]]; then
			is_test[$id]=1
		fi
		local tag
		for tag in ${tags//,/ }; do
			[[ $tag =~ $test_tags ]] && is_test[$id]=1
		done
	done <<<"$images"
	# Untagged images descending from a test image (build stages, intermediates) go too.
	for id in "${!parent_of[@]}"; do
		[ -z "${tagged[$id]}" ] || continue
		local p=${parent_of[$id]}
		while [ -n "$p" ]; do
			if [ -n "${is_test[$p]:-}" ]; then
				is_test[$id]=1
				break
			fi
			p=${parent_of[$p]:-}
		done
	done
	test_images=${!is_test[*]}

	local containers=() cid image
	while read -r cid image; do
		[ -n "$cid" ] && [ -n "${is_test[$image]:-}" ] && containers+=("$cid")
	done < <(docker container ls -aq --no-trunc | xargs -r docker container inspect --format '{{.Id}} {{.Image}}')
	if [ ${#containers[@]} -gt 0 ]; then
		docker container rm -f -v "${containers[@]}" >/dev/null
	fi
	# Children before their parents: the deepest first.
	local ordered=()
	for id in $test_images; do
		local depth=0 p=${parent_of[$id]}
		while [ -n "$p" ]; do depth=$((depth + 1)); p=${parent_of[$p]:-}; done
		ordered+=("$depth $id")
	done
	local removed=0 kept=0
	while read -r _ id; do
		[ -n "$id" ] || continue
		if docker image rm -f "$id" >/dev/null 2>&1; then
			removed=$((removed + 1))
		else
			kept=$((kept + 1)) # still used by an image or container that is not a test's
		fi
	done < <(printf '%s\n' "${ordered[@]}" | sort -rn)
	local note=""
	[ "$kept" -eq 0 ] || note=" ($kept kept: in use by images or containers that are not the tests')"
	echo "test.sh: removed ${#containers[@]} test containers and $removed test images$note"
}

if [ "${1:-}" = --cleanup ]; then
	phase "cleanup: the test containers and images earlier runs left behind"
	cleanup
	exit 0
fi

trap 'phase "cleanup: removing the containers and images the tests made"; cleanup' EXIT

phase "tools: checking helm, systemd-analyze, busybox, useradd, shellcheck (installing what is missing)"
sh scripts/ci-tools.sh

mapfile -t packages < <(go list ./... | grep -v -e /internal/e2e -e /internal/packaging)
phase "unit and Docker integration tests: ${#packages[@]} packages, go test -race (about 5 minutes)"
go test -race -count=1 -timeout 30m "$@" "${packages[@]}"

phase "end-to-end tests of the built binaries: internal/e2e (about 5 minutes)"
go test -race -count=1 -timeout 30m "$@" ./internal/e2e/...

phase "packaging tests: images, compose, Helm, systemd, quickstart, release: internal/packaging (about 10 minutes)"
go test -race -count=1 -timeout 40m "$@" ./internal/packaging/...
