package processor

import (
	"time"

	"github.com/quartet-server/quartet/stages"
)

// route is how the pool serves the requests of one protocol.
type route uint8

const (
	routeNone    route = iota // no protocol has the id: a wiring bug; the request is dropped
	routeHandler              // the Handler, with a ResponseWriter (a stages.HandlerProtocol)
	routeServe                // the protocol's own Serve
)

// routes reads the protocol table once, so that serving a request costs
// an index, not a type assertion.
func routes(protocols []stages.Protocol) []route {
	r := make([]route, len(protocols))
	for i, p := range protocols {
		switch p.(type) {
		case nil:
		case stages.HandlerProtocol:
			r[i] = routeHandler
		default:
			r[i] = routeServe
		}
	}
	return r
}

// routeOf is how req is served. A pool given no protocols serves every
// request with its Handler.
func (p *Pool) routeOf(req *stages.Request) route {
	c := req.Conn
	if c == nil || len(p.routes) == 0 {
		return routeHandler
	}
	if id := int(c.Protocol); id < len(p.routes) {
		return p.routes[id]
	}
	return routeNone
}

// serveFramed runs a request of a protocol that frames its own replies
// (stages.Protocol) on this worker: the protocol's Serve, with no
// ResponseWriter. Serve takes the request and the response's producer
// side over (a dispatcher may reply after it returns, from another
// goroutine), so everything that reads them is done before, and the class
// is kept aside for Finished.
func (p *Pool) serveFramed(req *stages.Request, now time.Time, waited time.Duration) {
	c := req.Conn
	p.running.Add(1)
	c.SetPhase(stages.PhaseRunning)
	class := req.Class
	resp := p.responses()
	resp.Begin(c, req, now)
	p.cfg.Protocols[c.Protocol].Serve(resp, req) // req and resp are the protocol's from here
	took := time.Since(now)
	if p.counters != nil {
		p.counters.Service.Record(took)
	}
	p.in.FinishedClass(class, waited, took, now.Add(took))
	p.running.Add(-1)
}
