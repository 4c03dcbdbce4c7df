package msg_test

import (
	"fmt"
	"strings"
	"sync"

	"github.com/quartet-server/quartet/protocol/msg"
)

// printHook stands in for a transport: it prints each reply's frame.
type printHook struct {
	mu   sync.Mutex
	wg   *sync.WaitGroup
	head [msg.MaxErrorFrame]byte
}

func (h *printHook) SendReply(m *msg.Message, r msg.Reply) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	defer h.wg.Done()
	if r.Code != 0 {
		n, _ := msg.PutErrorFrame(h.head[:], m.Header.TxID, r.Code, string(r.Payload))
		fmt.Printf("txid %d: error frame of %d bytes\n", m.Header.TxID, n)
		return nil
	}
	reply := msg.Header{Type: msg.TypeReply, TxID: m.Header.TxID, Length: uint32(len(r.Payload))}
	n, err := msg.PutHead(h.head[:], &reply)
	if err != nil {
		return err
	}
	fmt.Printf("txid %d: %d-byte head, then %q\n", m.Header.TxID, n, r.Payload)
	return nil
}

// A dispatcher that answers at once or later, from another goroutine:
// its replies leave in the order they are sent, and the client matches
// them to requests by transaction id.
func ExampleDispatcher() {
	var wg sync.WaitGroup
	hook := &printHook{wg: &wg}
	slow := make(chan struct{})
	d := msg.DispatcherFunc(func(m *msg.Message) {
		switch string(m.Payload) {
		case "slow":
			go func() {
				<-slow
				m.SendReply(msg.Reply{Payload: []byte("done at last")})
			}()
		case "upper":
			m.SendReply(msg.Reply{Payload: []byte(strings.ToUpper("upper"))})
		default:
			m.SendReply(msg.Reply{Code: msg.CodeUnsupported, Payload: []byte("what is " + string(m.Payload) + "?")})
		}
	})

	// The transport's side: parse three requests and dispatch each.
	var stream []byte
	for i, p := range []string{"slow", "upper", "nonsense"} {
		h := msg.Header{Type: msg.TypeRequest, Flags: msg.FlagUnordered, TxID: uint64(i + 1), Length: uint32(len(p))}
		head := make([]byte, msg.MaxHeadSize)
		n, _ := msg.PutHead(head, &h)
		stream = append(append(stream, head[:n]...), p...)
	}
	parser := msg.NewParser(msg.RoleServer, msg.Limits{})
	msgs := make([]msg.Message, 3)
	wg.Add(len(msgs))
	for i := range msgs {
		var h msg.Header
		n, err := parser.Next(stream, &h)
		if err != nil {
			panic(err)
		}
		payload := parser.Payload(stream[n:])
		stream = stream[n+len(payload):]
		msgs[i].Reset(&h, payload, hook)
		d.Dispatch(&msgs[i])
	}
	close(slow)
	wg.Wait()
	// Output:
	// txid 2: 16-byte head, then "UPPER"
	// txid 3: error frame of 35 bytes
	// txid 1: 16-byte head, then "done at last"
}
