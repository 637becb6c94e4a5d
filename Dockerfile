# syntax=docker/dockerfile:1
# The manager image: a static binary on distroless, running as non-root.
#
#   make docker-build IMG=ghcr.io/imcallback/friend-deletion-operator:v0.1.0
#
# Multi-platform, without emulation: the builder stage runs on the build
# machine's platform and cross-compiles for each target platform.
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=v0.1.0 --build-arg COMMIT=$(git rev-parse HEAD) .

# GO_VERSION is go.mod's go directive; test/install fails when they differ.
ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS builder
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=""

WORKDIR /workspace
# Dependencies first, into a cache that outlives the layer, so source edits
# do not download modules again.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=bind,source=go.mod,target=go.mod \
    --mount=type=bind,source=go.sum,target=go.sum \
    go mod download

# .dockerignore keeps everything but the manager's sources out.
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath \
      -ldflags="-s -w -X github.com/imcallback/friend-deletion-operator/internal/version.Version=${VERSION} -X github.com/imcallback/friend-deletion-operator/internal/version.Commit=${COMMIT}" \
      -o /manager .

FROM gcr.io/distroless/static:nonroot
ARG VERSION=dev
ARG COMMIT=""
LABEL org.opencontainers.image.title="friend-deletion-operator" \
      org.opencontainers.image.description="Turns Tencent Cloud IM Sns.CallbackFriendDelete callbacks into FriendDeletions and runs their cleanup" \
      org.opencontainers.image.source="https://github.com/imcallback/friend-deletion-operator" \
      org.opencontainers.image.url="https://github.com/imcallback/friend-deletion-operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
COPY --from=builder /manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]
