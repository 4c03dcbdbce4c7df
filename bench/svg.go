package bench

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"strconv"
)

// Charts are drawn here rather than with gonum.org/v1/plot: line charts
// over a handful of categorical x values, or over time, need ~250 lines of
// SVG, while gonum/plot would add about ten modules (fonts, PDF, LaTeX,
// rasterisers) to Quartet's go.mod for no visible gain.

// Series is one line of a chart. On a categorical chart X holds indexes
// into Chart.Categories; on a numeric one (a time series) XV holds the x
// values. Y holds the values, NaN for none.
type Series struct {
	Name string
	X    []int
	XV   []float64
	Y    []float64
}

// Mark is a reference line: a bound at a y value (Chart.HLines) or an
// event at an x value (Chart.VLines, numeric charts only).
type Mark struct {
	At    float64
	Label string
}

// Chart is a line chart over categorical x values (the values a sweep
// dimension takes, evenly spaced whatever their magnitude), or over
// numeric x values when Categories is nil.
type Chart struct {
	Title, XLabel, YLabel string
	Categories            []string
	Series                []Series
	// LogY draws the y axis in decades, so that lines 10× apart both show
	// their shape (see logScaleWanted).
	LogY bool
	// HLines are horizontal reference lines such as a latency bound; they
	// extend the y range so that they are always visible.
	HLines []Mark
	// VLines are vertical reference lines such as phase boundaries.
	VLines []Mark
}

// Chart geometry, in SVG user units.
const (
	chartW, chartH = 640, 400
	padL, padR     = 70, 170 // the right margin holds the legend
	padT, padB     = 40, 50
	// maxMarkers: series with more points are drawn without a circle per
	// point (a time series of minutes would be all circles).
	maxMarkers = 40
)

// palette is Okabe and Ito's colour-blind-safe set.
var palette = []string{"#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"}

// markColour draws reference lines, apart from the palette.
const markColour = "#C00000"

// yAxis maps values to the plot's height, linear or in decades.
type yAxis struct {
	log       bool
	lo, hi    float64 // linear: 0..hi; log: decades lo..hi (log10)
	step      float64 // linear tick step
	top, plot float64 // pixel offset of the top and the plot height
}

func newYAxis(c Chart, plotH float64) yAxis {
	a := yAxis{log: c.LogY, top: padT, plot: plotH}
	ymin, ymax := math.Inf(1), 0.0
	see := func(y float64) {
		if y > 0 && !math.IsInf(y, 0) {
			ymin, ymax = math.Min(ymin, y), math.Max(ymax, y)
		}
	}
	for _, s := range c.Series {
		for _, y := range s.Y {
			see(y)
		}
	}
	for _, m := range c.HLines {
		see(m.At)
	}
	if !a.log {
		a.step, a.hi = niceScale(ymax)
		return a
	}
	if math.IsInf(ymin, 1) {
		ymin, ymax = 1, 10
	}
	a.lo, a.hi = math.Floor(math.Log10(ymin)), math.Ceil(math.Log10(ymax))
	if a.hi <= a.lo {
		a.hi = a.lo + 1
	}
	return a
}

// pos is y's pixel position; ok is false for a value a log axis cannot
// show (zero or negative) or for NaN.
func (a yAxis) pos(y float64) (float64, bool) {
	if math.IsNaN(y) {
		return 0, false
	}
	if !a.log {
		return a.top + a.plot*(1-y/a.hi), true
	}
	if y <= 0 {
		return 0, false
	}
	return a.top + a.plot*(1-(math.Log10(y)-a.lo)/(a.hi-a.lo)), true
}

// ticks are the y values labelled on the axis.
func (a yAxis) ticks() []float64 {
	var out []float64
	if !a.log {
		for y := 0.0; y <= a.hi*1.0000001; y += a.step {
			out = append(out, y)
		}
		return out
	}
	for d := a.lo; d <= a.hi; d++ {
		out = append(out, math.Pow(10, d))
	}
	return out
}

// SVG renders the chart as a standalone SVG document.
func (c Chart) SVG() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		chartW, chartH, chartW, chartH)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", chartW, chartH)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", padL, html.EscapeString(c.Title))
	plotW, plotH := float64(chartW-padL-padR), float64(chartH-padT-padB)
	ya := newYAxis(c, plotH)

	numeric := c.Categories == nil
	xlo, xhi := 0.0, 1.0
	if numeric {
		xlo, xhi = math.Inf(1), math.Inf(-1)
		for _, s := range c.Series {
			for _, x := range s.XV {
				xlo, xhi = math.Min(xlo, x), math.Max(xhi, x)
			}
		}
		for _, m := range c.VLines {
			xlo, xhi = math.Min(xlo, m.At), math.Max(xhi, m.At)
		}
		if math.IsInf(xlo, 1) {
			xlo, xhi = 0, 1
		}
		if xhi <= xlo {
			xhi = xlo + 1
		}
	}
	xnum := func(x float64) float64 { return padL + plotW*(x-xlo)/(xhi-xlo) }
	xcat := func(i int) float64 {
		if len(c.Categories) <= 1 {
			return padL + plotW/2
		}
		return padL + plotW*float64(i)/float64(len(c.Categories)-1)
	}
	xAt := func(s Series, i int) float64 {
		if numeric {
			return xnum(s.XV[i])
		}
		return xcat(s.X[i])
	}
	xName := func(s Series, i int) string {
		if numeric {
			return tickLabel(s.XV[i])
		}
		return c.Categories[s.X[i]]
	}

	// Grid and y ticks.
	for _, y := range ya.ticks() {
		py, _ := ya.pos(y)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/>`+"\n", padL, py, padL+plotW, py)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", padL-6, py+4, tickLabel(y))
	}
	// Axes and x ticks.
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%.0f" stroke="black"/>`+"\n", padL, padT, padL, padT+plotH)
	fmt.Fprintf(&b, `<line x1="%d" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`+"\n", padL, padT+plotH, padL+plotW, padT+plotH)
	xtick := func(px float64, label string) {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="black"/>`+"\n", px, padT+plotH, px, padT+plotH+5)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%s</text>`+"\n", px, padT+plotH+18, html.EscapeString(label))
	}
	if numeric {
		// Ticks at multiples of a nice step, whatever the range's start.
		step, _ := niceScale(xhi - xlo)
		for x := math.Ceil(xlo/step-1e-9) * step; x <= xhi+step*1e-9; x += step {
			xtick(xnum(x), tickLabel(x))
		}
	} else {
		for i, cat := range c.Categories {
			xtick(xcat(i), cat)
		}
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%d" text-anchor="middle">%s</text>`+"\n", padL+plotW/2, chartH-10, html.EscapeString(c.XLabel))
	ylabel := c.YLabel
	if ya.log {
		ylabel += " (log scale)"
	}
	fmt.Fprintf(&b, `<text transform="translate(16 %.0f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", padT+plotH/2, html.EscapeString(ylabel))

	// Reference lines, under the data.
	for _, m := range c.HLines {
		py, ok := ya.pos(m.At)
		if !ok {
			continue
		}
		fmt.Fprintf(&b, `<g class="hline"><line x1="%d" y1="%.1f" x2="%.0f" y2="%.1f" stroke="%s" stroke-dasharray="6 4"/>`, padL, py, padL+plotW, py, markColour)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end" fill="%s">%s</text></g>`+"\n", padL+plotW-4, py-4, markColour, html.EscapeString(m.Label))
	}
	if numeric {
		for _, m := range c.VLines {
			px := xnum(m.At)
			fmt.Fprintf(&b, `<g class="vline"><line x1="%.1f" y1="%d" x2="%.1f" y2="%.0f" stroke="#888" stroke-dasharray="3 3"/>`, px, padT, px, padT+plotH)
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="10" fill="#555">%s</text></g>`+"\n", px+3, padT+10, html.EscapeString(m.Label))
		}
	}

	// Lines, markers and legend. A value the axis cannot show (NaN, or
	// zero on a log axis) breaks the line rather than dragging it down.
	for si, s := range c.Series {
		col := palette[si%len(palette)]
		fmt.Fprintf(&b, `<g class="series"><title>%s</title>`, html.EscapeString(s.Name))
		var pts bytes.Buffer
		flush := func() {
			if pts.Len() > 0 {
				fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, col, bytes.TrimSpace(pts.Bytes()))
				pts.Reset()
			}
		}
		for i := range s.Y {
			py, ok := ya.pos(s.Y[i])
			if !ok {
				flush()
				continue
			}
			fmt.Fprintf(&pts, "%.1f,%.1f ", xAt(s, i), py)
		}
		flush()
		if len(s.Y) <= maxMarkers {
			for i := range s.Y {
				if py, ok := ya.pos(s.Y[i]); ok {
					fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s: %s</title></circle>`,
						xAt(s, i), py, col, html.EscapeString(xName(s, i)), tickLabel(s.Y[i]))
				}
			}
		}
		b.WriteString("</g>\n")
		ly := padT + 10 + 18*si
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>`, chartW-padR+15, ly, chartW-padR+35, ly, col)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", chartW-padR+40, ly+4, html.EscapeString(s.Name))
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// logScaleWanted reports whether lines whose largest values are maxima
// differ by 10× or more, so that on a linear axis the smaller ones would
// lie flat along the bottom.
func logScaleWanted(maxima []float64) bool {
	lo, hi := math.Inf(1), 0.0
	for _, m := range maxima {
		if m > 0 {
			lo, hi = math.Min(lo, m), math.Max(hi, m)
		}
	}
	return hi > 0 && hi >= 10*lo
}

// niceScale picks a tick step of 1, 2 or 5 times a power of ten giving
// about five ticks, and the axis top as a multiple of it.
func niceScale(max float64) (step, top float64) {
	if max <= 0 || math.IsNaN(max) || math.IsInf(max, 0) {
		return 1, 1
	}
	raw := max / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	switch r := raw / mag; {
	case r <= 1:
		step = mag
	case r <= 2:
		step = 2 * mag
	case r <= 5:
		step = 5 * mag
	default:
		step = 10 * mag
	}
	return step, math.Ceil(max/step) * step
}

func tickLabel(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'g', 4, 64) + "M"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'g', 4, 64) + "k"
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}
