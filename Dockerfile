# Lormas node agent (default target) and reference server.
#
#   docker build -t lormas-agent .                          # the agent (last stage = default target)
#   docker build --target server -t lormas-server .         # the reference server
#   docker buildx build --platform linux/amd64,linux/arm64 --target agent -t REPO/lormas-agent:TAG .
#   docker build --build-arg VERSION=$(git describe --tags --always) \
#                --build-arg COMMIT=$(git rev-parse HEAD) -t lormas-agent .
#
# Run the agent as non-root (uid 65532) with only the socket's group (--group-add: the gid that owns
# the socket on this host), host metrics from the host's /proc, and the enrolled node token kept
# in a named volume:
#
#   docker run -d --name lormas-agent --restart unless-stopped --read-only \
#     --cap-drop ALL --security-opt no-new-privileges \
#     --group-add "$(stat -c %g /var/run/docker.sock)" \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     -v /proc:/host/proc:ro -e HOST_PROC=/host/proc \
#     -v lormas-agent-state:/var/lib/lormas-agent \
#     -e SERVER_URL=wss://lormas.example.com -e NODE_NAME="$(hostname)" \
#     -e ENROLLMENT_TOKEN_FILE=/run/secrets/enrollment-token \
#     -v /etc/lormas/enrollment-token:/run/secrets/enrollment-token:ro \
#     lormas-agent
#
# A token file mounted this way must be readable by uid 65532; write it so:
#   printf '%s\n' "$ENROLLMENT_TOKEN" | sudo install -D -m 0400 -o 65532 /dev/stdin /etc/lormas/enrollment-token
# (lormas-server enrollment-token prints the server's enrollment token.)
#
# Only classic Dockerfile syntax is used (no RUN --mount, no heredocs), so the legacy builder
# (DOCKER_BUILDKIT=0) builds it too. BuildKit sets BUILDPLATFORM/TARGETOS/TARGETARCH, so the
# toolchain runs natively and cross-compiles; the legacy builder sets none of them: the
# builder's platform is then plain "linux", which the daemon completes with its own
# architecture (an arm64 host builds natively for arm64, as the final stage is), and the
# compiler builds for its own platform. The TARGET* ARGs carry no default on purpose: under
# BuildKit an ARG default would win over --platform (docker/buildx#510).

FROM --platform=${BUILDPLATFORM:-linux} golang:1.26-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
# Modules first, in their own layer: source edits do not download them again.
COPY go.mod go.sum ./
RUN go mod download && go mod verify
COPY cmd ./cmd
COPY internal ./internal
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=unknown
RUN GOOS="${TARGETOS:-$(go env GOOS)}" GOARCH="${TARGETARCH:-$(go env GOARCH)}" \
    go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/bin/ ./cmd/lormas-agent ./cmd/lormas-server \
 && mkdir -p /out/state /out/data /out/enrollment

# What both images share: the distroless non-root base, the OCI labels, the runtime user, and the
# mount point of compose.yaml's enrollment-token volume (owned by 65532 in both images, so the
# volume gets the same owner whichever container mounts it first).
FROM gcr.io/distroless/static-debian12:nonroot AS runtime
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.source="https://github.com/lormas/lormas-agent" \
      org.opencontainers.image.url="https://github.com/lormas/lormas-agent" \
      org.opencontainers.image.vendor="Lormas" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"
COPY --from=build --chown=65532:65532 /out/enrollment /run/lormas/enrollment
USER 65532:65532

# The reference server: SQLite under DATA_DIR, secrets generated there on first start.
FROM runtime AS server
LABEL org.opencontainers.image.title="lormas-server" \
      org.opencontainers.image.description="Lormas reference control plane: node enrollment, node tokens, command API for Lormas node agents"
COPY --from=build /out/bin/lormas-server /usr/local/bin/lormas-server
# An empty directory owned by the runtime user: a named volume mounted on it starts with its owner.
COPY --from=build --chown=65532:65532 /out/data /var/lib/lormas-server
ENV DATA_DIR=/var/lib/lormas-server LISTEN_ADDR=:3000
VOLUME ["/var/lib/lormas-server"]
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/lormas-server", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/lormas-server"]

# The node agent (default target). HEALTHCHECK runs the binary itself: the image has no shell.
FROM runtime AS agent
LABEL org.opencontainers.image.title="lormas-agent" \
      org.opencontainers.image.description="Lormas node agent: runs Lormas server commands against the local Docker Engine"
COPY --from=build /out/bin/lormas-agent /usr/local/bin/lormas-agent
COPY --from=build --chown=65532:65532 /out/state /var/lib/lormas-agent
# HEALTH_ADDR keeps the agent's default, 127.0.0.1:9321: HEALTHCHECK runs inside the container's
# network namespace, so loopback serves it, and nothing is exposed (set HEALTH_ADDR=:9321 and publish
# the port to scrape /metrics from elsewhere).
ENV STATE_DIR=/var/lib/lormas-agent
VOLUME ["/var/lib/lormas-agent"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/lormas-agent", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/lormas-agent"]
