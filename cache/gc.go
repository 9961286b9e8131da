package cache

import (
	"runtime/debug"
	rtmetrics "runtime/metrics"
)

// rebuildGCPercent multiplies the collector's target (GOGC) while a full reload builds
// its table. The table being replaced stays live until the swap, so a collection during
// the build frees almost nothing: it marks both tables, the old one and the part of the
// new one built so far, and it does so while the webhook is serving. In an execution
// trace of a reload of 1,000,000 rows at 20,000 req/s, two such collections marked for
// 113 ms and 226 ms, and in those tenths of a second the webhook's scheduling delay rose
// to 7–26 ms at p99. With the target raised, the build runs without a collection and one
// collection after the swap marks only the new table. The cost is memory: the heap may
// grow by the build's own garbage (the rows read from the source) before that collection.
// A memory limit (GOMEMLIMIT) still applies, whatever the target.
const rebuildGCFactor = 3

// deferGC raises GOGC by rebuildGCFactor and returns the function that restores it. When
// the collector is off (GOGC=off), it changes nothing.
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
	return func() { debug.SetGCPercent(old) }
}
