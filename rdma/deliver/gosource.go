package deliver

import (
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// GoSource is a Register that runs fn on a goroutine of its own, parked
// in Go's runtime poller on a duplicate of fd between events, instead
// of in a writer loop: for tools, tests and servers that have no event
// loop (a goroutine-per-connection server, the messenger's test server).
// fn runs on that one goroutine, never concurrently with itself, as it
// would in a loop. detach stops the goroutine and waits for it.
func GoSource(fd int, fn func()) (detach func() error, err error) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
	}
	// The duplicate shares the file status flags: it is non-blocking like
	// the original, so os.NewFile hands it to the runtime poller.
	f := os.NewFile(uintptr(dup), "rdma-completions")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		// The poller is edge-triggered: fn must consume what made the fd
		// readable (a CQ's Consume does), and returning false parks the
		// goroutine until the next edge. The first call, before any wait,
		// catches an event that is already pending. Closing f ends Read.
		_ = rc.Read(func(uintptr) bool {
			fn()
			return false
		})
	})
	var once sync.Once
	return func() error {
		var err error
		once.Do(func() {
			err = f.Close()
			wg.Wait()
		})
		return err
	}, nil
}
