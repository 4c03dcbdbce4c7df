package bench

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"strconv"
)

// Charts are drawn here rather than with gonum.org/v1/plot: line charts
// over a handful of categorical x values need ~150 lines of SVG, while
// gonum/plot would add about ten modules (fonts, PDF, LaTeX, rasterisers)
// to Quartet's go.mod for no visible gain.

// Series is one line of a chart; X holds indexes into Chart.Categories.
type Series struct {
	Name string
	X    []int
	Y    []float64
}

// Chart is a line chart over categorical x values (the values a sweep
// dimension takes, evenly spaced whatever their magnitude).
type Chart struct {
	Title, XLabel, YLabel string
	Categories            []string
	Series                []Series
}

// Chart geometry, in SVG user units.
const (
	chartW, chartH = 640, 400
	padL, padR     = 70, 170 // the right margin holds the legend
	padT, padB     = 40, 50
)

// palette is Okabe and Ito's colour-blind-safe set.
var palette = []string{"#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"}

// SVG renders the chart as a standalone SVG document.
func (c Chart) SVG() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		chartW, chartH, chartW, chartH)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", chartW, chartH)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", padL, html.EscapeString(c.Title))
	plotW, plotH := float64(chartW-padL-padR), float64(chartH-padT-padB)
	ymax := 0.0
	for _, s := range c.Series {
		for _, y := range s.Y {
			ymax = math.Max(ymax, y)
		}
	}
	step, top := niceScale(ymax)
	xpos := func(i int) float64 {
		if len(c.Categories) <= 1 {
			return padL + plotW/2
		}
		return padL + plotW*float64(i)/float64(len(c.Categories)-1)
	}
	ypos := func(y float64) float64 { return padT + plotH*(1-y/top) }
	// Grid and y ticks.
	for y := 0.0; y <= top*1.0000001; y += step {
		py := ypos(y)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/>`+"\n", padL, py, padL+plotW, py)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", padL-6, py+4, tickLabel(y))
	}
	// Axes and x ticks.
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%.0f" stroke="black"/>`+"\n", padL, padT, padL, padT+plotH)
	fmt.Fprintf(&b, `<line x1="%d" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`+"\n", padL, padT+plotH, padL+plotW, padT+plotH)
	for i, cat := range c.Categories {
		px := xpos(i)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="black"/>`+"\n", px, padT+plotH, px, padT+plotH+5)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%s</text>`+"\n", px, padT+plotH+18, html.EscapeString(cat))
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%d" text-anchor="middle">%s</text>`+"\n", padL+plotW/2, chartH-10, html.EscapeString(c.XLabel))
	fmt.Fprintf(&b, `<text transform="translate(16 %.0f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", padT+plotH/2, html.EscapeString(c.YLabel))
	// Lines, markers and legend.
	for si, s := range c.Series {
		col := palette[si%len(palette)]
		var pts bytes.Buffer
		for i := range s.X {
			fmt.Fprintf(&pts, "%.1f,%.1f ", xpos(s.X[i]), ypos(s.Y[i]))
		}
		fmt.Fprintf(&b, `<g class="series"><title>%s</title>`, html.EscapeString(s.Name))
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, col, bytes.TrimSpace(pts.Bytes()))
		for i := range s.X {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s: %s</title></circle>`,
				xpos(s.X[i]), ypos(s.Y[i]), col, html.EscapeString(c.Categories[s.X[i]]), tickLabel(s.Y[i]))
		}
		b.WriteString("</g>\n")
		ly := padT + 10 + 18*si
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>`, chartW-padR+15, ly, chartW-padR+35, ly, col)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", chartW-padR+40, ly+4, html.EscapeString(s.Name))
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
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
