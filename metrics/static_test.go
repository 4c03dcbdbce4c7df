package metrics

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/quartet-server/quartet/runtime"
	"github.com/quartet-server/quartet/static"
)

// Every field of static.CacheStats reaches its series, as a counter or a
// gauge, and a source with nothing to report leaves the series out.
func TestStaticCollectorSeries(t *testing.T) {
	st := static.CacheStats{Hits: 11, Opens: 12, Revalidations: 13, Invalidations: 14, Evictions: 15,
		Entries: 16, EntriesMax: 17, InMemoryFiles: 18, InMemoryBytes: 19, InMemoryBudget: 20, InMemoryFileMax: 21,
		NotFoundHits: 22, Missing: 23, Errors: 24}
	series := []struct {
		name    string
		counter bool
		want    float64
	}{
		{"quartet_static_cache_hits_total", true, 11},
		{"quartet_static_files_opened_total", true, 12},
		{"quartet_static_revalidations_total", true, 13},
		{"quartet_static_cache_invalidations_total", true, 14},
		{"quartet_static_cache_evictions_total", true, 15},
		{"quartet_static_cache_entries", false, 16},
		{"quartet_static_cache_entries_max", false, 17},
		{"quartet_static_in_memory_files", false, 18},
		{"quartet_static_in_memory_bytes", false, 19},
		{"quartet_static_in_memory_budget_bytes", false, 20},
		{"quartet_static_in_memory_file_max_bytes", false, 21},
		{"quartet_static_not_found_hits_total", true, 22},
		{"quartet_static_cache_missing_entries", false, 23},
		{"quartet_static_errors_total", true, 24},
	}
	for _, tt := range []struct {
		name string
		ok   bool
	}{{"a directory", true}, {"no directory", false}} {
		t.Run(tt.name, func(t *testing.T) {
			m := New()
			m.Registry().MustRegister(Static(func() (static.CacheStats, bool) { return st, tt.ok }))
			scrape := httptest.NewServer(m.Handler())
			defer scrape.Close()
			fams := scrapeFamilies(t, scrape.URL)
			for _, s := range series {
				f := fams[s.name]
				if !tt.ok {
					if f != nil {
						t.Errorf("%s exported with no directory", s.name)
					}
					continue
				}
				typ := dto.MetricType_GAUGE
				if s.counter {
					typ = dto.MetricType_COUNTER
				}
				if f == nil || f.GetType() != typ || len(f.GetMetric()) != 1 {
					t.Errorf("%s: %v, want one %v", s.name, f, typ)
					continue
				}
				if got := counter(fams, s.name, nil); got != s.want {
					t.Errorf("%s = %v, want %v", s.name, got, s.want)
				}
				if !strings.Contains(f.GetHelp(), " ") {
					t.Errorf("%s has no help", s.name)
				}
			}
			n := 0
			for name := range fams {
				if strings.HasPrefix(name, "quartet_static_") {
					n++
				}
			}
			if want := len(series); !tt.ok {
				if n != 0 {
					t.Errorf("%d static series with no directory", n)
				}
			} else if n != want {
				t.Errorf("%d static series, the test knows %d", n, want)
			}
		})
	}
}

// A real Dir behind a real server: a file asked for twice is one open and
// one hit on the scrape.
func TestStaticScrapeOfADir(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "f.txt"), []byte("twelve bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := static.NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	m := New()
	m.Registry().MustRegister(Static(func() (static.CacheStats, bool) { return d.CacheStats(), true }))
	rc := runtime.DefaultConfig()
	rc.Addr, rc.Handler = "127.0.0.1:0", d
	rc.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := runtime.New(rc)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background())
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	for range 2 {
		resp, err := http.Get("http://" + srv.Addr().String() + "/f.txt")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "twelve bytes" {
			t.Fatalf("GET /f.txt: %d %q", resp.StatusCode, b)
		}
	}
	scrape := httptest.NewServer(m.Handler())
	defer scrape.Close()
	fams := scrapeFamilies(t, scrape.URL)
	for name, want := range map[string]float64{
		"quartet_static_files_opened_total":       1,
		"quartet_static_cache_hits_total":         1,
		"quartet_static_cache_entries":            1,
		"quartet_static_in_memory_files":          1,
		"quartet_static_in_memory_bytes":          12,
		"quartet_static_in_memory_budget_bytes":   static.DefaultInMemoryBudget,
		"quartet_static_in_memory_file_max_bytes": static.DefaultInMemory,
		"quartet_static_cache_entries_max":        static.DefaultCacheEntries,
	} {
		if got := counter(fams, name, nil); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}
