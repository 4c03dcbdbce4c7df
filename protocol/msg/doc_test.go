package msg

import (
	"encoding/hex"
	"github.com/quartet-server/quartet/rdma/deliver"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDocExamples keeps the byte examples in docs/messenger.md true: each
// is encoded here and must appear in the page's hex dumps.
func TestDocExamples(t *testing.T) {
	page, err := os.ReadFile("../../docs/messenger.md")
	if err != nil {
		t.Fatal(err)
	}
	// The page's dumps: indented lines of hex byte pairs, consecutive
	// lines joined, anything after the last pair (annotations) dropped.
	var dumps []string
	var cur strings.Builder
	pair := regexp.MustCompile(`^[0-9a-f]{2}$`)
	for _, line := range strings.Split(string(page), "\n") {
		if !strings.HasPrefix(line, "    ") {
			if cur.Len() > 0 {
				dumps = append(dumps, cur.String())
				cur.Reset()
			}
			continue
		}
		for _, tok := range strings.Fields(line) {
			if !pair.MatchString(tok) {
				break
			}
			cur.WriteString(tok)
		}
	}
	examples := map[string][]byte{}
	var b [MaxErrorFrame]byte
	for name, h := range map[string]Header{
		"13-byte request": {Type: TypeRequest, Flags: FlagUnordered, TxID: 1, Length: 13},
		"13-byte reply":   {Type: TypeReply, TxID: 1, Length: 13},
		"server-writes request": {Type: TypeRequest, Flags: FlagRDMA | FlagUnordered, TxID: 2, RDMA: Descriptor{
			Mode: deliver.ModeServerWrites, Op: 7, Addr: 0x7f3a00000000, RKey: 0x1234, Len: 1 << 20,
			Endpoint: netip.MustParseAddrPort("10.0.0.2:7471")}},
	} {
		n, err := PutHead(b[:], &h)
		if err != nil {
			t.Fatal(err)
		}
		examples[name] = append([]byte(nil), b[:n]...)
	}
	n, _ := PutErrorFrame(b[:], 0, CodeVersion, "bad")
	examples["version error"] = b[:n-len("bad")]
	for name, want := range examples {
		found := false
		for _, d := range dumps {
			found = found || strings.Contains(d, hex.EncodeToString(want))
		}
		if !found {
			t.Errorf("docs/messenger.md has no dump of the %s: % x", name, want)
		}
	}
}
