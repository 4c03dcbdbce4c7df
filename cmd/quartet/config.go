package main

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// serveOptions is every setting of quartet serve. Each field is a flag and
// a key of the --config file (YAML), under the same name with dashes.
type serveOptions struct {
	Addr          string        `yaml:"addr" help:"listen address host:port"`
	Root          string        `yaml:"root" help:"serve static files from this directory (default: the embedded sample site)"`
	Listeners     int           `yaml:"listeners" help:"accept loops (more than one uses SO_REUSEPORT)"`
	ReusePort     bool          `yaml:"reuseport" help:"set SO_REUSEPORT on the listening socket"`
	Readers       int           `yaml:"readers" help:"reader event loops (R)"`
	Processors    int           `yaml:"processors" help:"handler places (P): alone, pins the pool at this size; with processors-min/max, where the controller starts (default: sized by the controller)"`
	ProcessorsMin int           `yaml:"processors-min" help:"the processor controller's lower bound (default: GOMAXPROCS)"`
	ProcessorsMax int           `yaml:"processors-max" help:"the processor controller's upper bound (default: 1024 × GOMAXPROCS)"`
	QueueWait     time.Duration `yaml:"queue-wait-target" help:"refuse with 503 and Retry-After a request that would wait longer than this for a processor (negative: never refuse)"`
	Writers       int           `yaml:"writers" help:"writer event loops (W)"`
	Queue         int           `yaml:"queue" help:"capacity of each hand-off queue"`
	MaxConns      int           `yaml:"max-conns" help:"open connections at most (0: no limit)"`
	MaxBody       int64         `yaml:"max-body" help:"request body limit in bytes (413 beyond)"`
	HeaderTimeout time.Duration `yaml:"header-timeout" help:"time to receive a request's headers (408 beyond)"`
	IdleTimeout   time.Duration `yaml:"idle-timeout" help:"keep-alive idle timeout"`
	WriteTimeout  time.Duration `yaml:"write-timeout" help:"drop a client that reads nothing this long"`
	AccessLog     string        `yaml:"access-log" help:"access log in combined format: a file, or - for stdout (default: none)"`
	MetricsAddr   string        `yaml:"metrics-addr" help:"serve Prometheus /metrics on this address (default: off)"`
	Pprof         bool          `yaml:"pprof" help:"also serve /debug/pprof on --metrics-addr"`
	Admin         bool          `yaml:"admin" help:"also serve /admin/stages on --metrics-addr, to read and change stage sizes while serving (answers loopback clients only)"`
	RDMA          string        `yaml:"rdma" help:"deliver bodies by RDMA to clients that ask (docs/rdma-http.md): off, soft, verbs, or auto (verbs where a device exists, else soft)"`
	RDMAAddr      string        `yaml:"rdma-addr" help:"local IP whose RDMA device serves RDMA clients (default: the provider's first device)"`
	RDMADial      time.Duration `yaml:"rdma-dial-timeout" help:"connecting to a client's RDMA endpoint may take this long before the body goes over TCP"`
}

// loadConfigFile overlays the YAML file at path on o. Every error names the
// file and the key: an unknown key, a value of the wrong type, or (from
// validate) a value out of range.
func loadConfigFile(path string, o *serveOptions) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil // empty file: nothing to overlay
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("config %s: line %d: want a mapping of key: value", path, root.Line)
	}
	fields := map[string]reflect.Value{}
	v := reflect.ValueOf(o).Elem()
	for i := 0; i < v.NumField(); i++ {
		fields[v.Type().Field(i).Tag.Get("yaml")] = v.Field(i)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, val := root.Content[i], root.Content[i+1]
		f, ok := fields[k.Value]
		if !ok {
			return fmt.Errorf("config %s: line %d: unknown key %q (known: %s)", path, k.Line, k.Value, knownKeys(fields))
		}
		if seen[k.Value] {
			return fmt.Errorf("config %s: line %d: key %q given twice", path, k.Line, k.Value)
		}
		seen[k.Value] = true
		if err := val.Decode(f.Addr().Interface()); err != nil {
			return fmt.Errorf("config %s: line %d: key %q: value %q is not a %s", path, val.Line, k.Value, val.Value, typeName(f.Type()))
		}
	}
	return nil
}

func knownKeys(fields map[string]reflect.Value) string {
	var ks []string
	for k := range fields {
		ks = append(ks, k)
	}
	sortStrings(ks)
	return strings.Join(ks, ", ")
}

func typeName(t reflect.Type) string {
	switch {
	case t == reflect.TypeOf(time.Duration(0)):
		return "duration (like 30s)"
	case t.Kind() == reflect.Bool:
		return "boolean"
	case t.Kind() == reflect.String:
		return "string"
	}
	return "whole number"
}

// validate names the first setting that cannot work, by its key.
func (o *serveOptions) validate() error {
	bad := func(key string, v any, why string) error {
		return fmt.Errorf("%s = %v: %s", key, v, why)
	}
	switch {
	case o.Addr == "":
		return bad("addr", `""`, "need host:port")
	case o.Listeners < 1:
		return bad("listeners", o.Listeners, "must be at least 1")
	case o.Readers < 1 || o.Readers > 1024:
		return bad("readers", o.Readers, "must be 1..1024")
	case o.Processors < 0 || o.Processors > 1<<16:
		return bad("processors", o.Processors, "must be 0 (sized by the controller) to 65536")
	case o.Writers < 1 || o.Writers > 1024:
		return bad("writers", o.Writers, "must be 1..1024")
	case o.Queue < 2 || o.Queue > 1<<24:
		return bad("queue", o.Queue, "must be 2..16777216")
	case o.MaxConns < 0:
		return bad("max-conns", o.MaxConns, "must be 0 (no limit) or more")
	case o.MaxBody < 1:
		return bad("max-body", o.MaxBody, "must be at least 1")
	case o.HeaderTimeout <= 0:
		return bad("header-timeout", o.HeaderTimeout, "must be positive")
	case o.IdleTimeout <= 0:
		return bad("idle-timeout", o.IdleTimeout, "must be positive")
	case o.WriteTimeout <= 0:
		return bad("write-timeout", o.WriteTimeout, "must be positive")
	case o.Pprof && o.MetricsAddr == "":
		return errors.New("pprof = true needs metrics-addr")
	case o.Admin && o.MetricsAddr == "":
		return errors.New("admin = true needs metrics-addr")
	case o.RDMADial <= 0:
		return bad("rdma-dial-timeout", o.RDMADial, "must be positive")
	case o.RDMA != "off" && o.RDMA != "soft" && o.RDMA != "verbs" && o.RDMA != "auto":
		return bad("rdma", o.RDMA, "must be off, soft, verbs or auto")
	}
	return nil
}
