package cache

import (
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
)

// rebuildGCFactor multiplies the collector's target (GOGC) while a full reload builds
// its table. The table being replaced stays live until the swap, so a collection during
// the build frees almost nothing: it marks both tables, the old one and the part of the
// new one built so far, and it does so while the webhook is serving. In an execution
// trace of a reload of 1,000,000 rows at 20,000 req/s, two such collections marked for
// 113 ms and 226 ms, and in those tenths of a second the webhook's scheduling delay rose
// to 4–26 ms at p99. With the target raised, the build runs without a collection, and one
// collection after the swap marks only the new table.
//
// The cost is memory: the build's own garbage (the rows read from the source, ristretto's
// items and map growth) stays until that collection. In traces of the same reload the
// heap grew from about 620 MiB to 1,400 MiB by the swap, where collections during the build
// had held it near 750 MiB. With GOGC tripled, a collection still came just before the
// swap (at 1,335 MiB of a 1,452 MiB goal); hence four times. A memory limit (GOMEMLIMIT)
// still applies, whatever the target.
//
// The collection after the swap is started by the reload itself, before the target is
// restored. Restoring first would leave the heap far over the restored goal, and the
// collector would then make every goroutine that allocates, replies included, help it
// mark (in the trace: assists took 71 % of a core for a tenth of a second).
const rebuildGCFactor = 4

// deferGC raises GOGC by rebuildGCFactor and returns the function that collects and then
// restores it. When the collector is off (GOGC=off), it changes nothing.
func deferGC() (restore func()) {
	s := []rtmetrics.Sample{{Name: "/gc/gogc:percent"}}
	rtmetrics.Read(s)
	if s[0].Value.Kind() != rtmetrics.KindUint64 {
		return func() {} // not offered by this runtime: leave the collector alone
	}
	old := int(s[0].Value.Uint64())
	if old <= 0 {
		return func() {} // off (reported as 0): nothing to defer
	}
	debug.SetGCPercent(old * rebuildGCFactor)
	return func() {
		runtime.GC()
		debug.SetGCPercent(old)
	}
}
