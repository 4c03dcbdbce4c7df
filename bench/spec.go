package bench

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"

	"github.com/quartet-server/quartet/internal/strictyaml"
)

// Spec is an experiment: a matrix of server configurations, connection
// counts and workloads, each point measured Repeats times. Example:
//
//	name: stage sizes
//	duration: 2s
//	warmup: 500ms
//	repeats: 2
//	matrix:
//	  readers: [1, 2]
//	  processors: [1, 2, 4]
//	  connections: [100, 1000]
//	  workloads: [hello, sleep1]
//	objective:
//	  p99_max: 20ms
//
// Workloads named in the matrix are looked up in Workloads, then among the
// built-in ones (BuiltinWorkloads).
//
// A spec with phases instead of a matrix is a phase run (see PhaseRun):
// one server, a workload that changes over time, sampled every second on
// the client and, from the server's Prometheus endpoint, on the server:
//
//	name: controller
//	sample: 1s
//	phases:
//	  - {name: hello, duration: 30s, connections: 100, workload: hello}
//	  - {name: sleep1, duration: 30s, connections: 1000, workload: sleep1}
//	  - {name: sleep50, duration: 30s, connections: 1000, workload: sleep50, rate: 8000}
//	  - name: mix
//	    duration: 30s
//	    connections: 500
//	    requests: [{path: /hello, weight: 3}, {path: "/sleep?ms=50"}]
//
// A phase run with against also runs the same phases once per listed
// static configuration, each against a server of its own started afresh,
// and compares the first run (the spec's own stages: self-sizing unless
// stages pins them) with the best of them, phase by phase (see
// PhaseComparison):
//
//	objective: {p99_max: 100ms}
//	against:
//	  - {readers: 1, writers: 1, processors: 8}
//	  - {readers: 1, writers: 1, processors: 256}
//
// Each configuration must give readers, processors and writers: a size
// without bounds pins its stage and turns its controller off, so the
// configuration is static; the run checks this on the server's
// quartet_stage_auto and quartet_stage_size and says so in its output.
// Queue capacity and max_conns not given are taken from stages.
type Spec struct {
	Name string `yaml:"name" json:"name"`
	// URL of an external server; empty runs an in-process Quartet built
	// from each point's stage sizes (Server: process runs `quartet serve`
	// instead). With a URL, stage-size dimensions cannot apply.
	URL    string `yaml:"url" json:"url,omitempty"`
	Server string `yaml:"server" json:"server,omitempty"`

	// Duration of each run: 3 s if left out; given, it must be above 0.
	Duration time.Duration `yaml:"duration" json:"duration_ns"`
	// Warmup precedes each point's measurement; in a phase run, each
	// run's first phase, with its load, unsampled.
	Warmup  time.Duration `yaml:"warmup" json:"warmup_ns"`
	Repeats int           `yaml:"repeats" json:"repeats"` // 1 if left out
	// Timeout per request: DefaultTimeout if left out (not 0),
	// negative for none.
	// Load shape shared by every point.
	Rate     float64       `yaml:"rate" json:"rate,omitempty"`
	Pipeline int           `yaml:"pipeline" json:"pipeline,omitempty"`
	Loops    int           `yaml:"loops" json:"loops,omitempty"`
	Timeout  time.Duration `yaml:"timeout" json:"timeout_ns,omitempty"`

	Matrix    Matrix                   `yaml:"matrix" json:"matrix"`
	Workloads map[string][]RequestSpec `yaml:"workloads" json:"workloads,omitempty"`
	Objective Objective                `yaml:"objective" json:"objective"`

	// Phases, in order, make this a phase run instead of a sweep.
	Phases []Phase `yaml:"phases" json:"phases,omitempty"`
	// Stages sizes the server a phase run starts (zero: its defaults,
	// which lets its own controllers size it).
	Stages ServerParams `yaml:"stages" json:"stages"`
	// Against lists static stage configurations to run the phases
	// against too, one fresh server each, for the per-phase comparison.
	Against []ServerParams `yaml:"against" json:"against,omitempty"`
	// MetricsURL is the server's Prometheus endpoint, for a url server;
	// the tool finds it for a server it starts.
	MetricsURL string `yaml:"metrics_url" json:"metrics_url,omitempty"`
	// MetricsMatch selects the server metrics sampled (a regular
	// expression on family names; DefaultMetricsMatch if empty).
	MetricsMatch string `yaml:"metrics_match" json:"metrics_match,omitempty"`
	// Sample is a phase run's sampling interval (1 s if zero).
	Sample time.Duration `yaml:"sample" json:"sample_ns,omitempty"`
}

// Phase is one stretch of a phase run's workload.
type Phase struct {
	Name     string        `yaml:"name" json:"name"`
	Duration time.Duration `yaml:"duration" json:"duration_ns"`
	// Connections (DefaultConns if 0), Rate (open loop when positive) and
	// Pipeline shape the phase's load.
	Connections int     `yaml:"connections" json:"connections"`
	Rate        float64 `yaml:"rate" json:"rate,omitempty"`
	Pipeline    int     `yaml:"pipeline" json:"pipeline,omitempty"`
	// Workload names a workload of the spec or a built-in one; Requests
	// gives the mix inline instead.
	Workload string        `yaml:"workload" json:"workload,omitempty"`
	Requests []RequestSpec `yaml:"requests" json:"requests,omitempty"`
}

// Matrix lists the values of each swept dimension, each at least 1; a
// dimension left out takes the server's default (or, for connections,
// DefaultConns).
type Matrix struct {
	Readers       []int    `yaml:"readers" json:"readers,omitempty"`
	Processors    []int    `yaml:"processors" json:"processors,omitempty"`
	Writers       []int    `yaml:"writers" json:"writers,omitempty"`
	QueueCapacity []int    `yaml:"queue_capacity" json:"queue_capacity,omitempty"`
	Connections   []int    `yaml:"connections" json:"connections,omitempty"`
	Workloads     []string `yaml:"workloads" json:"workloads,omitempty"`
}

// Objective picks the best point: the highest throughput among points
// whose p99 latency is at most P99Max (no bound when 0) and which saw no
// errors.
type Objective struct {
	P99Max time.Duration `yaml:"p99_max" json:"p99_max_ns,omitempty"`
}

// BuiltinWorkloads are the workloads a spec may name without defining
// them; they use Quartet's built-in endpoints (and the peers').
func BuiltinWorkloads() map[string][]RequestSpec {
	return map[string][]RequestSpec{
		"hello":   {{Path: "/hello"}},
		"sleep1":  {{Path: "/sleep?ms=1"}},
		"sleep50": {{Path: "/sleep?ms=50"}},
		"bytes4k": {{Path: "/bytes?n=4096"}},
		"bytes1m": {{Path: "/bytes?n=1048576"}}, // a 1 MiB file's worth of response
		"echo1k":  {{Method: "POST", Path: "/echo", BodySize: 1024}},
	}
}

// Errors of LoadSpec and Spec.validate.
var (
	// ErrSpec is returned (wrapped) for an invalid experiment spec.
	ErrSpec = errors.New("bench: bad sweep spec")
)

// LoadSpec reads a YAML spec.
func LoadSpec(path string) (*Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseSpec(b)
}

// ParseSpec parses a YAML spec and applies defaults.
func ParseSpec(b []byte) (*Spec, error) {
	var s Spec
	if err := strictyaml.Decode(b, &s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSpec, err)
	}
	// The keys as written: a value given as 0 or [] is not the same
	// mistake-proof thing as a key left out for its default.
	var raw map[string]any
	if err := strictyaml.Decode(b, &raw); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSpec, err)
	}
	if len(raw) == 0 {
		return nil, fmt.Errorf("%w: the spec is empty (give at least a name, a matrix or phases)", ErrSpec)
	}
	if err := s.checkGiven(raw); err != nil {
		return nil, err
	}
	if s.Name == "" {
		s.Name = "sweep"
	}
	if s.Duration <= 0 {
		s.Duration = 3 * time.Second
	}
	if s.Repeats <= 0 {
		s.Repeats = 1
	}
	if len(s.Phases) > 0 {
		if err := s.phaseDefaults(); err != nil {
			return nil, err
		}
	} else {
		if len(s.Matrix.Workloads) == 0 {
			s.Matrix.Workloads = []string{"hello"}
		}
		if len(s.Matrix.Connections) == 0 {
			s.Matrix.Connections = []int{DefaultConns}
		}
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

func (s *Spec) validate() error {
	for _, w := range s.Matrix.Workloads {
		if _, ok := s.workload(w); !ok {
			return fmt.Errorf("%w: workload %q is neither defined nor built in", ErrSpec, w)
		}
	}
	if s.URL != "" && (len(s.Matrix.Readers) > 0 || len(s.Matrix.Processors) > 0 ||
		len(s.Matrix.Writers) > 0 || len(s.Matrix.QueueCapacity) > 0) {
		return fmt.Errorf("%w: stage sizes cannot be swept against an external url", ErrSpec)
	}
	switch {
	case len(s.Against) > 0 && len(s.Phases) == 0:
		return fmt.Errorf("%w: against applies to a phase run (a spec with phases)", ErrSpec)
	case len(s.Against) > 0 && s.URL != "":
		return fmt.Errorf("%w: against needs servers the tool starts, not an external url", ErrSpec)
	}
	switch s.Server {
	case "", "inprocess", "process":
	default:
		return fmt.Errorf("%w: server %q: want inprocess or process", ErrSpec, s.Server)
	}
	for _, d := range s.dims() {
		for _, v := range d.values {
			// 0 is no size: the point would be labelled 0 and run the
			// default, which the key left out already asks for.
			if v < 1 {
				return fmt.Errorf("%w: matrix.%s: value %d: want at least 1 (leave the key out for the default)", ErrSpec, d.name, v)
			}
		}
	}
	return nil
}

// checkGiven refuses values that would be read as a default nobody
// chose, or as nothing: before, 'duration: 0s' silently became 3 s,
// 'connections: [0]' ran 10 connections labelled c=0, 'processors: [0]'
// the server's default, and 'repeats: -1', 'timeout: 0s' and
// 'p99_max: -5ms' passed. raw is the spec's keys as written.
func (s *Spec) checkGiven(raw map[string]any) error {
	given := func(key string) bool { _, ok := raw[key]; return ok }
	switch {
	case s.Duration < 0 || given("duration") && s.Duration == 0:
		return fmt.Errorf("%w: duration %v: want a duration above 0 (leave it out for 3s)", ErrSpec, s.Duration)
	case s.Warmup < 0:
		return fmt.Errorf("%w: warmup %v: want 0 (none) or more", ErrSpec, s.Warmup)
	case s.Repeats < 0 || given("repeats") && s.Repeats == 0:
		return fmt.Errorf("%w: repeats %d: want at least 1", ErrSpec, s.Repeats)
	case given("timeout") && s.Timeout == 0:
		return fmt.Errorf("%w: timeout 0s: want a duration above 0, or a negative one for none", ErrSpec)
	case s.Rate < 0:
		return fmt.Errorf("%w: rate %v: want 0 (closed loop) or more", ErrSpec, s.Rate)
	case s.Pipeline < 0:
		return fmt.Errorf("%w: pipeline %d: want 0 (one request in flight) or more", ErrSpec, s.Pipeline)
	case s.Loops < 0:
		return fmt.Errorf("%w: loops %d: want 0 (the default) or more", ErrSpec, s.Loops)
	case s.Objective.P99Max < 0:
		return fmt.Errorf("%w: objective.p99_max %v: want 0 (no bound) or more", ErrSpec, s.Objective.P99Max)
	case s.Sample < 0:
		return fmt.Errorf("%w: sample %v: want 0 (1s) or more", ErrSpec, s.Sample)
	}
	for i, p := range s.Phases {
		if p.Duration < 0 {
			return fmt.Errorf("%w: phases[%d].duration %v: want a duration above 0", ErrSpec, i, p.Duration)
		}
	}
	if m, ok := raw["matrix"].(map[string]any); ok {
		for key, v := range m {
			if list, ok := v.([]any); ok && len(list) == 0 {
				return fmt.Errorf("%w: matrix.%s: an empty list (leave the key out for the default)", ErrSpec, key)
			}
		}
	}
	return nil
}

// phaseDefaults fills and checks a phase run's spec.
func (s *Spec) phaseDefaults() error {
	m := s.Matrix
	if len(m.Readers)+len(m.Processors)+len(m.Writers)+len(m.QueueCapacity)+len(m.Connections)+len(m.Workloads) > 0 {
		return fmt.Errorf("%w: a spec has either a matrix (a sweep) or phases (a phase run), not both", ErrSpec)
	}
	if s.Sample <= 0 {
		s.Sample = time.Second
	}
	if s.Sample < 100*time.Millisecond {
		return fmt.Errorf("%w: sample %v: want at least 100ms", ErrSpec, s.Sample)
	}
	if s.URL != "" && s.Stages != (ServerParams{}) {
		return fmt.Errorf("%w: stages cannot be set for an external url", ErrSpec)
	}
	for i, a := range s.Against {
		if !pinned(a) || a.QueueCapacity < 0 || a.MaxConns < 0 {
			return fmt.Errorf("%w: against[%d] %+v: give readers, processors and writers, each positive (a static configuration pins every stage)", ErrSpec, i, a)
		}
	}
	for i := range s.Phases {
		p := &s.Phases[i]
		if p.Name == "" {
			p.Name = fmt.Sprintf("phase %d", i+1)
		}
		if p.Duration <= 0 {
			p.Duration = s.Duration
		}
		if p.Connections == 0 {
			p.Connections = DefaultConns
		}
		switch {
		case p.Connections < 0 || p.Rate < 0 || p.Pipeline < 0:
			return fmt.Errorf("%w: phase %q: negative connections, rate or pipeline", ErrSpec, p.Name)
		case p.Workload != "" && len(p.Requests) > 0:
			return fmt.Errorf("%w: phase %q: give a workload or requests, not both", ErrSpec, p.Name)
		case p.Workload == "" && len(p.Requests) == 0:
			p.Workload = "hello"
		}
		if p.Workload != "" {
			if _, ok := s.workload(p.Workload); !ok {
				return fmt.Errorf("%w: phase %q: workload %q is neither defined nor built in", ErrSpec, p.Name, p.Workload)
			}
		}
	}
	return nil
}

// mix is the phase's requests.
func (s *Spec) mix(p Phase) []RequestSpec {
	if len(p.Requests) > 0 {
		return p.Requests
	}
	w, _ := s.workload(p.Workload)
	return w
}

func (s *Spec) workload(name string) ([]RequestSpec, bool) {
	if w, ok := s.Workloads[name]; ok && len(w) > 0 {
		return w, true
	}
	w, ok := BuiltinWorkloads()[name]
	return w, ok
}

// Point is one cell of the matrix.
type Point struct {
	Workload string `json:"workload"`
	Conns    int    `json:"conns"`
	ServerParams
}

// dim is one numeric dimension of the matrix, for enumeration and plots.
type dim struct {
	name   string
	values []int
	get    func(*Point) *int
}

// dims lists the numeric dimensions in enumeration order (outermost
// first); workload is the outermost of all.
func (s *Spec) dims() []dim {
	return []dim{
		{"connections", s.Matrix.Connections, func(p *Point) *int { return &p.Conns }},
		{"readers", s.Matrix.Readers, func(p *Point) *int { return &p.Readers }},
		{"processors", s.Matrix.Processors, func(p *Point) *int { return &p.Processors }},
		{"writers", s.Matrix.Writers, func(p *Point) *int { return &p.Writers }},
		{"queue_capacity", s.Matrix.QueueCapacity, func(p *Point) *int { return &p.QueueCapacity }},
	}
}

// Points enumerates the matrix.
func (s *Spec) Points() []Point {
	pts := []Point{}
	for _, w := range s.Matrix.Workloads {
		pts = append(pts, Point{Workload: w})
	}
	for _, d := range s.dims() {
		if len(d.values) == 0 {
			continue
		}
		var next []Point
		for _, p := range pts {
			for _, v := range d.values {
				q := p
				*d.get(&q) = v
				next = append(next, q)
			}
		}
		pts = next
	}
	return pts
}

// sweptDims are the numeric dimensions with more than one value.
func (s *Spec) sweptDims() []dim {
	var out []dim
	for _, d := range s.dims() {
		if len(d.values) > 1 {
			vs := append([]int(nil), d.values...)
			sort.Ints(vs)
			d.values = vs
			out = append(out, d)
		}
	}
	return out
}

// String names the point for logs and tables.
func (p Point) String() string {
	s := p.Workload + " c=" + strconv.Itoa(p.Conns)
	add := func(name string, v int) {
		if v > 0 {
			s += " " + name + "=" + strconv.Itoa(v)
		}
	}
	add("R", p.Readers)
	add("P", p.Processors)
	add("W", p.Writers)
	add("Q", p.QueueCapacity)
	return s
}
