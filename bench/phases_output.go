package bench

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// WriteSummary prints each phase's totals and, with against
// configurations, each run's and the per-phase comparison.
func (r *PhaseResult) WriteSummary(w io.Writer) error {
	ew := &errWriter{w: w}
	if len(r.Against) == 0 {
		r.PhaseTrace.writeTable(ew)
		return ew.err
	}
	for _, tr := range r.traces() {
		ew.printf("%s — %s\n", tr.Label, tr.SizingString())
		tr.writeTable(ew)
		ew.printf("\n")
	}
	r.writeComparison(ew)
	return ew.err
}

// traces are the runs in order: the spec's own stages, then each against
// configuration.
func (r *PhaseResult) traces() []*PhaseTrace {
	out := []*PhaseTrace{&r.PhaseTrace}
	for i := range r.Against {
		out = append(out, &r.Against[i])
	}
	return out
}

// writeTable prints the run's phases, one line each.
func (r *PhaseTrace) writeTable(ew *errWriter) {
	t := &table{}
	t.add("phase", "from", "to", "conns", "offered", "req/s", "p50", "p99", "5xx", "503", "errors", "srv CPU/req")
	for _, p := range r.Phases {
		offered := "closed"
		if p.Rate > 0 {
			offered = fmt.Sprintf("%.0f/s", p.Rate)
		}
		line := []string{p.Name, fmt.Sprintf("%.1fs", p.Start), fmt.Sprintf("%.1fs", p.End), strconv.Itoa(p.Connections), offered}
		if res := p.Result; res != nil {
			cpu := ""
			if res.ServerCPUKnown {
				cpu = usString(res.ServerCPUPerRequest())
			}
			line = append(line, strconv.FormatFloat(res.RequestsPerSec, 'f', 0, 64), res.Latency.P50.String(), res.Latency.P99.String(),
				strconv.FormatUint(res.Status[5], 10), strconv.FormatUint(res.Status503, 10), strconv.FormatUint(res.ErrorTotal(), 10), cpu)
		}
		if p.Err != "" {
			line = append(line, "error: "+p.Err)
		}
		t.add(line...)
	}
	t.write(ew)
	if r.MetricsURL != "" {
		ew.printf("server metrics from %s: %d series, %d failed reads\n", r.MetricsURL, len(r.Series), r.ScrapeErrors)
		if r.ScrapeError != "" {
			ew.printf("last failed read: %s\n", r.ScrapeError)
		}
	}
}

// ComparisonDefinition says in words how the comparison is computed, for
// the summary and the report.
func (r *PhaseResult) ComparisonDefinition() string {
	bound := "with no p99 bound (the spec sets no objective.p99_max)"
	if b := r.Spec.Objective.P99Max; b > 0 {
		bound = "at p99 ≤ " + b.String()
	}
	return fmt.Sprintf("Throughput %s: good (non-5xx) responses per second, averaged over the phase's %v sampling intervals "+
		"that begin %v or more after the phase's start (half the phase, if shorter than %v) and end by its load's end, "+
		"an interval whose p99 is above the bound, or in which more than 1%% of the requests failed (timeouts, lost connections, 5xx refusals), counting as 0 "+
		"(met: the intervals within the bound, of those averaged; 5xx: the share of the window's responses that were 5xx, mostly 503 from admission control: "+
		"a configuration that refuses requests answers the rest sooner, but does not serve the phase). "+
		"Best static: the against configuration with the highest such throughput in the phase. "+
		"Reached in: from the phase's start to the end of the first interval in which %s's good responses per second "+
		"reached %.0f%% of the best static's throughput within the bound (resolution: one interval); "+
		"held: the share of the phase's intervals from then on that stayed there. "+
		"A phase passes with a ratio of at least %.2f, reached within %v.",
		bound, r.Spec.Sample, settleTime, 2*settleTime, r.Label, 100*reachFraction, reachFraction, settleTime)
}

// comparisonRow is one phase of the comparison, formatted.
type comparisonRow struct {
	Phase, Own, Best, BestRPS, Ratio, ReachedIn, Held, Verdict string
	// Mark is ✓ (passes), ✗ (fails) or – (nothing to compare with).
	Mark string
	OK   bool
	// Figures are every run's throughput, the own run first; BestIndex
	// is the best static's index in Figures (-1: none).
	Figures   []string
	BestIndex int
}

func (r *PhaseResult) comparisonRows() []comparisonRow {
	var out []comparisonRow
	fig := func(f PhaseFigures) string {
		if f.Intervals == 0 {
			return "no data"
		}
		s := fmt.Sprintf("%.0f (met %d/%d", f.Throughput, f.Meeting, f.Intervals)
		if f.Share5xx >= 0.005 {
			s += fmt.Sprintf(", 5xx %.0f%%", 100*f.Share5xx)
		}
		return s + ")"
	}
	for _, c := range r.Comparison {
		row := comparisonRow{Phase: c.Phase, Own: fig(c.Own), OK: c.OK, BestIndex: -1, Best: "none", Ratio: "–", ReachedIn: "–", Held: "–"}
		row.Figures = append(row.Figures, fig(c.Own))
		for _, f := range c.Static {
			row.Figures = append(row.Figures, fig(f))
		}
		if c.Best >= 0 {
			b := c.Static[c.Best]
			row.Best, row.BestRPS, row.BestIndex = b.Label, fmt.Sprintf("%.0f", b.Throughput), c.Best+1
			row.Ratio = fmt.Sprintf("%.2f", c.Ratio)
			row.ReachedIn = "never"
			if c.ReachedIn >= 0 {
				row.ReachedIn = fmt.Sprintf("%.1fs", c.ReachedIn)
				row.Held = fmt.Sprintf("%.0f%%", 100*c.Held)
			}
		}
		switch {
		case c.OK:
			row.Mark, row.Verdict = "✓", "within 10%, reached within "+settleTime.String()
		case c.Best < 0:
			row.Mark, row.Verdict = "–", c.Note
		default:
			row.Mark, row.Verdict = "✗", c.Note
		}
		out = append(out, row)
	}
	return out
}

// writeComparison prints the per-phase comparison: the verdicts, then
// every run's throughput at the bound.
func (r *PhaseResult) writeComparison(ew *errWriter) {
	if len(r.Comparison) == 0 {
		return
	}
	what := fmt.Sprintf("the best of %d static configurations", len(r.Against))
	if len(r.Against) == 1 {
		what = "the static configuration"
	}
	ew.printf("Comparison per phase: %s vs %s\n", r.Label, what)
	rows := r.comparisonRows()
	t := &table{}
	t.add("phase", "pass", r.Label, "best static", "its req/s", "ratio", "reached in", "held")
	for _, row := range rows {
		t.add(row.Phase, row.Mark, row.Own, row.Best, row.BestRPS, row.Ratio, row.ReachedIn, row.Held)
	}
	t.write(ew)
	for _, row := range rows {
		if !row.OK {
			ew.printf("  %s %s: %s\n", row.Mark, row.Phase, row.Verdict)
		}
	}
	ew.printf("\nThroughput at the bound, every run (* the best static):\n")
	t = &table{}
	head := []string{"phase"}
	for _, tr := range r.traces() {
		head = append(head, tr.Label)
	}
	t.add(head...)
	for _, row := range rows {
		line := []string{row.Phase}
		for i, f := range row.Figures {
			if i == row.BestIndex {
				f += "*"
			}
			line = append(line, f)
		}
		t.add(line...)
	}
	t.write(ew)
	passed := 0
	for _, c := range r.Comparison {
		if c.OK {
			passed++
		}
	}
	ew.printf("%d of %d phases pass.\n\n%s\n", passed, len(r.Comparison), wrap(r.ComparisonDefinition(), 100))
}

// wrap breaks text into lines of at most width characters, between words.
func wrap(text string, width int) string {
	var b strings.Builder
	n := 0
	for _, w := range strings.Fields(text) {
		l := utf8.RuneCountInString(w)
		switch {
		case n == 0:
		case n+1+l > width:
			b.WriteByte('\n')
			n = 0
		default:
			b.WriteByte(' ')
			n++
		}
		b.WriteString(w)
		n += l
	}
	return b.String()
}

// WriteCSV writes one row per interval: the client's figures, then each
// server series (its Kind in the column name).
func (r *PhaseTrace) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	head := []string{"t_s", "phase", "requests", "requests_per_sec", "p50_ms", "p99_ms", "errors", "status_5xx", "status_503"}
	for _, s := range r.Series {
		head = append(head, s.Key+" ("+kindUnit(s.Kind)+")")
	}
	_ = cw.Write(head)
	ms := func(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 3, 64) }
	for _, s := range r.Samples {
		row := []string{strconv.FormatFloat(s.T, 'f', 3, 64), s.Phase, strconv.FormatUint(s.Requests, 10),
			strconv.FormatFloat(s.RequestsPerSec, 'f', 1, 64), ms(s.P50), ms(s.P99),
			strconv.FormatUint(s.Errors, 10), strconv.FormatUint(s.Status5xx, 10), strconv.FormatUint(s.Status503, 10)}
		for _, info := range r.Series {
			v, ok := s.Server[info.Key]
			if !ok {
				row = append(row, "")
				continue
			}
			row = append(row, strconv.FormatFloat(v, 'g', 6, 64))
		}
		_ = cw.Write(row)
	}
	cw.Flush()
	return cw.Error()
}

func kindUnit(kind string) string {
	switch kind {
	case KindRate:
		return "per second"
	case KindMean:
		return "mean"
	}
	return "value"
}

// WriteJSON writes the whole run.
func (r *PhaseResult) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(r)
}

// familyOrder puts the families a reader looks for first: stage sizes,
// queue depths, stage throughput, sheds and rejections, service times.
var familyOrder = []*regexp.Regexp{
	regexp.MustCompile(`_size$|_loops$|_workers$`),
	regexp.MustCompile(`queue_depth`),
	regexp.MustCompile(`dequeued_total`),
	regexp.MustCompile(`shed|admi`),
	regexp.MustCompile(`rejected`),
	regexp.MustCompile(`service`),
}

func familyRank(name string) int {
	for i, re := range familyOrder {
		if re.MatchString(name) {
			return i
		}
	}
	return len(familyOrder)
}

// Plots are the time series: the client's throughput, latency and
// failures, then one chart per server metric family (one line per label
// set), each with the phase boundaries marked.
func (r *PhaseResult) Plots() []Plot {
	var marks []Mark
	for _, p := range r.Phases {
		marks = append(marks, Mark{At: p.Start, Label: p.Name})
	}
	xs := make([]float64, len(r.Samples))
	for i, s := range r.Samples {
		xs[i] = s.T
	}
	series := func(name string, get func(PhaseSample) float64) Series {
		s := Series{Name: name, XV: xs, Y: make([]float64, len(r.Samples))}
		for i, smp := range r.Samples {
			s.Y[i] = get(smp)
		}
		return s
	}
	ms := func(d time.Duration) float64 {
		if d == 0 {
			return math.NaN()
		}
		return float64(d) / 1e6
	}
	thr := Chart{Title: "Throughput (client)", XLabel: "seconds", YLabel: "responses/s", VLines: marks,
		Series: []Series{series("responses/s", func(s PhaseSample) float64 { return s.RequestsPerSec })}}
	lat := Chart{Title: "Latency (client)", XLabel: "seconds", YLabel: "ms", VLines: marks,
		Series: []Series{series("p50", func(s PhaseSample) float64 { return ms(s.P50) }),
			series("p99", func(s PhaseSample) float64 { return ms(s.P99) })}}
	if b := r.Spec.Objective.P99Max; b > 0 {
		lat.HLines = []Mark{{At: float64(b) / 1e6, Label: "p99 bound " + b.String()}}
	}
	lat.LogY = logScaleWanted(seriesMaxima(lat.Series)) || logScaleWanted(minMax(lat.Series))
	fail := Chart{Title: "Failures (client)", XLabel: "seconds", YLabel: "per second", VLines: marks,
		Series: []Series{
			series("errors", func(s PhaseSample) float64 { return float64(s.Errors) / r.Spec.Sample.Seconds() }),
			series("5xx", func(s PhaseSample) float64 { return float64(s.Status5xx) / r.Spec.Sample.Seconds() }),
			series("503", func(s PhaseSample) float64 { return float64(s.Status503) / r.Spec.Sample.Seconds() })}}
	out := []Plot{{"throughput.svg", thr.SVG()}, {"latency.svg", lat.SVG()}, {"failures.svg", fail.SVG()}}
	if len(r.Against) > 0 {
		out = append(out, r.byConfigPlots(marks)...)
	}

	families := map[string][]SeriesInfo{}
	var names []string
	for _, s := range r.Series {
		if _, ok := families[s.Family]; !ok {
			names = append(names, s.Family)
		}
		families[s.Family] = append(families[s.Family], s)
	}
	sort.SliceStable(names, func(i, j int) bool {
		ri, rj := familyRank(names[i]), familyRank(names[j])
		if ri != rj {
			return ri < rj
		}
		return names[i] < names[j]
	})
	for _, fam := range names {
		infos := families[fam]
		kind := infos[0].Kind
		c := Chart{Title: fam, XLabel: "seconds", VLines: marks}
		scale := 1.0
		switch kind {
		case KindRate:
			c.Title += " (per second)"
			c.YLabel = "per second"
		case KindMean:
			c.Title += " (mean per interval)"
			c.YLabel = "mean"
			if strings.HasSuffix(fam, "_seconds") {
				c.YLabel, scale = "ms", 1e3
			}
		default:
			c.YLabel = "value"
		}
		for _, info := range infos {
			name := info.Labels
			if name == "" {
				name = fam
			}
			c.Series = append(c.Series, series(name, func(s PhaseSample) float64 {
				if v, ok := s.Server[info.Key]; ok {
					return v * scale
				}
				return math.NaN()
			}))
		}
		// Linear: a queue that empties must show as 0, which a log axis
		// cannot draw.
		out = append(out, Plot{"server_" + fam + ".svg", c.SVG()})
	}
	return out
}

// byConfigPlots overlay every run's good responses per second and p99,
// each on its own time line (the phases take the same time in every run,
// within a drain), with the first run's phase starts marked.
func (r *PhaseResult) byConfigPlots(marks []Mark) []Plot {
	thr := Chart{Title: "Good responses/s (non-5xx), by configuration", XLabel: "seconds since the run's start", YLabel: "responses/s", VLines: marks}
	lat := Chart{Title: "p99 latency, by configuration", XLabel: "seconds since the run's start", YLabel: "ms", VLines: marks}
	if b := r.Spec.Objective.P99Max; b > 0 {
		lat.HLines = []Mark{{At: float64(b) / 1e6, Label: "p99 bound " + b.String()}}
	}
	every := r.Spec.Sample.Seconds()
	for _, tr := range r.traces() {
		ts, ls := Series{Name: tr.Label}, Series{Name: tr.Label}
		for _, smp := range tr.Samples {
			good := smp.Requests - min(smp.Status5xx, smp.Requests)
			ts.XV, ts.Y = append(ts.XV, smp.T), append(ts.Y, float64(good)/every)
			p99 := math.NaN()
			if smp.P99 > 0 {
				p99 = float64(smp.P99) / 1e6
			}
			ls.XV, ls.Y = append(ls.XV, smp.T), append(ls.Y, p99)
		}
		thr.Series, lat.Series = append(thr.Series, ts), append(lat.Series, ls)
	}
	lat.LogY = logScaleWanted(seriesMaxima(lat.Series)) || logScaleWanted(minMax(lat.Series))
	return []Plot{{"throughput_by_config.svg", thr.SVG()}, {"latency_by_config.svg", lat.SVG()}}
}

// minMax is each series' smallest positive and largest value, so that a
// single line spanning 10× (a latency that explodes under overload) is
// drawn in decades too.
func minMax(ss []Series) []float64 {
	var out []float64
	for _, s := range ss {
		lo, hi := math.Inf(1), 0.0
		for _, y := range s.Y {
			if y > 0 {
				lo, hi = math.Min(lo, y), math.Max(hi, y)
			}
		}
		if hi > 0 {
			out = append(out, lo, hi)
		}
	}
	return out
}

var phaseTemplate = template.Must(template.New("phases").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Quartet phase run: {{.Name}}</title>
<style>{{.CSS}}</style>
</head>
<body>
<h1>Quartet phase run: {{.Name}}</h1>
<p>Started {{.Started}}; {{len .R.Phases}} phases, sampled every {{.Sample}}. Target: {{.R.Target}}{{if .Sizes}} ({{.Sizes}} at start){{end}}.{{if .R.MetricsURL}} Server metrics read from {{.R.MetricsURL}} at each sample's end ({{len .R.Series}} series, {{.R.ScrapeErrors}} failed reads).{{end}}</p>
<p class="host">Host: {{.R.Host.CPU}}, {{.R.Host.Cores}} cores; kernel {{.R.Host.Kernel}} (TCP {{.R.Host.Congestion}}); {{.R.Host.Go}}; Quartet commit {{.R.Host.Commit}}.</p>
{{range .R.Warnings}}<p class="warning">Warning: {{.}}</p>
{{end}}
<h2>Phases</h2>
<table>
<tr><th class="l">phase</th><th>from (s)</th><th>to (s)</th><th class="l">requests</th><th>conns</th><th>offered</th><th>req/s</th><th>p50</th><th>p99</th><th>5xx</th><th>503</th><th>errors</th></tr>
{{range .Rows}}<tr><td class="l">{{.Name}}</td><td>{{printf "%.1f" .Start}}</td><td>{{printf "%.1f" .End}}</td><td class="l">{{.Mix}}</td><td>{{.Conns}}</td><td>{{.Offered}}</td><td>{{.RPS}}</td><td>{{.P50}}</td><td>{{.P99}}</td><td>{{.S5xx}}</td><td>{{.S503}}</td><td>{{.Errors}}</td></tr>
{{end}}</table>
{{if .Comparison}}<h2>Against static configurations</h2>
<p>The same phases ran {{len .Runs}} times, each against a server started afresh: first with {{.OwnLabel}}, then once per static configuration of the spec's <code>against</code> list.</p>
<ul>{{range .Runs}}<li>{{.Label}}: {{.Sizing}}</li>
{{end}}</ul>
<p>{{.Definition}}</p>
<table>
<tr><th class="l">phase</th><th>{{.OwnLabel}}</th><th class="l">best static</th><th>its req/s</th><th>ratio</th><th>reached in</th><th>held</th><th class="l">verdict</th></tr>
{{range .Comparison}}<tr{{if .OK}} class="best"{{else}} class="nearest"{{end}}><td class="l">{{.Phase}}</td><td>{{.Own}}</td><td class="l">{{.Best}}</td><td>{{.BestRPS}}</td><td>{{.Ratio}}</td><td>{{.ReachedIn}}</td><td>{{.Held}}</td><td class="l">{{.Mark}} {{.Verdict}}</td></tr>
{{end}}</table>
<p>{{.Passed}}</p>
<p>Throughput at the bound in every run (the best static in bold):</p>
<table>
<tr><th class="l">phase</th>{{range .Runs}}<th>{{.Label}}</th>{{end}}</tr>
{{range .Comparison}}{{$best := .BestIndex}}<tr><td class="l">{{.Phase}}</td>{{range $i, $f := .Figures}}<td>{{if eq $i $best}}<b>{{$f}}</b>{{else}}{{$f}}{{end}}</td>{{end}}</tr>
{{end}}</table>
{{range .Runs}}{{if .Rows}}<h3>{{.Label}}</h3>
<table>
<tr><th class="l">phase</th><th>from (s)</th><th>to (s)</th><th class="l">requests</th><th>conns</th><th>offered</th><th>req/s</th><th>p50</th><th>p99</th><th>5xx</th><th>503</th><th>errors</th></tr>
{{range .Rows}}<tr><td class="l">{{.Name}}</td><td>{{printf "%.1f" .Start}}</td><td>{{printf "%.1f" .End}}</td><td class="l">{{.Mix}}</td><td>{{.Conns}}</td><td>{{.Offered}}</td><td>{{.RPS}}</td><td>{{.P50}}</td><td>{{.P99}}</td><td>{{.S5xx}}</td><td>{{.S503}}</td><td>{{.Errors}}</td></tr>
{{end}}</table>
{{end}}{{end}}{{end}}
<h2>Over time</h2>
<p>{{if .Comparison}}The plots by configuration overlay every run, each on its own time line; the others show the first run ({{.OwnLabel}}) only, its server's metrics included. {{end}}Dashed grey lines mark where each phase began. Client figures are the responses that arrived in each interval (latency from the intended send time in open loop); server figures are gauges at the interval's end, counters as their rate over it, histograms as their mean over it. A gap is an interval without a value (no response, or a failed read).</p>
<div class="plots">{{range .Plots}}<div class="plot" id="{{.Name}}">{{.SVG}}</div>{{end}}</div>
<h2>Spec</h2>
<pre>{{.SpecYAML}}</pre>
<p>Raw data: timeseries.csv (one row per interval{{if .Comparison}} of the first run; timeseries-againstN-LABEL.csv for each static run{{end}}) and results.json, beside this file.</p>
</body>
</html>
`))

type phaseRow struct {
	Name, Mix, Offered, RPS, P50, P99 string
	Start, End                        float64
	Conns                             int
	S5xx, S503, Errors                uint64
}

// phaseRunRows is one run of a phase run with against configurations,
// for the report.
type phaseRunRows struct {
	Label, Sizing string
	Rows          []phaseRow // nil for the first run, shown above
}

// WriteHTML writes the self-contained report with the plots inlined.
func (r *PhaseResult) WriteHTML(w io.Writer, plots []Plot) error {
	data := struct {
		Name, Started, Sample, Sizes, SpecYAML string
		R                                      *PhaseResult
		Rows                                   []phaseRow
		Plots                                  []reportPlot
		CSS                                    template.CSS
		// With against configurations.
		OwnLabel, Definition, Passed string
		Runs                         []phaseRunRows
		Comparison                   []comparisonRow
	}{CSS: reportCSS, Name: r.Spec.Name, Started: r.Started.Format(time.RFC3339), Sample: r.Spec.Sample.String(), R: r}
	if len(r.Comparison) > 0 {
		data.OwnLabel, data.Definition, data.Comparison = r.Label, r.ComparisonDefinition(), r.comparisonRows()
		passed := 0
		for _, c := range r.Comparison {
			if c.OK {
				passed++
			}
		}
		data.Passed = fmt.Sprintf("%d of %d phases pass.", passed, len(r.Comparison))
		for i, tr := range r.traces() {
			run := phaseRunRows{Label: tr.Label, Sizing: tr.SizingString()}
			if i > 0 {
				run.Rows = r.phaseRows(tr)
			}
			data.Runs = append(data.Runs, run)
		}
	}
	if u := r.Used; u != nil {
		data.Sizes = fmt.Sprintf("readers %d, processors %d, writers %d, queue %d", u.Readers, u.Processors, u.Writers, u.QueueCapacity)
	}
	if y, err := yaml.Marshal(r.Spec); err == nil {
		data.SpecYAML = string(y)
	}
	data.Rows = r.phaseRows(&r.PhaseTrace)
	for _, p := range plots {
		// Chart.SVG escapes every text it draws: safe to inline.
		data.Plots = append(data.Plots, reportPlot{Name: p.File, SVG: template.HTML(p.SVG)})
	}
	return phaseTemplate.Execute(w, data)
}

// phaseRows are tr's phases for the report's tables.
func (r *PhaseResult) phaseRows(tr *PhaseTrace) []phaseRow {
	var rows []phaseRow
	for _, p := range tr.Phases {
		row := phaseRow{Name: p.Name, Start: p.Start, End: p.End, Conns: p.Connections, Mix: mixString(r.Spec.mix(p.Phase)), Offered: "closed loop"}
		if p.Rate > 0 {
			row.Offered = fmt.Sprintf("%.0f req/s", p.Rate)
		}
		if res := p.Result; res != nil {
			row.RPS = strconv.FormatFloat(res.RequestsPerSec, 'f', 0, 64)
			row.P50, row.P99 = res.Latency.P50.String(), res.Latency.P99.String()
			row.S5xx, row.S503, row.Errors = res.Status[5], res.Status503, res.ErrorTotal()
		}
		rows = append(rows, row)
	}
	return rows
}

// WriteFiles writes timeseries.csv (and, per against run,
// timeseries-againstN-LABEL.csv), results.json, the SVG plots and
// report.html into dir, and returns the report's path.
func (r *PhaseResult) WriteFiles(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	plots := r.Plots()
	files := []struct {
		name  string
		write func(io.Writer) error
	}{
		{"timeseries.csv", r.WriteCSV},
		{"results.json", r.WriteJSON},
		{"report.html", func(w io.Writer) error { return r.WriteHTML(w, plots) }},
	}
	for i := range r.Against {
		tr := &r.Against[i]
		files = append(files, struct {
			name  string
			write func(io.Writer) error
		}{fileSafe(fmt.Sprintf("timeseries-against%d-%s.csv", i+1, strings.ReplaceAll(tr.Label, " ", "-"))), tr.WriteCSV})
	}
	for _, p := range plots {
		svg := p.SVG
		files = append(files, struct {
			name  string
			write func(io.Writer) error
		}{fileSafe(p.File), func(w io.Writer) error { _, err := w.Write(svg); return err }})
	}
	for _, f := range files {
		if err := writeFile(filepath.Join(dir, f.name), f.write); err != nil {
			return "", err
		}
	}
	return filepath.Join(dir, "report.html"), nil
}

// fileSafe keeps a plot's file name to letters, digits, '_', '-' and '.'.
func fileSafe(name string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r == '-' || r == '.' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' {
			return r
		}
		return '_'
	}, name)
}

// writeFile creates path and fills it with write.
func writeFile(path string, write func(io.Writer) error) error {
	fh, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(fh); err != nil {
		fh.Close()
		return fmt.Errorf("bench: writing %s: %w", path, err)
	}
	return fh.Close()
}
