// Command wxceiling is the ceiling of the benchmarks: a fasthttp server, configured as
// wxlookup's webhook is, whose handler answers every request with a constant "success".
// No WeChat server can answer faster on the same machine. It prints its address and
// serves until SIGINT or SIGTERM.
//
//	wxceiling [-listen 127.0.0.1:0] [-work 0]
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "listen address")
	work := flag.Duration("work", 0, "spin this long in each request: a control with a handler's CPU cost but no locks or memory")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wxceiling:", err)
		os.Exit(1)
	}
	// The settings of wxlookup's webhook server (server.New), so only the handler differs.
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if *work > 0 {
				for start := time.Now(); time.Since(start) < *work; {
				}
			}
			ctx.SetContentType("text/plain; charset=utf-8")
			ctx.SetBodyString("success")
		},
		NoDefaultServerHeader:        true,
		ReadTimeout:                  5 * time.Second,
		WriteTimeout:                 5 * time.Second,
		IdleTimeout:                  60 * time.Second,
		MaxRequestBodySize:           64 << 10,
		ReadBufferSize:               8 << 10,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
	}
	fmt.Printf("listening %s\n", ln.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.Shutdown()
	}()
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "wxceiling:", err)
		os.Exit(1)
	}
}
