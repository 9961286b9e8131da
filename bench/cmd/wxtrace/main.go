// Command wxtrace reads a Go execution trace (Go 1.22 or later) of the wxlookup server
// and prints, per window of time (a tenth of a second by default), the CPU that each
// class of goroutine used (the webhook, the loader's rebuild, ristretto, MySQL, the
// collector's mark workers, the admin listener, the rest) in % of a core, the time spent
// in GC mark assists, and the scheduling delay (Runnable to Running) of the webhook's
// goroutines at p50, p99 and max. Before the table it lists the collector's mark phases
// with the heap in use and the heap goal at their start; after it, the median and p90 of
// the webhook's p99 delay over the windows in which the loader was quiet and over those
// in which it was busy, and the webhook's goroutines that ran longer than -slow without a
// transition (the OS took their thread away). The output is aligned plain text, for
// Markdown code blocks. wxbench writes such a trace across a full reload, as
// reload.trace in the work directory it names at the end:
//
//	go run ./bench/cmd/wxbench -keep -trace-reload 30s -scenarios steady,reload -systems wxlookup -mode plain -micro=false -profile 0
//	go run ./bench/cmd/wxtrace [-window 100ms] [-from 0s] [-to 0s] [-slow 3ms] WORKDIR/reload.trace
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/exp/trace"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "wxtrace:", err)
		os.Exit(1)
	}
}

func run() error {
	opt := options{rules: defaultRules}
	flag.DurationVar(&opt.window, "window", DefaultWindow, "length of a row")
	flag.DurationVar(&opt.from, "from", 0, "start of the range analysed, from the trace's start")
	flag.DurationVar(&opt.to, "to", 0, "end of the range analysed, from the trace's start (0: the trace's end)")
	flag.DurationVar(&opt.slow, "slow", DefaultSlow, "a webhook goroutine Running longer than this without a transition is a long run")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: wxtrace [-window 100ms] [-from 0s] [-to 0s] [-slow 3ms] FILE.trace")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	path := flag.Arg(0)
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := trace.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	res, err := analyse(r, opt)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return write(os.Stdout, filepath.Base(path), res, summarise(res), opt.slow)
}
