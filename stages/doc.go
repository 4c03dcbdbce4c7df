// Package stages holds what passes between Quartet's four stages and how it
// passes: the records (Conn, Request) that travel through the pipeline and
// the bounded, allocation-free queues and wake-ups that carry them from one
// stage to the next, with the per-stage counters every stage reports.
//
// The pipeline is Brian Pane's multiple-connections-per-thread design
// (httpd-dev, November 2002): a Listener accepts, Reader event loops parse
// requests, a bounded pool of Processors runs handlers that may block, and
// Writer event loops write responses, run the logger with the exact bytes
// sent, and give keep-alive connections back to their Reader.
package stages
