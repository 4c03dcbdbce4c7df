package processor

import (
	"time"

	"github.com/quartet-server/quartet/stages"
)

// serveFramed runs a framed protocol's request (stages.Protocol) on this
// worker: the protocol's Serve, with no ResponseWriter, since the
// protocol frames its reply into the response's buckets itself. Serve
// takes the request and the response's producer side over (a dispatcher
// may reply after it returns, from another goroutine), so everything that
// reads them is done before, and the class is kept aside for Finished.
// A request whose connection speaks a protocol no entry serves is
// dropped and its connection closed: a wiring bug, not the client's.
func (p *Pool) serveFramed(req *stages.Request, now time.Time, waited time.Duration) {
	c := req.Conn
	id := int(c.Protocol)
	if id >= len(p.cfg.Protocols) || p.cfg.Protocols[id] == nil {
		p.in.Finished(req, waited, 0, now)
		p.drop(req, now)
		return
	}
	p.running.Add(1)
	c.SetPhase(stages.PhaseRunning)
	class := req.Class
	resp := p.responses()
	resp.Begin(c, req, now)
	p.cfg.Protocols[id].Serve(resp, req) // req and resp are the protocol's from here
	took := time.Since(now)
	if p.counters != nil {
		p.counters.Service.Record(took)
	}
	p.in.FinishedClass(class, waited, took, now.Add(took))
	p.running.Add(-1)
}
