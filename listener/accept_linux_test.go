package listener

import (
	"testing"

	"golang.org/x/sys/unix"
)

// Accepting allocates nothing: x/sys's Accept4 allocated about 250 bytes
// per connection (an escaping address buffer and the Sockaddr), garbage
// that let the heap, and so the RSS per idle connection, grow during a
// burst of connections.
func TestAcceptAllocatesNothing(t *testing.T) {
	ln, err := socket(unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ln)
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(ln, 64); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(ln)
	if err != nil {
		t.Fatal(err)
	}
	var peer peerAddr
	var clients []int
	defer func() {
		for _, fd := range clients {
			unix.Close(fd)
		}
	}()
	dial := func() {
		fd, err := socket(unix.AF_INET)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, fd)
		if err := unix.Connect(fd, sa); err != nil && err != unix.EINPROGRESS {
			t.Fatal(err)
		}
	}
	clients = make([]int, 0, 64)
	for range 21 { // AllocsPerRun's warm-up run and 20 more
		dial()
	}
	allocs := testing.AllocsPerRun(20, func() {
		nfd, remote, err := accept(ln, &peer)
		if err != nil {
			t.Fatalf("accept: %v", err)
		}
		unix.Close(nfd)
		if !remote.Addr().IsLoopback() || remote.Port() == 0 {
			t.Fatalf("peer address %v", remote)
		}
	})
	if allocs != 0 {
		t.Errorf("accept allocates %.1f times per connection, want 0", allocs)
	}
}
