package msg

import (
	"fmt"
	"github.com/quartet-server/quartet/rdma/deliver"
	"net/netip"
)

// The rules a head must meet, written once: Parser.Next applies them to
// what arrives and PutHead to what is sent, so a frame one side writes
// is a frame the other side reads. Stateful rules (a payload limit,
// which side may send a type, operation ids only growing) are the
// parser's alone. Every rule that leaves a field unused also requires it
// to be zero, so a head has exactly one encoding.

// checkHeader applies the rules of the fixed header.
func (h *Header) checkHeader() error {
	if h.Type < TypeRequest || h.Type > TypeCompletion {
		return fmt.Errorf("%w: %d", ErrType, uint8(h.Type))
	}
	if bad := h.Flags &^ flagsDefined; bad != 0 {
		return fmt.Errorf("%w: undefined bits %#04x", ErrFlags, uint16(bad))
	}
	if bad := h.Flags &^ allowedFlags[h.Type]; bad != 0 {
		return fmt.Errorf("%w: %s on a %s", ErrFlags, bad, h.Type)
	}
	switch h.Type {
	case TypeRequest:
		if h.TxID == 0 {
			return fmt.Errorf("%w: a request with transaction id 0", ErrTxID)
		}
	case TypeReply:
		if h.Flags.Has(FlagByRDMA) {
			if !h.Flags.Has(FlagRDMA) {
				return fmt.Errorf("%w: by-rdma without an RDMA descriptor", ErrFlags)
			}
			if h.Length != 0 {
				return fmt.Errorf("%w: %d bytes on a reply delivered by RDMA", ErrUnexpectedPayload, h.Length)
			}
		}
		if h.Flags.Has(FlagError) {
			if h.Flags.Has(FlagRDMA) {
				return fmt.Errorf("%w: an error reply with an RDMA descriptor", ErrFlags)
			}
			if h.Length < 2 || h.Length > 2+MaxErrorMessage {
				return fmt.Errorf("%w: %d bytes (2 to %d)", ErrErrorBody, h.Length, 2+MaxErrorMessage)
			}
		} else if h.TxID == 0 {
			return fmt.Errorf("%w: a reply with transaction id 0 that is not an error", ErrTxID)
		}
	case TypeCompletion:
		if !h.Flags.Has(FlagRDMA) {
			return fmt.Errorf("%w: a completion without an RDMA descriptor", ErrFlags)
		}
		if h.TxID != 0 {
			return fmt.Errorf("%w: a completion with transaction id %d (must be 0)", ErrTxID, h.TxID)
		}
		if h.Length != 0 {
			return fmt.Errorf("%w: %d bytes on a completion", ErrUnexpectedPayload, h.Length)
		}
	}
	return nil
}

// checkDescriptor applies the rules of the RDMA descriptor, which depend
// on the frame's type and flags (docs/messenger.md, "RDMA descriptor").
// The header must have passed checkHeader.
func (h *Header) checkDescriptor() error {
	d := &h.RDMA
	if d.Mode != deliver.ModeServerWrites && d.Mode != deliver.ModeClientReads {
		return fmt.Errorf("%w: unknown mode %d", ErrDescriptor, uint8(d.Mode))
	}
	if d.Op == 0 {
		return fmt.Errorf("%w: operation id 0", ErrDescriptor)
	}
	switch h.Type {
	case TypeRequest:
		a := d.Endpoint.Addr()
		switch {
		case d.Reason != 0:
			return mustBeZero("reason", h)
		case d.Channel != 0:
			return mustBeZero("channel", h)
		case d.Endpoint.Port() == 0:
			return fmt.Errorf("%w: a request without an endpoint port", ErrDescriptor)
		case a.Zone() != "":
			return fmt.Errorf("%w: endpoint address %s has a zone", ErrDescriptor, a)
		case a.IsValid() && a.IsUnspecified():
			return fmt.Errorf("%w: endpoint address %s (leave it zero to mean the connection's peer)", ErrDescriptor, a)
		}
		if d.Mode == deliver.ModeServerWrites {
			if d.Len == 0 {
				return fmt.Errorf("%w: a server-writes buffer of length 0", ErrDescriptor)
			}
		} else if d.Addr != 0 || d.RKey != 0 || d.Len != 0 {
			return mustBeZero("buffer", h)
		}
	case TypeReply:
		switch {
		case d.Endpoint != netip.AddrPort{}:
			return mustBeZero("endpoint", h)
		case h.Flags.Has(FlagByRDMA):
			if d.Reason != 0 {
				return mustBeZero("reason", h)
			}
			if d.Mode == deliver.ModeServerWrites && (d.Addr != 0 || d.RKey != 0) {
				return mustBeZero("address and key", h)
			}
		case d.Reason == 0:
			return fmt.Errorf("%w: a reply with its payload inline but no fallback reason", ErrDescriptor)
		case d.Channel != 0 || d.Addr != 0 || d.RKey != 0 || d.Len != 0:
			return mustBeZero("channel and region", h)
		}
	case TypeCompletion:
		switch {
		case d.Mode != deliver.ModeClientReads:
			return fmt.Errorf("%w: a completion for mode %s (only client-reads is confirmed)", ErrDescriptor, d.Mode)
		case d.Reason != 0 || d.Endpoint != netip.AddrPort{}:
			return mustBeZero("reason and endpoint", h)
		case d.Addr != 0 || d.RKey != 0 || d.Len != 0:
			return mustBeZero("region", h)
		}
	}
	return nil
}

func mustBeZero(field string, h *Header) error {
	what := h.Type.String()
	if h.Type == TypeReply && h.Flags.Has(FlagByRDMA) {
		what = h.RDMA.Mode.String() + " reply"
	} else if h.Type == TypeReply {
		what = "fallback reply"
	} else if h.Type == TypeRequest {
		what = h.RDMA.Mode.String() + " request"
	}
	return fmt.Errorf("%w: %s must be zero in a %s", ErrDescriptor, field, what)
}
