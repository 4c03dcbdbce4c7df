# A static quartet binary in an empty image, run as an unprivileged user.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) \
#                --build-arg COMMIT=$(git rev-parse --short HEAD) -t quartet .
#   docker run -p 8080:8080 -p 9090:9090 quartet                    # the sample site
#   docker run -p 8080:8080 -v $PWD/www:/srv:ro quartet --root /srv  # your files
#
# Inside the container the server binds 0.0.0.0 (the default 127.0.0.1
# would be unreachable through -p); /metrics, /healthz and /readyz are on
# 9090. The load-test endpoints are off: the container is reachable.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" -o /out/quartet ./cmd/quartet

FROM scratch
COPY --from=build /out/quartet /quartet
# 65532: an unprivileged uid with no account, the distroless "nonroot".
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/quartet", "serve", "--addr", "0.0.0.0:8080", "--metrics-addr", "0.0.0.0:9090"]
CMD ["--bench-endpoints=false"]
