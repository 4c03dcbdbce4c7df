package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/quartet-server/quartet/static"
)

// Static exports a static.Dir's open-file cache (static.Dir.CacheStats),
// read at scrape time like the stage counters, so serving a file pays
// nothing for it. stats is called at every scrape: a server that replaces
// its Dir (quartet serve on SIGHUP) registers once and has stats read
// whichever is current; its counters then start again from zero, which
// Prometheus takes as a counter reset. ok false (no directory served now,
// as with the embedded sample site, whose files are all in memory from
// the start) leaves the series out rather than report a cache that is not
// there. Register it on Metrics.Registry, once: its series carry no label
// that would tell two directories apart.
func Static(stats func() (s static.CacheStats, ok bool)) prometheus.Collector {
	return staticCollector(stats)
}

type staticCollector func() (static.CacheStats, bool)

var (
	descStaticHits   = prometheus.NewDesc("quartet_static_cache_hits_total", "Requests given a file the open-file cache already had open (fresh, found unchanged by a revalidation, or being opened for a request that arrived with it): hits / (hits + files opened) is the hit ratio.", nil, nil)
	descStaticOpens  = prometheus.NewDesc("quartet_static_files_opened_total", "Files the open-file cache opened: a name's first request, and the first after its entry was evicted or invalidated. Requests for missing files are not counted.", nil, nil)
	descStaticRevals = prometheus.NewDesc("quartet_static_revalidations_total", "Checks of a cached file against the disk (one stat each), made when its entry was last checked longer ago than the revalidation interval.", nil, nil)
	descStaticInval  = prometheus.NewDesc("quartet_static_cache_invalidations_total", "Cache entries dropped because a revalidation found their file rewritten, replaced or removed.", nil, nil)
	descStaticEvict  = prometheus.NewDesc("quartet_static_cache_evictions_total", "Cache entries dropped to make room for another in a full cache (see quartet_static_cache_entries_max).", nil, nil)
	descStaticNF     = prometheus.NewDesc("quartet_static_not_found_hits_total", "Requests answered 404 from the cache's memory of a name found missing (checked within the revalidation interval), without touching the disk.", nil, nil)
	descStaticErrs   = prometheus.NewDesc("quartet_static_errors_total", "Requests answered 503 or 500 because their file could not be opened for a reason other than its absence or permissions (a full fd table, a disk error); the server logs which.", nil, nil)
	descStaticMiss   = prometheus.NewDesc("quartet_static_cache_missing_entries", "Names the cache remembers as missing now, bounded apart from quartet_static_cache_entries (a quarter of its bound, at least 16).", nil, nil)
	descStaticEnts   = prometheus.NewDesc("quartet_static_cache_entries", "Names in the open-file cache now, each with its file open.", nil, nil)
	descStaticEntMax = prometheus.NewDesc("quartet_static_cache_entries_max", "The bound on quartet_static_cache_entries (static.Options.CacheEntries; quartet serve --static-cache-entries).", nil, nil)
	descStaticMemN   = prometheus.NewDesc("quartet_static_in_memory_files", "Cached files whose bytes are held in memory now, served with one write instead of sendfile.", nil, nil)
	descStaticMemB   = prometheus.NewDesc("quartet_static_in_memory_bytes", "Bytes of the files held in memory now (quartet_static_in_memory_files).", nil, nil)
	descStaticBudget = prometheus.NewDesc("quartet_static_in_memory_budget_bytes", "The bound on quartet_static_in_memory_bytes (static.Options.InMemoryBudget; quartet serve --static-in-memory-budget): a file that would pass it is sent from disk.", nil, nil)
	descStaticMemMax = prometheus.NewDesc("quartet_static_in_memory_file_max_bytes", "The largest file held in memory (static.Options.InMemory; quartet serve --static-in-memory); 0: none is.", nil, nil)
)

func (c staticCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descStaticHits, descStaticOpens, descStaticRevals, descStaticInval, descStaticEvict,
		descStaticNF, descStaticErrs, descStaticMiss, descStaticEnts, descStaticEntMax, descStaticMemN, descStaticMemB, descStaticBudget, descStaticMemMax} {
		ch <- d
	}
}

func (c staticCollector) Collect(ch chan<- prometheus.Metric) {
	st, ok := c()
	if !ok {
		return
	}
	count := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	count(descStaticHits, st.Hits)
	count(descStaticOpens, st.Opens)
	count(descStaticRevals, st.Revalidations)
	count(descStaticInval, st.Invalidations)
	count(descStaticEvict, st.Evictions)
	count(descStaticNF, st.NotFoundHits)
	count(descStaticErrs, st.Errors)
	gauge(descStaticMiss, int64(st.Missing))
	gauge(descStaticEnts, int64(st.Entries))
	gauge(descStaticEntMax, int64(st.EntriesMax))
	gauge(descStaticMemN, int64(st.InMemoryFiles))
	gauge(descStaticMemB, st.InMemoryBytes)
	gauge(descStaticBudget, st.InMemoryBudget)
	gauge(descStaticMemMax, st.InMemoryFileMax)
}
