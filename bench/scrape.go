package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// DefaultMetricsMatch selects the server metrics a phase run samples:
// every stage gauge and counter (sizes, queue depths, hand-offs, service
// times), anything about shedding or admission, connections by state and
// responses by status. Families added later under these names are picked
// up without a change here.
const DefaultMetricsMatch = `^quartet_(stage_.*|.*shed.*|.*admi.*|connections|responses_total)$`

// Kinds of sampled server series, by how an interval's value is derived.
const (
	// KindGauge: the value at the interval's end.
	KindGauge = "gauge"
	// KindRate: a counter's increase over the interval, per second.
	KindRate = "rate"
	// KindMean: a histogram's or summary's mean over the interval
	// (increase of its sum over increase of its count).
	KindMean = "mean"
)

// SeriesInfo describes one sampled server series.
type SeriesInfo struct {
	// Key is the series' name and labels, e.g.
	// quartet_stage_queue_depth{stage="processor"}.
	Key    string `json:"key"`
	Family string `json:"family"`
	Labels string `json:"labels,omitempty"`
	Kind   string `json:"kind"`
	Help   string `json:"help,omitempty"`
}

// scrape is one reading of the server's metrics.
type scrape struct {
	at     time.Time
	values map[string]float64 // gauges and counters by key; key+sumSuffix and key+countSuffix for means
	err    error
}

const (
	sumSuffix   = "\x00sum"
	countSuffix = "\x00count"
)

// scraper reads a Prometheus text endpoint.
type scraper struct {
	url    string
	match  *regexp.Regexp
	client *http.Client
	series map[string]SeriesInfo
}

func newScraper(url, match string, timeout time.Duration) (*scraper, error) {
	if match == "" {
		match = DefaultMetricsMatch
	}
	re, err := regexp.Compile(match)
	if err != nil {
		return nil, fmt.Errorf("bench: metrics_match: %w", err)
	}
	return &scraper{url: url, match: re, client: &http.Client{Timeout: timeout}, series: map[string]SeriesInfo{}}, nil
}

// read scrapes once.
func (s *scraper) read(ctx context.Context) scrape {
	out := scrape{at: time.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		out.err = err
		return out
	}
	// The text format: what every exporter speaks, and what the parser reads.
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := s.client.Do(req)
	if err != nil {
		out.err = err
		return out
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		out.err = fmt.Errorf("bench: %s: %s", s.url, resp.Status)
		return out
	}
	out.values, out.err = s.parse(resp.Body)
	return out
}

// parse reads the text format, keeping the families that match.
func (s *scraper) parse(r io.Reader) (map[string]float64, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("bench: parsing metrics: %w", err)
	}
	vals := map[string]float64{}
	for name, f := range fams {
		if !s.match.MatchString(name) {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := labelString(m.GetLabel())
			key := name
			if labels != "" {
				key += "{" + labels + "}"
			}
			info := SeriesInfo{Key: key, Family: name, Labels: labels, Help: f.GetHelp()}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				info.Kind = KindRate
				vals[key] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				info.Kind = KindGauge
				vals[key] = m.GetGauge().GetValue()
			case dto.MetricType_UNTYPED:
				info.Kind = KindGauge
				vals[key] = m.GetUntyped().GetValue()
			case dto.MetricType_HISTOGRAM:
				info.Kind = KindMean
				vals[key+sumSuffix] = m.GetHistogram().GetSampleSum()
				vals[key+countSuffix] = float64(m.GetHistogram().GetSampleCount())
			case dto.MetricType_SUMMARY:
				info.Kind = KindMean
				vals[key+sumSuffix] = m.GetSummary().GetSampleSum()
				vals[key+countSuffix] = float64(m.GetSummary().GetSampleCount())
			default:
				continue
			}
			s.series[key] = info
		}
	}
	return vals, nil
}

// labelString is the labels in Prometheus' notation, sorted by name.
func labelString(ls []*dto.LabelPair) string {
	parts := make([]string, 0, len(ls))
	for _, l := range ls {
		parts = append(parts, l.GetName()+"="+strconv.Quote(l.GetValue()))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// derive is a series' value over the interval between scrapes a and b:
// the gauge at b, the counter's rate, the histogram's mean. It is NaN when
// either scrape lacks the series, failed, or a counter went backwards (a
// restarted server).
func derive(info SeriesInfo, a, b scrape) float64 {
	nan := math.NaN()
	if b.err != nil || b.values == nil {
		return nan
	}
	if info.Kind == KindGauge {
		if v, ok := b.values[info.Key]; ok {
			return v
		}
		return nan
	}
	if a.err != nil || a.values == nil {
		return nan
	}
	switch info.Kind {
	case KindRate:
		va, oka := a.values[info.Key]
		vb, okb := b.values[info.Key]
		dt := b.at.Sub(a.at).Seconds()
		if !oka || !okb || vb < va || dt <= 0 {
			return nan
		}
		return (vb - va) / dt
	case KindMean:
		sa, ca := a.values[info.Key+sumSuffix], a.values[info.Key+countSuffix]
		sb, cb := b.values[info.Key+sumSuffix], b.values[info.Key+countSuffix]
		if cb <= ca {
			return nan // nothing observed in the interval
		}
		return (sb - sa) / (cb - ca)
	}
	return nan
}
