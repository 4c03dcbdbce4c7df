package metrics

import (
	"net/http"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Readiness is what /readyz asks; *runtime.Server has it.
type Readiness interface{ Ready() bool }

// Live is /healthz: 200 while the process can answer at all. It checks
// nothing else on purpose: a liveness probe that fails restarts the
// process, which a busy or draining server does not need.
func Live() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
}

// Ready is /readyz: 200 when the server takes requests (every stage
// initialised, no shutdown begun), 503 otherwise, so that a load balancer
// stops sending before a shutdown closes connections.
func Ready(s Readiness) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if s == nil || !s.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("not ready\n"))
			return
		}
		w.Write([]byte("ready\n"))
	})
}

// BuildInfo identifies a build: the release, the commit it was built from,
// and the Go toolchain.
type BuildInfo struct {
	Version   string
	Commit    string
	GoVersion string
}

// ReadBuildInfo fills what the linker did not stamp from the module's
// build information: the main module's version (set by go install
// module@version), the VCS revision and whether the tree was modified
// (set by go build in a checkout).
func ReadBuildInfo(stamped BuildInfo) BuildInfo {
	b := stamped
	info, ok := debug.ReadBuildInfo()
	if ok {
		if b.GoVersion == "" {
			b.GoVersion = info.GoVersion
		}
		if b.Version == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			b.Version = info.Main.Version
		}
		if b.Commit == "" {
			rev, dirty := "", false
			for _, s := range info.Settings {
				switch s.Key {
				case "vcs.revision":
					rev = s.Value
				case "vcs.modified":
					dirty = s.Value == "true"
				}
			}
			if len(rev) > 12 {
				rev = rev[:12]
			}
			if rev != "" && dirty {
				rev += "-dirty"
			}
			b.Commit = rev
		}
	}
	if b.Version == "" {
		b.Version = "devel"
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	return b
}

// RegisterBuildInfo adds quartet_build_info{version,commit,goversion} 1 to
// the exporter, the Prometheus convention for joining a build's identity to
// any other series.
func (m *Metrics) RegisterBuildInfo(b BuildInfo) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "quartet_build_info",
		Help:        "The running build: version, commit and Go version; the value is 1.",
		ConstLabels: prometheus.Labels{"version": b.Version, "commit": b.Commit, "goversion": b.GoVersion},
	})
	g.Set(1)
	m.reg.MustRegister(g)
}
