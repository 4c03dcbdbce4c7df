package bench

import (
	"fmt"
	"html/template"
	"io"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// reportCSS styles the sweep and phase reports alike.
const reportCSS = `body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; }
td.l, th.l { text-align: left; }
tr.best td { background: #e8f5e9; font-weight: bold; }
tr.nearest td { background: #fff8e1; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
.plot { border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 1em; }
.warning { background: #fff3cd; border-left: 4px solid #C00000; padding: 0.5em 1em; }
`

// reportTemplate is the sweep report: one HTML file with the plots inlined,
// so it can be mailed or attached to an issue as is.
var reportTemplate = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Quartet sweep: {{.Name}}</title>
<style>{{.CSS}}</style>
</head>
<body>
<h1>Quartet sweep: {{.Name}}</h1>
<p>Started {{.Started}}; {{.NRuns}} runs over {{.NPoints}} points, {{.Repeats}} repeat(s) each, {{.Duration}} per run after {{.Warmup}} warm-up. Target: {{.Target}}.</p>
<p class="host">Host: {{.Host.CPU}}, {{.Host.Cores}} cores{{if and .Host.Usable (ne .Host.Usable .Host.Cores)}} ({{.Host.Usable}} usable){{end}}; kernel {{.Host.Kernel}} (TCP {{.Host.Congestion}}); {{.Host.Go}}; Quartet commit {{.Host.Commit}}.</p>
{{range .Warnings}}<p class="warning">Warning: {{.}}</p>
{{end}}
<h2>Best configuration</h2>
<p>Objective: {{.Objective}}.</p>
<ul>{{range .Best}}<li>{{.}}</li>{{end}}</ul>
<h2>Plots</h2>
<p>Each line is a workload (and connection count, when that is not the x axis); at each x value it shows the configuration with the highest throughput, and the p99 plot shows that same configuration's p99. Where lines differ tenfold or more the y axis is logarithmic (said on the axis); the dashed red line is the p99 bound.</p>
<div class="plots">{{range .Plots}}<div class="plot" id="{{.Name}}">{{.SVG}}</div>{{end}}</div>
<h2>Points</h2>
<p>Stage sizes are those the server ran with{{if .UnknownSizes}}; "?" where the server did not say (an external URL) and the spec left the size to it{{end}}.</p>
<table>
<tr><th class="l">workload</th><th>conns</th><th>readers</th><th>processors</th><th>writers</th><th>queue</th><th>runs</th><th>req/s (mean)</th><th>± sd</th><th>p50</th><th>p99</th><th>server CPU/req</th><th>errors</th><th>5xx</th></tr>
{{range .Rows}}<tr{{if .Best}} class="best"{{else if .Nearest}} class="nearest"{{end}}><td class="l">{{.P.Point.Workload}}{{if .Nearest}} (nearest){{end}}</td><td>{{.P.Point.Conns}}</td><td>{{.Size .P.Point.Readers .UsedReaders}}</td><td>{{.Size .P.Point.Processors .UsedProcessors}}</td><td>{{.Size .P.Point.Writers .UsedWriters}}</td><td>{{.Size .P.Point.QueueCapacity .UsedQueue}}</td><td>{{.P.Runs}}</td><td>{{printf "%.0f" .P.RequestsPerSec}}</td><td>{{printf "%.0f" .P.RPSStddev}}</td><td>{{.P.P50}}</td><td>{{.P.P99}}</td><td>{{.P.ServerCPUPerRq}}</td><td>{{.P.Errors}}</td><td>{{.P.Refused}}</td></tr>
{{end}}</table>
<h2>Spec</h2>
<pre>{{.SpecYAML}}</pre>
<p>Raw data: results.csv (one row per run) and results.json, beside this file.</p>
</body>
</html>
`))

type reportPlot struct {
	Name string
	SVG  template.HTML
}

type reportRow struct {
	P                                                   PointSummary
	Best, Nearest                                       bool
	UsedReaders, UsedProcessors, UsedWriters, UsedQueue int
}

// Size shows the size the server used; the point's own when the server
// did not say, and "?" when neither is known (the server's default).
func (reportRow) Size(point, used int) string {
	switch {
	case used > 0:
		return fmt.Sprint(used)
	case point > 0:
		return fmt.Sprint(point)
	}
	return "?"
}

// WriteHTML writes the self-contained report with the given plots inlined.
func (r *SweepResult) WriteHTML(w io.Writer, plots []Plot) error {
	s := r.Spec
	data := struct {
		Name, Started, Duration, Warmup, Target, Objective, SpecYAML string
		NRuns, NPoints, Repeats                                      int
		Best, Warnings                                               []string
		Plots                                                        []reportPlot
		Rows                                                         []reportRow
		Host                                                         Host
		UnknownSizes                                                 bool
		CSS                                                          template.CSS
	}{
		CSS:  reportCSS,
		Name: s.Name, Started: r.Started.Format(time.RFC3339), Duration: s.Duration.String(),
		Warmup: s.Warmup.String(), NRuns: len(r.Runs), NPoints: len(r.Points), Repeats: s.Repeats,
		Target: "in-process Quartet per point", Host: r.Host, Warnings: r.Warnings,
	}
	switch {
	case s.URL != "":
		data.Target = s.URL
	case s.Server == "process":
		data.Target = "quartet serve per point"
	}
	data.Objective = "maximum throughput, no errors, at most 1% of the responses 5xx (refused)"
	if s.Objective.P99Max > 0 {
		data.Objective += ", p99 ≤ " + s.Objective.P99Max.String()
	}
	var sb strings.Builder
	_ = r.WriteBest(&sb)
	data.Best = strings.Split(strings.TrimSpace(sb.String()), "\n")
	if y, err := yaml.Marshal(s); err == nil {
		data.SpecYAML = string(y)
	}
	for _, p := range plots {
		// The SVG is generated by Chart.SVG, which escapes every text it
		// draws, so it is safe to inline as is.
		data.Plots = append(data.Plots, reportPlot{Name: p.File, SVG: template.HTML(p.SVG)})
	}
	for _, p := range r.Points {
		b, ok := r.Best[p.Point.Workload]
		n, nok := r.Nearest[p.Point.Workload]
		row := reportRow{P: p, Best: ok && b.Point == p.Point, Nearest: nok && n.Point == p.Point}
		if u := p.Used; u != nil {
			row.UsedReaders, row.UsedProcessors, row.UsedWriters, row.UsedQueue = u.Readers, u.Processors, u.Writers, u.QueueCapacity
		} else {
			data.UnknownSizes = true
		}
		data.Rows = append(data.Rows, row)
	}
	return reportTemplate.Execute(w, data)
}
