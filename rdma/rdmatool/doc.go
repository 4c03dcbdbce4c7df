// Package rdmatool implements the quartet rdma subcommands: devices (list
// devices, transport, ports, limits), ping (rping's flags and wire
// exchange, so either side can be rdma-core's rping) and perf (RDMA
// write, read and send bandwidth and latency between two endpoints, in
// the manner of perftest).
//
// Each command is a function of a provider name, its arguments and its
// output streams; cmd/quartet only dispatches. Providers come from a
// Registry built here: the verbs provider when the binary is built with
// the verbs tag (provider_verbs.go), and the pure-Go soft provider always.
//
// # The rping exchange
//
// rdma-core's librdmacm/examples/rping.c runs this loop after rdma_cm
// connects (a 16-byte message is {be64 addr, be32 rkey, be32 len}):
//
//	client: send {start buffer}       server: recv it, RDMA Read it into its buffer
//	                                  server: send go-ahead (16 bytes)
//	client: recv go-ahead, send {sink buffer}
//	                                  server: recv it, RDMA Write its buffer there
//	                                  server: send go-ahead
//	client: recv go-ahead, compare sink with start, next ping
//
// The ping text is "rdma-ping-N: " followed by letters from 'A' to 'z'
// starting one further each ping, NUL-terminated at the buffer's end; the
// server writes back strlen+1 bytes. The client disconnects after -C
// pings; the server then sees its receive flushed and ends.
package rdmatool
