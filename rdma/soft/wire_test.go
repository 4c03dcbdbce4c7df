package soft

import "testing"

func TestDecodeTermWord(t *testing.T) {
	cases := []struct {
		name                string
		w                   uint32
		layer, etype, ecode uint8
		flags               uint32
		siw                 bool
	}{
		{"rfc remote protection with headers", termWord(layerRDMAP, rdmapEtypeRemoteProt, rdmapEcodeBaseBounds, termFlagM|termFlagD|termFlagR),
			layerRDMAP, rdmapEtypeRemoteProt, rdmapEcodeBaseBounds, termFlagM | termFlagD | termFlagR, false},
		{"rfc DDP tagged", termWord(layerDDP, ddpEtypeTagged, ddpEcodeTInvalidSTag, termFlagM|termFlagD),
			layerDDP, ddpEtypeTagged, ddpEcodeTInvalidSTag, termFlagM | termFlagD, false},
		// As siw sends RDMAP / remote protection / invalid STag with M, D, R:
		// bytes 0x10 0x00 0x07 0x00.
		{"siw remote protection", 0x10000700, layerRDMAP, rdmapEtypeRemoteProt, rdmapEcodeInvalidSTag, termFlagM | termFlagD | termFlagR, true},
		// siw DDP untagged / no buffer with M, D: 0x21 0x02 0x03 0x00.
		{"siw DDP untagged", 0x21020300, layerDDP, ddpEtypeUntagged, ddpEcodeUTMSNNoBuf, termFlagM | termFlagD, true},
		// siw LLP CRC error, no flags: layer 2 in the low nibble: 0x02 0x02.
		{"siw LLP no flags", 0x02020000, layerRDMAP, layerLLP, llpEcodeCRC, 0, false},
	}
	for _, c := range cases {
		l, e, code, f, siw := decodeTermWord(c.w)
		if l != c.layer || e != c.etype || code != c.ecode || f != c.flags || siw != c.siw {
			t.Errorf("%s: %#08x -> layer %d type %d code %#x flags %#x siw %v", c.name, c.w, l, e, code, f, siw)
		}
	}
}
