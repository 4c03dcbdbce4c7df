package rdmahttp

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/quartet-server/quartet/rdma"
	"github.com/quartet-server/quartet/rdma/deliver"
)

// TestClientCloseDuringGet: Close cuts the Get under way short (a server
// that has not answered in a minute) and waits for it to return before
// it frees the buffer that Get would read; later Gets and a second Close
// are refused and harmless.
func TestClientCloseDuringGet(t *testing.T) {
	entered := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
	}))
	defer srv.Close()
	c := newClient(t, ClientConfig{})

	got := make(chan error, 1)
	go func() {
		_, _, err := get(context.Background(), c, srv.URL+"/slow", deliver.ModeClientReads)
		got <- err
	}()
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the Get never reached the server")
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close still waiting 10 s after it began, for a Get it should have ended")
	}
	select {
	case err := <-got:
		if !errors.Is(err, ErrClientClosed) || !errors.Is(err, rdma.ErrClosed) {
			t.Errorf("the Get under way at Close: %v, want ErrClientClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the Get under way still running 10 s after Close")
	}
	if _, _, err := get(context.Background(), c, srv.URL+"/again", deliver.ModeClientReads); !errors.Is(err, ErrClientClosed) {
		t.Errorf("Get after Close: %v, want ErrClientClosed", err)
	}
	if _, err := c.ReadRaw(context.Background(), 1, 0, 0, 1); !errors.Is(err, ErrClientClosed) {
		t.Errorf("ReadRaw after Close: %v, want ErrClientClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
