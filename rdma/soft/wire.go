package soft

// Wire formats of MPA (RFC 5044, with the enhanced connection setup of
// RFC 6581), DDP (RFC 5041) and RDMAP (RFC 5040), as the RFCs and the
// Linux kernel's siw (drivers/infiniband/sw/siw/iwarp.h) lay them out;
// decodeTermWord handles the one field where siw departs from the RFC.
// All fields are big endian except the MPA CRC, which is CRC32c stored
// little endian (the crc32c shash output the kernel puts on the wire).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// MPA request/reply frame (RFC 5044 section 7.1).
const (
	mpaKeyReq = "MPA ID Req Frame"
	mpaKeyRep = "MPA ID Rep Frame"

	mpaRRLen       = 20 // key[16] + bits[2] + pd_len[2]
	mpaMaxPrivData = 256
	mpaV2Len       = 4 // ird[2] + ord[2] at the start of private data

	mpaFlagMarkers  = 0x8000
	mpaFlagCRC      = 0x4000
	mpaFlagReject   = 0x2000
	mpaFlagEnhanced = 0x1000 // RFC 6581: IRD/ORD in private data
	mpaFlagGSO      = 0x0800 // siw extension, ignored
	mpaRevMask      = 0x00ff

	mpaV2PeerToPeer = 0x8000 // in ird
	mpaV2WriteRTR   = 0x8000 // in ord
	mpaV2ReadRTR    = 0x4000 // in ord
	mpaV2IRDORDMask = 0x3fff
)

// mpaRR is a parsed MPA request or reply.
type mpaRR struct {
	reply    bool
	rev      uint8
	bits     uint16
	enhanced bool   // RFC 6581 IRD/ORD present
	ird, ord uint16 // raw v2 words, flags included
	priv     []byte // private data after the v2 words
}

var errMPA = errors.New("soft: malformed MPA request/reply")

// parseMPAHeader checks the fixed 20-byte part and returns the private
// data length to read next.
func parseMPAHeader(b []byte, wantReply bool) (bits uint16, pdLen int, err error) {
	if len(b) < mpaRRLen {
		return 0, 0, fmt.Errorf("%w: short header", errMPA)
	}
	key := mpaKeyReq
	if wantReply {
		key = mpaKeyRep
	}
	if string(b[:16]) != key {
		return 0, 0, fmt.Errorf("%w: key %q", errMPA, b[:16])
	}
	bits = binary.BigEndian.Uint16(b[16:])
	pdLen = int(binary.BigEndian.Uint16(b[18:]))
	if pdLen > mpaMaxPrivData+mpaV2Len {
		return 0, 0, fmt.Errorf("%w: private data length %d", errMPA, pdLen)
	}
	if rev := bits & mpaRevMask; rev > 2 {
		return 0, 0, fmt.Errorf("%w: revision %d", errMPA, rev)
	}
	return bits, pdLen, nil
}

// parseMPA parses a whole MPA request or reply frame.
func parseMPA(b []byte, wantReply bool) (mpaRR, error) {
	bits, pdLen, err := parseMPAHeader(b, wantReply)
	if err != nil {
		return mpaRR{}, err
	}
	if len(b) != mpaRRLen+pdLen {
		return mpaRR{}, fmt.Errorf("%w: frame is %d bytes, header says %d", errMPA, len(b), mpaRRLen+pdLen)
	}
	rr := mpaRR{reply: wantReply, rev: uint8(bits & mpaRevMask), bits: bits}
	pd := b[mpaRRLen:]
	// A reject may omit the v2 words; a reply without the enhanced bit
	// carries none.
	if rr.rev == 2 && bits&mpaFlagEnhanced != 0 {
		if len(pd) < mpaV2Len {
			if bits&mpaFlagReject == 0 {
				return mpaRR{}, fmt.Errorf("%w: enhanced without IRD/ORD", errMPA)
			}
		} else {
			rr.enhanced = true
			rr.ird = binary.BigEndian.Uint16(pd)
			rr.ord = binary.BigEndian.Uint16(pd[2:])
			pd = pd[mpaV2Len:]
		}
	}
	if len(pd) > mpaMaxPrivData {
		return mpaRR{}, fmt.Errorf("%w: private data length %d", errMPA, len(pd))
	}
	rr.priv = append([]byte(nil), pd...)
	return rr, nil
}

// appendMPA appends an MPA request or reply frame to dst.
func appendMPA(dst []byte, rr mpaRR) []byte {
	key := mpaKeyReq
	if rr.reply {
		key = mpaKeyRep
	}
	bits := rr.bits&^mpaRevMask | uint16(rr.rev)
	pdLen := len(rr.priv)
	if rr.enhanced {
		bits |= mpaFlagEnhanced
		pdLen += mpaV2Len
	}
	dst = append(dst, key...)
	dst = binary.BigEndian.AppendUint16(dst, bits)
	dst = binary.BigEndian.AppendUint16(dst, uint16(pdLen))
	if rr.enhanced {
		dst = binary.BigEndian.AppendUint16(dst, rr.ird)
		dst = binary.BigEndian.AppendUint16(dst, rr.ord)
	}
	return append(dst, rr.priv...)
}

// RDMAP opcodes (RFC 5040 section 4.3).
const (
	opWrite     = 0x0
	opReadReq   = 0x1
	opReadResp  = 0x2
	opSend      = 0x3
	opSendInv   = 0x4
	opSendSE    = 0x5
	opSendSEInv = 0x6
	opTerminate = 0x7
	numOpcodes  = 8
)

// DDP/RDMAP control word (the 16 bits after the MPA length).
const (
	ddpTagged  = 0x8000
	ddpLast    = 0x4000
	ddpRsvd    = 0x3c00
	ddpVerMask = 0x0300
	ddpVer1    = 0x0100
	rdmapVMask = 0x00c0
	rdmapVer1  = 0x0040
	rdmapRsvd  = 0x0030
	rdmapOpMsk = 0x000f
)

// Untagged queue numbers (RFC 5040 section 5.1).
const (
	qnSend      = 0
	qnReadReq   = 1
	qnTerminate = 2
	numQN       = 3
)

// Header lengths, counting the 2-byte MPA length and the control word.
const (
	hdrTagged   = 16 // ctrl + stag[4] + to[8]
	hdrUntagged = 20 // ctrl + rsvd/inval stag[4] + qn[4] + msn[4] + mo[4]
	hdrReadReq  = 48 // untagged + sink stag/to + size + source stag/to
	hdrTerm     = 24 // untagged + layer/etype/ecode/flags word
	maxHdr      = hdrReadReq
	mpaHdr      = 2
	mpaCRCLen   = 4
	// maxULPDU is the largest MPA ULPDU the 16-bit length can carry.
	maxULPDU = 0xffff
)

// pktinfo is the per-opcode wire description, the analogue of siw's
// iwarp_pktinfo table; rx.go adds the handlers.
type pktinfo struct {
	name   string
	hdrLen int
	tagged bool
	qn     uint32 // untagged queue number
}

var pktinfos = [numOpcodes]pktinfo{
	opWrite:     {"RDMA Write", hdrTagged, true, 0},
	opReadReq:   {"RDMA Read Request", hdrReadReq, false, qnReadReq},
	opReadResp:  {"RDMA Read Response", hdrTagged, true, 0},
	opSend:      {"Send", hdrUntagged, false, qnSend},
	opSendInv:   {"Send with Invalidate", hdrUntagged, false, qnSend},
	opSendSE:    {"Send with Solicited Event", hdrUntagged, false, qnSend},
	opSendSEInv: {"Send with SE and Invalidate", hdrUntagged, false, qnSend},
	opTerminate: {"Terminate", hdrTerm, false, qnTerminate},
}

// ctrlWord is the control word for op with the given last flag.
func ctrlWord(op int, last bool) uint16 {
	w := uint16(ddpVer1|rdmapVer1) | uint16(op)
	if pktinfos[op].tagged {
		w |= ddpTagged
	}
	if last {
		w |= ddpLast
	}
	return w
}

// hdr is a decoded DDP/RDMAP header. Fields not carried by the opcode
// are zero.
type hdr struct {
	mpaLen uint16
	ctrl   uint16
	op     int
	// tagged
	stag uint32
	to   uint64
	// untagged
	inval    uint32 // Send with Invalidate: the STag to invalidate
	qn       uint32
	msn      uint32
	mo       uint32
	sinkSTag uint32 // Read Request
	sinkTO   uint64
	size     uint32
	srcSTag  uint32
	srcTO    uint64
	term     uint32 // Terminate control word
}

func (h *hdr) last() bool   { return h.ctrl&ddpLast != 0 }
func (h *hdr) tagged() bool { return h.ctrl&ddpTagged != 0 }

// Terminate error layers, types and codes (RFC 5040 section 4.8, RFC
// 5041 section 7, RFC 5044 section 8; names follow siw's iwarp.h).
const (
	layerRDMAP = 0x0
	layerDDP   = 0x1
	layerLLP   = 0x2

	rdmapEtypeCatastrophic = 0x0
	rdmapEtypeRemoteProt   = 0x1
	rdmapEtypeRemoteOp     = 0x2

	rdmapEcodeInvalidSTag  = 0x00
	rdmapEcodeBaseBounds   = 0x01
	rdmapEcodeAccessRights = 0x02
	rdmapEcodeSTagNotAssoc = 0x03
	rdmapEcodeTOWrap       = 0x04
	rdmapEcodeVersion      = 0x05
	rdmapEcodeOpcode       = 0x06
	rdmapEcodeCatStream    = 0x07
	rdmapEcodeCatGlobal    = 0x08
	rdmapEcodeCannotInval  = 0x09
	rdmapEcodeUnspecified  = 0xff

	ddpEtypeCatastrophic = 0x0
	ddpEtypeTagged       = 0x1
	ddpEtypeUntagged     = 0x2

	ddpEcodeTInvalidSTag  = 0x00
	ddpEcodeTBaseBounds   = 0x01
	ddpEcodeTSTagNotAssoc = 0x02
	ddpEcodeTTOWrap       = 0x03
	ddpEcodeTVersion      = 0x04

	ddpEcodeUTInvalidQN    = 0x01
	ddpEcodeUTMSNNoBuf     = 0x02
	ddpEcodeUTMSNRange     = 0x03
	ddpEcodeUTInvalidMO    = 0x04
	ddpEcodeUTMsgTooLong   = 0x05
	ddpEcodeUTVersion      = 0x06
	llpEtypeMPA            = 0x0
	llpEcodeStreamLost     = 0x01
	llpEcodeCRC            = 0x02
	llpEcodeFPDUStart      = 0x03
	llpEcodeInvalidReqResp = 0x04
	llpEcodeLocalCat       = 0x05
	llpEcodeInsufficientRD = 0x06
	llpEcodeNoMatchingRTR  = 0x07

	termFlagM = 0x8000 // DDP segment length valid
	termFlagD = 0x4000 // DDP header included
	termFlagR = 0x2000 // RDMAP header included
)

// decodeHdr decodes the header in b (hdrLen bytes for op, which the
// caller took from the control word).
func decodeHdr(b []byte, h *hdr) {
	be := binary.BigEndian
	h.mpaLen = be.Uint16(b)
	h.ctrl = be.Uint16(b[2:])
	h.op = int(h.ctrl & rdmapOpMsk)
	if h.tagged() {
		h.stag = be.Uint32(b[4:])
		h.to = be.Uint64(b[8:])
		return
	}
	h.inval = be.Uint32(b[4:])
	h.qn = be.Uint32(b[8:])
	h.msn = be.Uint32(b[12:])
	h.mo = be.Uint32(b[16:])
	switch {
	case h.op == opReadReq && len(b) >= hdrReadReq:
		h.sinkSTag = be.Uint32(b[20:])
		h.sinkTO = be.Uint64(b[24:])
		h.size = be.Uint32(b[32:])
		h.srcSTag = be.Uint32(b[36:])
		h.srcTO = be.Uint64(b[40:])
	case h.op == opTerminate && len(b) >= hdrTerm:
		h.term = be.Uint32(b[20:])
	}
}

// putTagged writes a tagged header (Write, Read Response) into b.
func putTagged(b []byte, op int, last bool, ulpdu int, stag uint32, to uint64) {
	be := binary.BigEndian
	be.PutUint16(b, uint16(ulpdu))
	be.PutUint16(b[2:], ctrlWord(op, last))
	be.PutUint32(b[4:], stag)
	be.PutUint64(b[8:], to)
}

// putUntagged writes the common untagged header into b.
func putUntagged(b []byte, op int, last bool, ulpdu int, inval, qn, msn, mo uint32) {
	be := binary.BigEndian
	be.PutUint16(b, uint16(ulpdu))
	be.PutUint16(b[2:], ctrlWord(op, last))
	be.PutUint32(b[4:], inval)
	be.PutUint32(b[8:], qn)
	be.PutUint32(b[12:], msn)
	be.PutUint32(b[16:], mo)
}

// padLen is the MPA pad after 2+ulpdu bytes (RFC 5044 section 4.3).
func padLen(ulpdu int) int { return -(mpaHdr + ulpdu) & 3 }

// decodeTermWord unpacks a received Terminate control word. Linux siw
// (through at least 6.x) fills it through little-endian bitfields, which
// swaps the layer and type nibbles and puts M/D/R in the low bits of the
// third byte, against RFC 5040's layout; we send the RFC layout and read
// both. The RFC reserves the low 13 bits, so set low bits there, with
// nothing in the RFC's M/D/R positions, mean the siw layout; a word with
// no flags at all is read the RFC way (RFC layer values above 2 do not
// exist, so those fall back to siw too).
func decodeTermWord(w uint32) (layer, etype, ecode uint8, flags uint32, siw bool) {
	b0, b1, b2, b3 := uint8(w>>24), uint8(w>>16), uint8(w>>8), uint8(w)
	siw = (b2&0x1f != 0 && b2&0xe0 == 0 && b3 == 0) || (b0>>4 > layerLLP && b0&0xf <= layerLLP)
	if !siw {
		return b0 >> 4, b0 & 0xf, b1, w & (termFlagM | termFlagD | termFlagR), false
	}
	if b2&1 != 0 {
		flags |= termFlagM
	}
	if b2&2 != 0 {
		flags |= termFlagD
	}
	if b2&4 != 0 {
		flags |= termFlagR
	}
	return b0 & 0xf, b0 >> 4, b1, flags, true
}

// termWord packs a Terminate's layer/type/code/flags word.
func termWord(layer, etype, ecode uint8, flags uint32) uint32 {
	return uint32(layer&0xf)<<28 | uint32(etype&0xf)<<24 | uint32(ecode)<<16 | flags
}

// TermError is a Terminate, sent or received, with its RFC 5040 layer,
// error type and code. It is what QP.Err returns after one. It matches
// rdma.ErrRemoteAccess for protection errors and rdma.ErrProtocol for
// the rest.
type TermError struct {
	Layer, Type, Code uint8
	Sent              bool // we sent it (the peer broke a rule) or received it
}

func (e *TermError) Error() string {
	dir := "received"
	if e.Sent {
		dir = "sent"
	}
	return fmt.Sprintf("soft: %s Terminate: %s", dir, termString(e.Layer, e.Type, e.Code))
}

// termString names a Terminate code for logs and errors.
func termString(layer, etype, ecode uint8) string {
	switch layer {
	case layerRDMAP:
		kind := map[uint8]string{rdmapEtypeCatastrophic: "catastrophic", rdmapEtypeRemoteProt: "remote protection", rdmapEtypeRemoteOp: "remote operation"}[etype]
		code := map[uint8]string{
			rdmapEcodeInvalidSTag: "invalid STag", rdmapEcodeBaseBounds: "base or bounds violation",
			rdmapEcodeAccessRights: "access rights violation", rdmapEcodeSTagNotAssoc: "STag not associated with stream",
			rdmapEcodeTOWrap: "TO wrap", rdmapEcodeVersion: "invalid RDMAP version", rdmapEcodeOpcode: "unexpected opcode",
			rdmapEcodeCatStream: "catastrophic to stream", rdmapEcodeCatGlobal: "catastrophic global",
			rdmapEcodeCannotInval: "STag cannot be invalidated", rdmapEcodeUnspecified: "unspecified",
		}[ecode]
		return fmt.Sprintf("RDMAP %s error: %s (type %d code %#x)", kind, code, etype, ecode)
	case layerDDP:
		var code string
		switch etype {
		case ddpEtypeTagged:
			code = map[uint8]string{ddpEcodeTInvalidSTag: "invalid STag", ddpEcodeTBaseBounds: "base or bounds violation",
				ddpEcodeTSTagNotAssoc: "STag not associated", ddpEcodeTTOWrap: "TO wrap", ddpEcodeTVersion: "invalid DDP version"}[ecode]
			code = "tagged buffer: " + code
		case ddpEtypeUntagged:
			code = map[uint8]string{ddpEcodeUTInvalidQN: "invalid QN", ddpEcodeUTMSNNoBuf: "no buffer for MSN",
				ddpEcodeUTMSNRange: "MSN out of range", ddpEcodeUTInvalidMO: "invalid MO", ddpEcodeUTMsgTooLong: "message too long",
				ddpEcodeUTVersion: "invalid DDP version"}[ecode]
			code = "untagged buffer: " + code
		default:
			code = "catastrophic"
		}
		return fmt.Sprintf("DDP error: %s (type %d code %#x)", code, etype, ecode)
	case layerLLP:
		code := map[uint8]string{llpEcodeStreamLost: "TCP stream lost", llpEcodeCRC: "received CRC error",
			llpEcodeFPDUStart: "bad FPDU", llpEcodeInvalidReqResp: "invalid MPA request/reply",
			llpEcodeLocalCat: "local catastrophic", llpEcodeInsufficientRD: "insufficient IRD",
			llpEcodeNoMatchingRTR: "no matching RTR"}[ecode]
		return fmt.Sprintf("MPA error: %s (code %#x)", code, ecode)
	}
	return fmt.Sprintf("layer %d type %d code %#x", layer, etype, ecode)
}
