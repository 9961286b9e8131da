package report

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// systemOrder fixes each system's colour across the panels.
var systemOrder = []string{"ceiling", "seed baseline", "wxlookup plaintext", "wxlookup safe mode"}

func systemColor(name string) color.Color {
	for i, s := range systemOrder {
		if s == name {
			return plotutil.Color(i)
		}
	}
	return plotutil.Color(len(systemOrder))
}

// Chart draws bench.png: latency by percentile per system for the steady and the burst
// runs, wxlookup's p99 second by second in the steady, reload and outage runs, commit →
// visible latency by percentile per change-feed mode, wxlookup's heap over the steady and
// reload runs, and the maximum throughput per system.
func (r *Report) Chart(path string) error {
	var panels []*plot.Plot
	for _, sc := range []struct{ key, title string }{{"steady", "Steady"}, {"burst", "Shift-change burst"}} {
		if runs := r.runs(sc.key); len(runs) > 0 {
			p, err := percentilePlot(sc.title+": "+runs[0].Shape, runs)
			if err != nil {
				return err
			}
			panels = append(panels, p)
		}
	}
	if p, err := r.timelinePlot(); err != nil {
		return err
	} else if p != nil {
		panels = append(panels, p)
	}
	for _, f := range []func() (*plot.Plot, error){r.freshPlot, r.heapPlot} {
		p, err := f()
		if err != nil {
			return err
		}
		if p != nil {
			panels = append(panels, p)
		}
	}
	if len(r.Max) > 0 {
		p, err := r.maxPlot()
		if err != nil {
			return err
		}
		panels = append(panels, p)
	}
	if len(panels) == 0 {
		return nil
	}
	cols := min(len(panels), 2)
	rows := (len(panels) + cols - 1) / cols
	grid := make([][]*plot.Plot, rows)
	for i := range grid {
		grid[i] = make([]*plot.Plot, cols)
	}
	for i, p := range panels {
		grid[i/cols][i%cols] = p
	}
	img := vgimg.New(vg.Length(cols)*9*vg.Inch, vg.Length(rows)*6*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Inch / 3, PadY: vg.Inch / 3,
		PadTop: vg.Inch / 6, PadBottom: vg.Inch / 6, PadLeft: vg.Inch / 6, PadRight: vg.Inch / 6}
	canvases := plot.Align(grid, tiles, dc)
	for j := range grid {
		for i, p := range grid[j] {
			if p != nil {
				p.Draw(canvases[j][i])
			}
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// percentileX places percentile p on the x axis: 0 at p0, 1 at p90, 2 at p99, 3 at p99.9.
func percentileX(p float64) float64 { return -math.Log10(1 - p/100) }

func ms(d time.Duration) float64 { return math.Max(float64(d)/1e6, 0.001) }

func newPlot(title, xLabel, yLabel string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.X.Label.Text, p.Y.Label.Text = xLabel, yLabel
	p.Add(plotter.NewGrid())
	p.Legend.Top, p.Legend.Left = true, true
	return p
}

func logY(p *plot.Plot) {
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
}

func percentilePlot(title string, runs []Run) (*plot.Plot, error) {
	p := newPlot(title, "percentile", "latency from scheduled send (ms, log)")
	logY(p)
	maxX := 0.0
	for _, run := range runs {
		pts := make(plotter.XYs, 0, len(run.Curve))
		for _, c := range run.Curve {
			x := percentileX(c.Percentile)
			pts = append(pts, plotter.XY{X: x, Y: ms(c.Latency)})
			maxX = math.Max(maxX, x)
		}
		if len(pts) == 0 {
			continue
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return nil, err
		}
		l.Color, l.Width = systemColor(run.System), vg.Points(2)
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s (%.0f/s ok)", run.System, run.Throughput), l)
	}
	percentileTicks(p, maxX)
	return p, nil
}

// percentileTicks labels p's x axis in percentiles, up to maxX (percentileX).
func percentileTicks(p *plot.Plot, maxX float64) {
	var ticks []plot.Tick
	for i, label := range []string{"0%", "90%", "99%", "99.9%", "99.99%", "99.999%"} {
		if float64(i) <= maxX+0.01 {
			ticks = append(ticks, plot.Tick{Value: float64(i), Label: label})
		}
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.X.Min, p.X.Max = 0, math.Max(maxX, 1)
}

// freshPlot draws commit → visible latency by percentile for each change-feed mode and
// kind of change; nil when no freshness was measured.
func (r *Report) freshPlot() (*plot.Plot, error) {
	p := newPlot("Freshness: commit → first reply that shows the change", "percentile of the changes seen",
		"latency (ms, log)")
	logY(p)
	maxX, lines := 0.0, 0
	for i, f := range r.Fresh {
		for j, o := range f.Ops {
			if len(o.Curve) == 0 || o.Combined {
				continue
			}
			pts := make(plotter.XYs, 0, len(o.Curve))
			for _, c := range o.Curve {
				x := percentileX(c.Percentile)
				pts = append(pts, plotter.XY{X: x, Y: ms(c.Latency)})
				maxX = math.Max(maxX, x)
			}
			l, err := plotter.NewLine(pts)
			if err != nil {
				return nil, err
			}
			l.Color, l.Width = plotutil.Color(j), vg.Points(2)
			if i > 0 {
				l.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
			}
			p.Add(l)
			p.Legend.Add(fmt.Sprintf("%s %s (%d, p99 %s)", f.Mode, o.Name, o.Seen, FormatDuration(o.P99)), l)
			lines++
		}
	}
	if lines == 0 {
		return nil, nil
	}
	percentileTicks(p, maxX)
	return p, nil
}

// heapPlot draws wxlookup plaintext's Go heap in use over its steady and reload runs, the
// reload's events as vertical lines; nil without two such runs.
func (r *Report) heapPlot() (*plot.Plot, error) {
	var runs []*Run
	for _, sc := range []string{"steady", "reload"} {
		if run := r.Run(sc, "wxlookup plaintext"); run != nil && run.Heap != nil {
			runs = append(runs, run)
		}
	}
	if len(runs) < 2 {
		return nil, nil
	}
	p := newPlot("wxlookup plaintext, Go heap in use: steady and full reload", "seconds into the run (events: dotted)", "MiB")
	top := 0.0
	for _, run := range runs {
		top = math.Max(top, run.Heap.Peak/(1<<20))
	}
	for i, run := range runs {
		pts := make(plotter.XYs, 0, len(run.Heap.Points))
		for _, h := range run.Heap.Points {
			pts = append(pts, plotter.XY{X: h.At.Seconds(), Y: h.Bytes / (1 << 20)})
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return nil, err
		}
		l.Color, l.Width = plotutil.Color(i+4), vg.Points(2)
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s (peak %.0f MiB)", run.Scenario, run.Heap.Peak/(1<<20)), l)
		for _, e := range run.Events {
			ev, err := plotter.NewLine(plotter.XYs{{X: e.At.Seconds(), Y: 0}, {X: e.At.Seconds(), Y: top}})
			if err != nil {
				return nil, err
			}
			ev.Color, ev.Dashes = plotutil.Color(i+4), []vg.Length{vg.Points(2), vg.Points(3)}
			p.Add(ev)
		}
	}
	p.Y.Min = 0
	return p, nil
}

// timelinePlot draws wxlookup plaintext's p99 per second in the steady, reload and outage
// runs, with the events as vertical lines.
func (r *Report) timelinePlot() (*plot.Plot, error) {
	var runs []*Run
	for _, sc := range []string{"steady", "reload", "outage"} {
		if run := r.Run(sc, "wxlookup plaintext"); run != nil {
			runs = append(runs, run)
		}
	}
	if len(runs) < 2 {
		return nil, nil
	}
	p := newPlot("wxlookup plaintext, p99 of each second: steady, full reload, MySQL outage",
		"seconds into the run (events: dotted)", "p99 latency (ms, log)")
	logY(p)
	top := 0.0
	for _, run := range runs {
		for _, s := range run.Timeline {
			top = math.Max(top, ms(s.P99))
		}
	}
	for i, run := range runs {
		pts := make(plotter.XYs, 0, len(run.Timeline))
		for _, s := range run.Timeline {
			pts = append(pts, plotter.XY{X: s.At.Seconds(), Y: ms(s.P99)})
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return nil, err
		}
		l.Color, l.Width = plotutil.Color(i+4), vg.Points(2)
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s (p99 %s)", run.Scenario, FormatDuration(run.P99)), l)
		for _, e := range run.Events {
			ev, err := plotter.NewLine(plotter.XYs{{X: e.At.Seconds(), Y: 0.01}, {X: e.At.Seconds(), Y: math.Max(top, 1)}})
			if err != nil {
				return nil, err
			}
			ev.Color, ev.Dashes = plotutil.Color(i+4), []vg.Length{vg.Points(2), vg.Points(3)}
			p.Add(ev)
		}
	}
	return p, nil
}

func (r *Report) maxPlot() (*plot.Plot, error) {
	p := newPlot("Maximum throughput with p99 < 5ms and no errors", "", "requests a second")
	p.Legend.Top = false
	for i, m := range r.Max {
		v := plotter.Values{0}
		v = append(v[:0], m.Best)
		b, err := plotter.NewBarChart(v, vg.Inch)
		if err != nil {
			return nil, err
		}
		b.Color = systemColor(m.System)
		b.LineStyle.Width = 0
		b.XMin = float64(i)
		p.Add(b)
		labels, err := plotter.NewLabels(plotter.XYLabels{XYs: plotter.XYs{{X: float64(i), Y: m.Best}},
			Labels: []string{fmt.Sprintf("%.0f", m.Best)}})
		if err != nil {
			return nil, err
		}
		p.Add(labels)
	}
	names := make([]string, len(r.Max))
	for i, m := range r.Max {
		names[i] = m.System
	}
	p.NominalX(names...)
	p.Y.Min = 0
	p.Y.Tick.Marker = plot.TickerFunc(func(min, max float64) []plot.Tick {
		ticks := plot.DefaultTicks{}.Ticks(min, max)
		for i := range ticks {
			if ticks[i].Label != "" {
				ticks[i].Label = fmt.Sprintf("%.0f", ticks[i].Value)
			}
		}
		return ticks
	})
	return p, nil
}
