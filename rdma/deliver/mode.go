package deliver

import (
	"fmt"
	"strings"
)

// Mode is how a body travels: OSC's mod_rdma's two modes, or neither.
// The values are the messenger's wire values (docs/messenger.md, the
// RDMA descriptor's mode byte), so a protocol may carry a Mode as it is.
type Mode uint8

const (
	// ModeOff: not by RDMA (plain HTTP, an inline reply).
	ModeOff Mode = 0
	// ModeServerWrites: the client names a registered, remotely writable
	// buffer; the server RDMA-Writes the body into it and sends the
	// *written* message behind the Writes on the same queue pair.
	ModeServerWrites Mode = 1
	// ModeClientReads: the server exposes the body read-only and names it
	// in its reply; the client RDMA-Reads it and confirms.
	ModeClientReads Mode = 2
)

func (m Mode) String() string {
	switch m {
	case ModeOff:
		return "off"
	case ModeServerWrites:
		return "server-writes"
	case ModeClientReads:
		return "client-reads"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// ParseMode parses a mode name as headers and flags spell it; "" is
// ModeOff.
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "server-writes":
		return ModeServerWrites, nil
	case "client-reads":
		return ModeClientReads, nil
	case "off", "":
		return ModeOff, nil
	}
	return ModeOff, fmt.Errorf("deliver: unknown mode %q (server-writes, client-reads, off)", s)
}

// Reason says why a body that was asked for by RDMA goes over the
// protocol's own connection instead. The names are the first word of
// rdmahttp's X-RDMA-Fallback; the values are the messenger's wire values
// (the descriptor's reason byte). 0 means no fallback.
type Reason uint8

const (
	ReasonBadRequest      Reason = 1 // the request's RDMA fields are malformed or unusable
	ReasonForeignEndpoint Reason = 2 // the endpoint is not on the host the request came from
	ReasonConnectFailed   Reason = 3 // the server could not reach the client's RDMA endpoint
	ReasonBufferTooSmall  Reason = 4 // server-writes: the body is larger than the client's buffer
	ReasonRegisterFailed  Reason = 5 // mapping or registering memory failed
	// ReasonPostFailed: posting failed, including an op id already
	// exposed on the channel and a channel that failed meanwhile.
	ReasonPostFailed Reason = 6
	ReasonNoRDMA     Reason = 7 // no device serves this connection's writer loop
	ReasonTooLarge   Reason = 8 // the body is over Config.MaxStaging
	// ReasonTooManyExposures: client-reads: the client holds
	// MaxExposuresPerChannel unconfirmed exposures on this channel.
	ReasonTooManyExposures Reason = 9
	ReasonUnsupported      Reason = 10 // the protocol binding cannot ship this body by RDMA
	// ReasonRDMAFailed: the transfer was posted and failed (an error
	// completion, or none in Config.CompletionTimeout) while the reply was
	// still held, so the body follows over the protocol's connection.
	ReasonRDMAFailed Reason = 11
)

var reasonNames = [...]string{
	ReasonBadRequest:       "bad-request",
	ReasonForeignEndpoint:  "foreign-endpoint",
	ReasonConnectFailed:    "connect-failed",
	ReasonBufferTooSmall:   "buffer-too-small",
	ReasonRegisterFailed:   "register-failed",
	ReasonPostFailed:       "post-failed",
	ReasonNoRDMA:           "no-rdma",
	ReasonTooLarge:         "too-large",
	ReasonTooManyExposures: "too-many-exposures",
	ReasonUnsupported:      "unsupported",
	ReasonRDMAFailed:       "rdma-failed",
}

func (r Reason) String() string {
	if int(r) < len(reasonNames) && reasonNames[r] != "" {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// Fallback is the error of a delivery that did not happen: why (Reason)
// and the detail. The body is still the caller's, to send another way.
type Fallback struct {
	Reason Reason
	Detail string
	cause  error // the provider's error, where one caused it
}

// Unwrap is the provider's error behind the fallback, if any (a failed
// post's rdma.ErrQPState, say).
func (f *Fallback) Unwrap() error { return f.cause }

// Error is the reason, then the detail: "connect-failed: dial ...", as
// X-RDMA-Fallback carries it.
func (f *Fallback) Error() string {
	if f.Detail == "" {
		return f.Reason.String()
	}
	return f.Reason.String() + ": " + f.Detail
}

func fallback(r Reason, detail string) *Fallback { return &Fallback{Reason: r, Detail: detail} }

// Region is remote memory: an address, the key that reaches it and its
// length. A server-writes request names the client's buffer with one; a
// client-reads grant names the exposure.
type Region struct {
	Addr uint64
	RKey uint32
	Len  int64
}
