package main

import "testing"

func TestClassify(t *testing.T) {
	tests := []struct {
		name   string
		frames []string
		want   class
	}{
		{"no frames", nil, classOther},
		{"runtime only", []string{"runtime.gopark", "runtime.chanrecv1", "main.main"}, classOther},
		{"fasthttp worker", []string{"runtime.gopark", "internal/poll.(*FD).Read",
			"github.com/valyala/fasthttp.(*Server).serveConn", "github.com/valyala/fasthttp.(*workerPool).workerFunc"}, classWebhook},
		{"fasthttp subpackage", []string{"github.com/valyala/fasthttp/stackless.(*writer).Write"}, classWebhook},
		{"webhook handler", []string{"wxlookup/server.(*Server).handle", "wxlookup/cache.(*Cache).Lookup"}, classWebhook},
		{"webhook reading ristretto", []string{"github.com/dgraph-io/ristretto/v2.(*Cache[go.shape.uint64,go.shape.*uint8]).Get",
			"wxlookup/cache.(*table).get", "wxlookup/server.(*Server).handle"}, classWebhook},
		{"admin reload runs the loader", []string{"wxlookup/cache.(*Cache).build", "wxlookup/cache.(*Cache).loadLocked",
			"wxlookup/cache.(*Cache).Reload", "wxlookup/server.(*Admin).reload", "wxlookup/server.(*Admin).ServeHTTP",
			"net/http.serverHandler.ServeHTTP"}, classLoader},
		{"admin pprof trace", []string{"time.Sleep", "net/http/pprof.Trace", "wxlookup/server.(*Admin).ServeHTTP"}, classAdmin},
		{"build closure", []string{"wxlookup/cache.(*Cache).build.func1"}, classLoader},
		{"pacer pause", []string{"runtime.gopark", "wxlookup/cache.sleepCtx", "wxlookup/cache.(*pacer).tick"}, classLoader},
		{"reconcile scan", []string{"github.com/go-sql-driver/mysql.(*mysqlRows).Next", "wxlookup/store.(*Store).Keys",
			"wxlookup/cache.(*Cache).reconcileLocked", "wxlookup/cache.(*Cache).step"}, classLoader},
		{"refresh is not the rebuild", []string{"wxlookup/cache.(*Cache).refreshLocked", "wxlookup/cache.(*Cache).loop"}, classOther},
		{"refresh reading MySQL", []string{"github.com/go-sql-driver/mysql.(*mysqlConn).readPacket",
			"wxlookup/cache.(*Cache).refreshLocked"}, classMySQL},
		{"a name that only starts like a rule", []string{"wxlookup/cache.(*Cache).buildIndex",
			"wxlookup/serverless.run", "github.com/valyala/fasthttpx.Do"}, classOther},
		{"ristretto's own goroutine", []string{"github.com/dgraph-io/ristretto/v2.(*Cache[go.shape.uint64,go.shape.*uint8]).processItems"}, classRistretto},
		{"mark worker", []string{"runtime.gopark", "runtime.gcBgMarkWorker"}, classGCWorker},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classify(tt.frames, defaultRules); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}
