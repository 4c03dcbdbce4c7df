package gnetboot

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/panjf2000/gnet/v2/pkg/logging"
)

// Below an error nothing is written; errors are, with what gnet said.
func TestLoggerLevels(t *testing.T) {
	tests := []struct {
		name string
		log  func(logging.Logger)
		want string
	}{
		{"debug", func(l logging.Logger) { l.Debugf("x %d", 1) }, ""},
		{"info", func(l logging.Logger) { l.Infof("Launching gnet with %d event-loops", 2) }, ""},
		{"warn", func(l logging.Logger) { l.Warnf("w") }, ""},
		{"error", func(l logging.Logger) { l.Errorf("engine shutdown error: %v", "boom") }, "gnet: error: engine shutdown error: boom\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			tt.log(Logger(&b))
			if b.String() != tt.want {
				t.Errorf("wrote %q, want %q", b.String(), tt.want)
			}
		})
	}
}

// recording notes the INFO lines gnet logs through the logger it is
// given, and passes every call on.
type recording struct {
	logging.Logger
	mu    sync.Mutex
	infos []string
}

func (r *recording) Infof(format string, args ...any) {
	r.mu.Lock()
	r.infos = append(r.infos, format)
	r.mu.Unlock()
	r.Logger.Infof(format, args...)
}

type booted struct {
	gnet.BuiltinEventEngine
	eng chan gnet.Engine
}

func (b *booted) OnBoot(eng gnet.Engine) gnet.Action {
	b.eng <- eng
	return gnet.None
}

// An engine started as the peers start theirs logs its "Launching" line
// through Logger, which writes nothing of it: gnet's own logger, which
// writes it to stdout, is not used.
func TestEngineLaunchesQuietly(t *testing.T) {
	var out bytes.Buffer
	rec := &recording{Logger: Logger(&out)}
	h := &booted{eng: make(chan gnet.Engine, 1)}
	done := make(chan error, 1)
	go func() { done <- gnet.Run(h, "tcp://127.0.0.1:0", gnet.WithLogger(rec)) }()
	var eng gnet.Engine
	select {
	case eng = <-h.eng:
	case err := <-done:
		t.Fatalf("gnet.Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the engine did not boot")
	}
	if a, err := Addr(eng); err != nil || !strings.HasPrefix(a, "127.0.0.1:") {
		t.Errorf("Addr: %q, %v", a, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := eng.Stop(ctx); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("gnet.Run: %v", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	launched := false
	for _, f := range rec.infos {
		launched = launched || strings.HasPrefix(f, "Launching gnet")
	}
	if !launched || out.Len() != 0 {
		t.Errorf("gnet logged %q through the logger, which wrote %q", rec.infos, out.String())
	}
}
