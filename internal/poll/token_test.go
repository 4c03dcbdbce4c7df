package poll

import "testing"

func TestTokenFields(t *testing.T) {
	for _, tc := range []struct {
		name string
		kind Kind
		gen  uint32
		slot int
		// what the token gives back: the generation modulo 2^29, the
		// slot modulo 2^32
		wantGen  uint32
		wantSlot int
	}{
		{"zero", KindConn, 0, 0, 0, 0},
		{"waker", KindWaker, 0, 0, 0, 0},
		{"largest fields", KindListener, genMask, 1<<32 - 1, genMask, 1<<32 - 1},
		{"generation wraps", KindConn, genMask + 1, 5, 0, 5},
		{"high generation bits dropped", KindSource, 0xffffffff, 7, genMask, 7},
		{"all kinds fit", Kind(7), 3, 9, 3, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := MakeToken(tc.kind, tc.gen, tc.slot)
			if tok.Kind() != tc.kind || tok.Slot() != tc.wantSlot {
				t.Errorf("token %#x: kind %d slot %d, want %d and %d", uint64(tok), tok.Kind(), tok.Slot(), tc.kind, tc.wantSlot)
			}
			if !tok.Matches(tc.gen) || !tok.Matches(tc.wantGen) {
				t.Errorf("token %#x does not match generation %#x", uint64(tok), tc.gen)
			}
			if tok.Matches(tc.gen + 1) {
				t.Errorf("token %#x matches the next generation", uint64(tok))
			}
		})
	}
}

// A stale token (the slot's previous occupant) never matches, however
// the generation counter wrapped, until 2^29 reuses.
func TestTokenStale(t *testing.T) {
	for _, gen := range []uint32{0, 1, genMask - 1, genMask, 1 << 31, 0xffffffff} {
		old := MakeToken(KindConn, gen, 3)
		if old.Matches(gen + 1) {
			t.Errorf("generation %#x: stale token matches %#x", gen, gen+1)
		}
	}
}
