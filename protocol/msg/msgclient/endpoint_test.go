package msgclient

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/quartet-server/quartet/internal/rdmatest"
	"github.com/quartet-server/quartet/rdma/deliver"
)

// NewEndpoint listens where the server can dial it back: on the address
// given, or on the one this host reaches the server from; a server that
// is not HOST:PORT is an error, not a guess.
func TestNewEndpoint(t *testing.T) {
	// The device's address on the VM tier, loopback on the soft provider.
	here := rdmatest.Addr()
	tests := []struct {
		name    string
		server  string
		local   netip.Addr
		want    netip.Addr
		wantErr bool
	}{
		{name: "routed", server: net.JoinHostPort(rdmatest.Host(), "7000"), want: here},
		{name: "given", server: "192.0.2.1:7000", local: here, want: here},
		{name: "no port", server: "127.0.0.1", wantErr: true},
		{name: "empty", server: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ep, err := NewEndpoint(rdmatest.Provider(t), tt.server, tt.local, 3*time.Second)
			if tt.wantErr {
				if err == nil {
					ep.Close()
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer ep.Close()
			if ep.Addr().Addr() != tt.want || ep.Addr().Port() == 0 || ep.OpTimeout() != 3*time.Second {
				t.Errorf("endpoint on %v, op timeout %v", ep.Addr(), ep.OpTimeout())
			}
		})
	}
}

// A Request.Into that its caller closed, before the request or while it
// was out, is an error naming it, not a panic on memory that is gone.
func TestIntoClosed(t *testing.T) {
	ep, err := NewEndpoint(rdmatest.Provider(t), net.JoinHostPort(rdmatest.Host(), "7000"), netip.Addr{}, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	into, err := ep.NewBuffer(4096)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := payloadIn(Reply{}, into, 100); err != nil {
		t.Fatalf("an open buffer: %v", err)
	}
	into.Close()
	r, err := payloadIn(Reply{}, into, 100)
	if !errors.Is(err, deliver.ErrBufferClosed) || r.Payload != nil {
		t.Errorf("a closed buffer: payload of %d bytes, %v; want none and ErrBufferClosed", len(r.Payload), err)
	}
	c := &Client{cfg: Config{Endpoint: ep}}
	if _, err := c.doRDMA(t.Context(), &Request{Payload: []byte("x"), Deliver: deliver.ModeServerWrites, Into: into}); !errors.Is(err, deliver.ErrBufferClosed) {
		t.Errorf("a request into a closed buffer: %v, want ErrBufferClosed", err)
	}
}
