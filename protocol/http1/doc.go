// Package http1 is HTTP/1.1's wire format, written once: the request-head
// parser with its limits and errors (each error carrying the status it is
// answered with), the chunked body decoder, and the bytes of the responses
// the server frames itself: status lines, chunk framing, 100 Continue, and
// the short error responses the stages answer with when a request is not
// served (a malformed or timed-out request, or one shed under overload).
//
// The package knows nothing of sockets, loops or goroutines: it turns
// bytes into requests and statuses into bytes, so the stages that move the
// bytes (reader, processor, writer) need not know HTTP, and the parsers can
// be fuzzed on their own (go test -fuzz FuzzParse, FuzzChunked).
package http1
