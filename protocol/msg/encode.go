package msg

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"unicode/utf8"

	"github.com/quartet-server/quartet/rdma/deliver"
)

// PutHead writes h's head (the header and, with FlagRDMA, the
// descriptor) at the start of dst and returns its size, h.HeadSize().
// The payload, h.Length bytes, is the caller's to send right after it:
// PutHead never sees it, so a reply's payload is written from wherever
// it lives (writev, sendfile, RDMA) with no copy.
//
// It checks h by the same rules as Parser.Next and returns the same
// errors, so it never writes a head the peer would refuse. It allocates
// nothing unless it fails.
func PutHead(dst []byte, h *Header) (int, error) {
	if err := h.checkHeader(); err != nil {
		return 0, err
	}
	n := h.HeadSize()
	if n == MaxHeadSize {
		if err := h.checkDescriptor(); err != nil {
			return 0, err
		}
	}
	if len(dst) < n {
		return 0, fmt.Errorf("quartet: msg: PutHead: %w: %d bytes for a %d-byte head", io.ErrShortBuffer, len(dst), n)
	}
	putHeader(dst, h)
	if n == MaxHeadSize {
		putDescriptor(dst[HeaderSize:MaxHeadSize], &h.RDMA)
	}
	return n, nil
}

// PutErrorFrame writes a whole error frame (head and body) into dst and
// returns its size: the reply to txid, or with txid 0 the connection's
// error. A message longer than MaxErrorMessage is cut at a UTF-8
// boundary, so an error can always be reported; dst of MaxErrorFrame
// bytes always suffices. Code 0 is not a code (ErrErrorBody).
func PutErrorFrame(dst []byte, txid uint64, code Code, message string) (int, error) {
	if code == 0 {
		return 0, fmt.Errorf("%w: code 0", ErrErrorBody)
	}
	if len(message) > MaxErrorMessage {
		cut := MaxErrorMessage
		for cut > 0 && !utf8.RuneStart(message[cut]) {
			cut--
		}
		message = message[:cut]
	}
	h := Header{Type: TypeReply, Flags: FlagError, TxID: txid, Length: uint32(2 + len(message))}
	n := HeaderSize + int(h.Length)
	if len(dst) < n {
		return 0, fmt.Errorf("quartet: msg: PutErrorFrame: %w: %d bytes for a %d-byte frame", io.ErrShortBuffer, len(dst), n)
	}
	putHeader(dst, &h)
	binary.BigEndian.PutUint16(dst[HeaderSize:], uint16(code))
	copy(dst[HeaderSize+2:], message)
	return n, nil
}

// ParseError decodes an error reply's payload: a 2-byte code and the
// message. The parser has already bounded its length.
func ParseError(payload []byte) (*Error, error) {
	if len(payload) < 2 || len(payload) > 2+MaxErrorMessage {
		return nil, fmt.Errorf("%w: %d bytes (2 to %d)", ErrErrorBody, len(payload), 2+MaxErrorMessage)
	}
	code := Code(binary.BigEndian.Uint16(payload))
	if code == 0 {
		return nil, fmt.Errorf("%w: code 0", ErrErrorBody)
	}
	return &Error{Code: code, Message: string(payload[2:])}, nil
}

func putHeader(b []byte, h *Header) {
	_ = b[HeaderSize-1]
	b[offVersion] = Version
	b[offType] = byte(h.Type)
	binary.BigEndian.PutUint16(b[offFlags:], uint16(h.Flags))
	binary.BigEndian.PutUint32(b[offLength:], h.Length)
	binary.BigEndian.PutUint64(b[offTxID:], h.TxID)
}

// getHeader decodes the fixed header; the version byte is the caller's.
func getHeader(b []byte, h *Header) {
	_ = b[HeaderSize-1]
	*h = Header{
		Type:   Type(b[offType]),
		Flags:  Flags(binary.BigEndian.Uint16(b[offFlags:])),
		Length: binary.BigEndian.Uint32(b[offLength:]),
		TxID:   binary.BigEndian.Uint64(b[offTxID:]),
	}
}

func putDescriptor(b []byte, d *Descriptor) {
	_ = b[DescriptorSize-1]
	b[descMode] = byte(d.Mode)
	b[descReason] = byte(d.Reason)
	binary.BigEndian.PutUint16(b[descPort:], d.Endpoint.Port())
	binary.BigEndian.PutUint32(b[descChannel:], d.Channel)
	binary.BigEndian.PutUint64(b[descOp:], d.Op)
	binary.BigEndian.PutUint64(b[descAddr:], d.Addr)
	binary.BigEndian.PutUint64(b[descLen:], d.Len)
	binary.BigEndian.PutUint32(b[descRKey:], d.RKey)
	var ip [16]byte // the zero address stays all zeros: "the connection's peer"
	if a := d.Endpoint.Addr(); a.IsValid() {
		ip = a.As16()
	}
	copy(b[descEndpoint:], ip[:])
}

func getDescriptor(b []byte, d *Descriptor) {
	_ = b[DescriptorSize-1]
	var addr netip.Addr
	if ip := [16]byte(b[descEndpoint : descEndpoint+16]); ip != [16]byte{} {
		addr = netip.AddrFrom16(ip).Unmap()
	}
	*d = Descriptor{
		Mode:     deliver.Mode(b[descMode]),
		Reason:   deliver.Reason(b[descReason]),
		Channel:  binary.BigEndian.Uint32(b[descChannel:]),
		Op:       binary.BigEndian.Uint64(b[descOp:]),
		Addr:     binary.BigEndian.Uint64(b[descAddr:]),
		Len:      binary.BigEndian.Uint64(b[descLen:]),
		RKey:     binary.BigEndian.Uint32(b[descRKey:]),
		Endpoint: netip.AddrPortFrom(addr, binary.BigEndian.Uint16(b[descPort:])),
	}
}
