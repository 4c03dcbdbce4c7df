package runtime

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/stages"
)

// A writer loop added while serving takes its share of the keep-alive
// connections already open, at their next response (a writer owns no
// connection between responses), except those a module pinned to their
// loop (Conn.PinWriter: RDMA state lives there).
func TestWriterLoopAddedTakesOpenConnections(t *testing.T) {
	tests := []struct {
		name  string
		pin   bool
		moved bool // the new loop writes for connections opened before it
	}{
		{"unpinned move", false, true},
		{"pinned stay", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := processor.HandlerFunc(func(w *processor.ResponseWriter, r *stages.Request) {
				if tt.pin {
					r.Conn.PinWriter()
				}
				w.Write([]byte("ok"))
			})
			s := startServer(t, Config{Handler: h, Writers: 1, Processors: 2, NoInline: true})
			const conns = 8
			var cs []net.Conn
			var brs []*bufio.Reader
			for range conns {
				c, err := net.Dial("tcp", s.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				cs, brs = append(cs, c), append(brs, bufio.NewReader(c))
			}
			roundTrip := func() {
				t.Helper()
				for i, c := range cs {
					c.SetDeadline(time.Now().Add(10 * time.Second))
					if _, err := fmt.Fprintf(c, "GET /x HTTP/1.1\r\nHost: t\r\n\r\n"); err != nil {
						t.Fatal(err)
					}
					resp, err := http.ReadResponse(brs[i], nil)
					if err != nil {
						t.Fatalf("connection %d: %v", i, err)
					}
					resp.Body.Close()
				}
			}
			roundTrip()
			if _, err := s.ChangeStage(StageWriter, StageChange{Size: 2, Min: 1, Max: 2}); err != nil {
				t.Fatal(err)
			}
			before := s.writers.at(1).Counts().Taken
			for range 3 {
				roundTrip()
			}
			took := s.writers.at(1).Counts().Taken - before
			if tt.moved && took == 0 {
				t.Errorf("the writer loop added took no response of the %d connections open before it", conns)
			}
			if !tt.moved && took != 0 {
				t.Errorf("the writer loop added took %d responses of pinned connections", took)
			}
		})
	}
}
