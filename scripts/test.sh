#!/usr/bin/env bash
# scripts/test.sh - everything Quartet's tests need, then the tests.
#
# On a fresh Debian machine with Go: installs the peers the tests talk to
# (curl, wrk, nginx for the static comparison, strace for syscall counts,
# chromium for the report test), fetches Go modules, runs
# gofmt/vet/staticcheck, darwin and freebsd builds and vets,
# `go test -race ./...`, the tests again under the newest Go release,
# then the RDMA tier in a QEMU guest with soft-iWARP and Soft-RoCE
# (vm/ci.sh; QUARTET_SKIP_VM=1 skips it). Needs root for apt-get (CI runs as root).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"

# The newest Go release, whose toolchain the go command takes from the
# module proxy; raise it when a newer one comes out.
newest_go=go1.27.3

step() { printf '\n=== %s [%s]\n' "$*" "$(date -u +%H:%M:%S)"; }

step "apt packages"
if command -v apt-get >/dev/null 2>&1; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q >/dev/null
  $SUDO apt-get install -y -q --no-install-recommends curl wrk strace nginx-light chromium ca-certificates >/dev/null
fi

step "go modules"
go mod download
go install honnef.co/go/tools/cmd/staticcheck@v0.8.2

step "gofmt, go vet, staticcheck"
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$bad" ]; then echo "gofmt would change:"; echo "$bad"; exit 1; fi
go vet ./...
staticcheck ./...

step "darwin and freebsd builds and vets (internal/poll: other platforms build, and fail at New)"
for goos in darwin freebsd; do
  GOOS=$goos go build ./...
  GOOS=$goos go vet ./...
done

step "go test -race ./..."
go test -race -count=1 -timeout 20m ./...

# The README promises Go 1.26 or later: the tests above run under the Go
# this machine has, and these under the newest release, which the go
# command fetches from the module proxy (about 76 MB). Without the race
# detector: the suite above has run under it already.
step "newest Go ($newest_go): go vet, go test ./..."
GOTOOLCHAIN=$newest_go go version
GOTOOLCHAIN=$newest_go go vet ./...
GOTOOLCHAIN=$newest_go go test -count=1 -timeout 20m ./...

if [ -d bench/peers ]; then
  step "bench/peers module"
  (cd bench/peers && go vet ./... && go test -race -count=1 ./...)
fi

if [ "${QUARTET_SKIP_VM:-}" != 1 ] && [ -f vm/ci.sh ]; then
  step "RDMA tier in a QEMU guest (siw0, rxe0)"
  bash vm/ci.sh
fi
step "all passed"
