package metrics

import (
	"errors"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/quartet-server/quartet/stages"
)

// Responses counted on many connections, so on every stripe, are exported
// as their sums.
func TestResponsesSumAcrossStripes(t *testing.T) {
	m := New()
	logged := m.Module().Logger
	want := map[string]float64{}
	var bytes, aborted float64
	for id := range uint64(3 * responseStripes) {
		for _, tc := range []struct {
			status int
			bytes  int64
			err    error
		}{
			{200, 100, nil},
			{404, 40, nil},
			{200, 7, errors.New("reset")},
		} {
			r := &stages.Response{Status: tc.status, BytesSent: tc.bytes, WriteErr: tc.err, Conn: &stages.Conn{ID: id}}
			logged(r)
			want[strconv.Itoa(r.Status)]++
			bytes += float64(r.BytesSent)
			if r.WriteErr != nil {
				aborted++
			}
		}
	}
	logged(&stages.Response{Status: 500, BytesSent: 1}) // no connection: stripe 0
	want["500"]++
	bytes++
	scrape := httptest.NewServer(m.Handler())
	defer scrape.Close()
	fams := scrapeFamilies(t, scrape.URL)
	got := map[string]float64{}
	for _, mt := range fams["quartet_responses_total"].GetMetric() {
		for _, l := range mt.GetLabel() {
			if l.GetName() == "code" {
				got[l.GetValue()] = mt.GetCounter().GetValue()
			}
		}
	}
	if len(got) != len(want) {
		t.Errorf("codes %v, want %v", got, want)
	}
	for code, n := range want {
		if got[code] != n {
			t.Errorf("code %s: %v, want %v", code, got[code], n)
		}
	}
	if v := fams["quartet_sent_bytes_total"].GetMetric()[0].GetCounter().GetValue(); v != bytes {
		t.Errorf("sent bytes %v, want %v", v, bytes)
	}
	if v := fams["quartet_responses_aborted_total"].GetMetric()[0].GetCounter().GetValue(); v != aborted {
		t.Errorf("aborted %v, want %v", v, aborted)
	}
}

// BenchmarkResponseLogged is the exporter's count of each response, from
// every P at once on connections of their own, as loops on several cores
// finish responses: ns/op is wall time per response across them.
//
//	go test -run '^$' -bench ResponseLogged -cpu 1,2 ./metrics
func BenchmarkResponseLogged(b *testing.B) {
	logged := New().Module().Logger
	var next atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := &stages.Response{Status: 200, BytesSent: 120, Conn: &stages.Conn{ID: next.Add(1)}}
		for pb.Next() {
			logged(r)
		}
	})
}
