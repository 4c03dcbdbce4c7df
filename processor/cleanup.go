package processor

import (
	"os"

	"github.com/quartet-server/quartet/stages"
)

// OnRecycle registers c to run when the response is recycled, after the
// writer has sent its last byte (or given up). A handler that queues a file
// region with SendFile hands the file's release to the response this way,
// so the worker moves on without waiting for a slow client.
func (w *ResponseWriter) OnRecycle(c stages.Cleanup) {
	w.resp.Cleanups = append(w.resp.Cleanups, c)
}

// CloseFile is a stages.Cleanup that closes f: OnRecycle(CloseFile(f))
// keeps a file given to SendFile open exactly as long as the writer needs it.
func CloseFile(f *os.File) stages.Cleanup { return fileCloser{f} }

type fileCloser struct{ f *os.File }

func (c fileCloser) Cleanup() { c.f.Close() }
