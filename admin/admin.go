// Package admin is the operator's interface to a running Quartet server:
// read and change each stage's size, bounds and controller, and see what
// the controller sees, with curl, while the server serves.
//
//	curl localhost:9090/admin/stages                             sizes, bounds, controller on/off
//	curl -d size=64 localhost:9090/admin/stages/processor        pin the pool at 64 places
//	curl -d min=4 -d max=256 localhost:9090/admin/stages/processor   bounds for the controller
//	curl -d auto=on localhost:9090/admin/stages/processor        the controller sizes it again
//	curl -d size=2 localhost:9090/admin/stages/reader            two reader loops (connections move)
//	curl localhost:9090/admin/control                            the controller's inputs, request classes
//
// Add "Accept: application/json" (or ?format=json) for JSON. Every change
// is logged by the server with its cause ("admin" and the client's
// address). The handler answers loopback clients only: mount it on an
// admin listener (quartet serve --metrics-addr with --admin), never on the
// public one.
package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/quartet-server/quartet/runtime"
)

// Server is what the admin interface needs of a server.
type Server interface {
	StageSizes() []runtime.StageSize
	StageSize(runtime.Stage) (runtime.StageSize, error)
	ChangeStage(runtime.Stage, runtime.StageChange) (runtime.StageSize, error)
	Stats() runtime.Stats
}

var _ Server = (*runtime.Server)(nil)

// Handler returns the admin interface for s, to mount at /admin/.
func Handler(s Server, logger *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/{$}", help)
	mux.HandleFunc("GET /admin/stages", func(w http.ResponseWriter, r *http.Request) {
		writeSizes(w, r, s.StageSizes())
	})
	mux.HandleFunc("GET /admin/stages/{stage}", func(w http.ResponseWriter, r *http.Request) {
		z, err := s.StageSize(runtime.Stage(r.PathValue("stage")))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		writeSizes(w, r, []runtime.StageSize{z})
	})
	mux.HandleFunc("POST /admin/stages/{stage}", func(w http.ResponseWriter, r *http.Request) {
		change(s, logger, w, r)
	})
	mux.HandleFunc("GET /admin/control", func(w http.ResponseWriter, r *http.Request) {
		writeControl(w, r, s.Stats())
	})
	return loopbackOnly(mux)
}

// loopbackOnly refuses clients that are not on this machine: resizing a
// server is not for whoever can reach its admin port.
func loopbackOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		ip := net.ParseIP(host)
		if err != nil || ip == nil || !ip.IsLoopback() {
			http.Error(w, "quartet admin: loopback clients only", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func help(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprint(w, `Quartet admin

GET  /admin/stages                 every stage's size, bounds and controller
GET  /admin/stages/{stage}         one stage (reader, processor, writer)
POST /admin/stages/{stage}         change it; form fields, all optional:
       size=N     set the size now (turns the controller off unless auto=on)
       min=N      the controller's lower bound
       max=N      the controller's upper bound
       auto=on|off  the controller on or off
GET  /admin/control                the controller's last inputs and the request classes

JSON with "Accept: application/json" or ?format=json.
`)
}

// change applies a POST's form to a stage.
func change(s Server, logger *slog.Logger, w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "quartet admin: "+err.Error(), http.StatusBadRequest)
		return
	}
	st := runtime.Stage(r.PathValue("stage"))
	ch := runtime.StageChange{Cause: "admin " + r.RemoteAddr}
	known := map[string]bool{"size": true, "min": true, "max": true, "auto": true, "format": true}
	for k := range r.Form {
		if !known[k] {
			http.Error(w, fmt.Sprintf("quartet admin: unknown field %q (fields: size, min, max, auto)", k), http.StatusBadRequest)
			return
		}
	}
	for _, f := range []struct {
		name string
		to   *int
	}{{"size", &ch.Size}, {"min", &ch.Min}, {"max", &ch.Max}} {
		v := r.Form.Get(f.name)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			http.Error(w, fmt.Sprintf("quartet admin: %s=%q: want a whole number of at least 1", f.name, v), http.StatusBadRequest)
			return
		}
		*f.to = n
	}
	if v := r.Form.Get("auto"); v != "" {
		var on bool
		switch strings.ToLower(v) {
		case "on", "true", "1", "yes":
			on = true
		case "off", "false", "0", "no":
		default:
			http.Error(w, fmt.Sprintf("quartet admin: auto=%q: want on or off", v), http.StatusBadRequest)
			return
		}
		ch.Auto = &on
	}
	if ch.Size == 0 && ch.Min == 0 && ch.Max == 0 && ch.Auto == nil {
		http.Error(w, "quartet admin: nothing to change (fields: size, min, max, auto)", http.StatusBadRequest)
		return
	}
	z, err := s.ChangeStage(st, ch)
	if err != nil {
		code := http.StatusBadRequest
		if errors.Is(err, runtime.ErrNotServing) {
			code = http.StatusConflict
		}
		logger.Warn("quartet admin: change refused", "stage", st, "client", r.RemoteAddr, "err", err)
		http.Error(w, err.Error(), code)
		return
	}
	writeSizes(w, r, []runtime.StageSize{z})
}

func wantsJSON(r *http.Request) bool {
	return r.URL.Query().Get("format") == "json" || strings.Contains(r.Header.Get("Accept"), "application/json")
}

// stageJSON is a StageSize as the JSON answers spell it.
type stageJSON struct {
	Stage     string `json:"stage"`
	Size      int    `json:"size"`
	Min       int    `json:"min"`
	Max       int    `json:"max"`
	Auto      bool   `json:"auto"`
	Resizable bool   `json:"resizable"`
}

func writeSizes(w http.ResponseWriter, r *http.Request, sizes []runtime.StageSize) {
	if wantsJSON(r) {
		out := make([]stageJSON, 0, len(sizes))
		for _, z := range sizes {
			out = append(out, stageJSON{string(z.Stage), z.Size, z.Min, z.Max, z.Auto, z.Resizable})
		}
		writeJSON(w, out)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "stage\tsize\tmin\tmax\tauto\tresizable")
	for _, z := range sizes {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\n", z.Stage, z.Size, z.Min, z.Max, onOff(z.Auto), yesNo(z.Resizable))
	}
	tw.Flush()
}

// controlJSON is runtime.ControlStats as the JSON answer spells it.
type controlJSON struct {
	Time            time.Time   `json:"time"`
	Period          float64     `json:"period_seconds"`
	ArrivalRate     float64     `json:"arrival_rate"`
	OfferedRate     float64     `json:"offered_rate"`
	Throughput      float64     `json:"throughput"`
	QueueWait       float64     `json:"queue_wait_seconds"`
	ServiceTime     float64     `json:"service_time_seconds"`
	Busy            float64     `json:"busy"`
	Demand          float64     `json:"demand"`
	Target          int         `json:"target"`
	Ceiling         int         `json:"ceiling"`
	Queued          int         `json:"queued"`
	Goroutines      int         `json:"processor_goroutines"`
	QueueWaitTarget float64     `json:"queue_wait_target_seconds"`
	Classes         []classJSON `json:"classes"`
	Loops           []loopJSON  `json:"loops"`
}

// loopJSON is runtime.LoopControl as the JSON answer spells it.
type loopJSON struct {
	Stage        string  `json:"stage"`
	Load         float64 `json:"busy_fraction"`
	Work         float64 `json:"work_loops"`
	Cause        string  `json:"cause"`
	Budget       int     `json:"drain_budget"`
	BudgetCause  string  `json:"drain_budget_cause"`
	PerTurn      float64 `json:"handoffs_per_turn"`
	TurnTime     float64 `json:"turn_seconds"`
	HandoffsRate float64 `json:"handoffs_rate"`
}

type classJSON struct {
	Name       string  `json:"name"`
	Queued     int     `json:"queued"`
	Held       int     `json:"held"`
	Admitted   uint64  `json:"admitted"`
	Shed       uint64  `json:"shed"`
	Limit      int64   `json:"limit"`
	RetryAfter int64   `json:"retry_after_seconds"`
	Service    float64 `json:"service_time_seconds"`
	Use        float64 `json:"use"`
	Late       uint64  `json:"late"`
	Gain       float64 `json:"gain"`
}

func writeControl(w http.ResponseWriter, r *http.Request, st runtime.Stats) {
	c := st.Control
	if wantsJSON(r) {
		out := controlJSON{Time: c.Time, Period: c.Period.Seconds(), ArrivalRate: c.ArrivalRate, OfferedRate: c.Offered, Throughput: c.Throughput,
			QueueWait: c.QueueWait.Seconds(), ServiceTime: c.Service.Seconds(), Busy: c.Busy, Demand: c.Demand,
			Target: c.Target, Ceiling: c.Ceiling, Queued: c.Queued, Goroutines: st.ProcessorGoroutines,
			QueueWaitTarget: c.WaitTarget.Seconds(), Classes: []classJSON{}}
		for _, k := range c.Classes {
			out.Classes = append(out.Classes, classJSON{k.Name, k.Queued, k.Held, k.Admitted, k.Shed, k.Limit, k.RetryAfter, k.Service.Seconds(), k.Use, k.Late, k.Gain})
		}
		out.Loops = []loopJSON{}
		for _, l := range c.Loops {
			out.Loops = append(out.Loops, loopJSON{string(l.Stage), l.Load, l.Work, string(l.Cause), l.Budget, string(l.BudgetCause),
				l.PerTurn, l.TurnTime.Seconds(), l.HandoffsRate})
		}
		writeJSON(w, out)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "processor controller, period of %v ending %s\n", c.Period.Round(time.Millisecond), c.Time.Format(time.RFC3339Nano))
	fmt.Fprintf(w, "  arrivals %.0f/s (offered %.0f/s), throughput %.0f/s\n", c.ArrivalRate, c.Offered, c.Throughput)
	fmt.Fprintf(w, "  queue wait %v, service time %v, busy %.1f places, queued %d\n", c.QueueWait, c.Service, c.Busy, c.Queued)
	fmt.Fprintf(w, "  demand %.1f places, target %d, ceiling %d, goroutines %d\n", c.Demand, c.Target, c.Ceiling, st.ProcessorGoroutines)
	if c.WaitTarget > 0 {
		fmt.Fprintf(w, "admission: queue-wait target %v\n", c.WaitTarget)
	} else {
		fmt.Fprintln(w, "admission: off")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "class\tqueued\theld\tadmitted\tshed\tlimit\tretry-after\tservice\tuse\tlate\tgain")
	for _, k := range c.Classes {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%ds\t%v\t%.2f\t%d\t%.2f\n", k.Name, k.Queued, k.Held, k.Admitted, k.Shed, k.Limit, k.RetryAfter, k.Service, k.Use, k.Late, k.Gain)
	}
	tw.Flush()
	fmt.Fprintln(w, "loop controllers")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "stage	busy	work (loops)	last change	drain budget	per turn	turn time	hand-offs/s")
	for _, l := range c.Loops {
		fmt.Fprintf(tw, "%s\t%.0f%%\t%.2f\t%s\t%d %s\t%.1f\t%v\t%.0f\n", l.Stage, 100*l.Load, l.Work, string(l.Cause), l.Budget, string(l.BudgetCause),
			l.PerTurn, l.TurnTime, l.HandoffsRate)
	}
	tw.Flush()
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
