# The manager image: a static binary on distroless, running as non-root.
#
#   make docker-build IMG=ghcr.io/imcallback/friend-deletion-operator:v0.1.0
#
# Multi-platform: docker buildx build --platform linux/amd64,linux/arm64 .

FROM golang:1.26 AS builder
ARG TARGETOS
ARG TARGETARCH

WORKDIR /workspace
# Dependencies first, so source edits do not invalidate the module cache layer.
COPY go.mod go.sum ./
RUN go mod download

# .dockerignore keeps everything but the manager's sources out.
COPY . .
RUN CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags="-s -w" -o /manager .

FROM gcr.io/distroless/static:nonroot
COPY --from=builder /manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]
