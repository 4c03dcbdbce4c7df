//go:build linux

package bench

import (
	"errors"
	"os"
	"testing"
)

func TestIdle(t *testing.T) {
	tests := []struct {
		name    string
		counts  []int
		wantErr error
	}{
		{name: "two steps", counts: []int{50, 200}},
		{name: "beyond any fd limit", counts: []int{20, 1 << 30}, wantErr: ErrFDLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, served := countingServer(t)
			var pts []IdlePoint
			var err error
			checkReleased(t, func() {
				pts, err = Idle(t.Context(), IdleConfig{URL: srv.URL + "/hello", Counts: tt.counts, PID: os.Getpid(), Settle: 1})
				srv.CloseClientConnections()
			})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			want := len(tt.counts)
			if tt.wantErr != nil {
				want--
			}
			if len(pts) != want {
				t.Fatalf("%d points, want %d: %+v", len(pts), want, pts)
			}
			for i, p := range pts {
				if p.Conns != tt.counts[i] || p.RSS == 0 {
					t.Errorf("point %d: %+v", i, p)
				}
			}
			if got := served.Load(); got != int64(pts[len(pts)-1].Conns) {
				t.Errorf("server saw %d requests, want one per connection (%d)", got, pts[len(pts)-1].Conns)
			}
		})
	}
}
