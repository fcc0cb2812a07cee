# syntax=docker/dockerfile:1

# Build stage. The Go version here must match the major.minor of the `go`
# directive in go.mod (deploy/compose_test.go checks it). The builder runs on
# the build host's platform and cross-compiles for the target, so multi-arch
# builds (buildx --platform linux/amd64,linux/arm64) need no emulation.
FROM --platform=$BUILDPLATFORM golang:1.26-alpine AS build
WORKDIR /src

# Dependencies first, so code edits do not invalidate the module download.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/clickagg ./cmd/clickagg

# Runtime stage. Alpine rather than distroless so that busybox wget is there
# for the compose healthcheck and a shell is there for debugging.
FROM alpine:3.20
RUN apk add --no-cache ca-certificates tzdata \
    && addgroup -S -g 10001 clickagg \
    && adduser -S -D -H -u 10001 -G clickagg -s /sbin/nologin clickagg
COPY --from=build /out/clickagg /usr/local/bin/clickagg
# Numeric so that runtimes enforcing runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/clickagg"]
CMD ["serve"]
