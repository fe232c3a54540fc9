package testenv

import (
	"runtime"
	"testing"
)

// PerEvent reports a benchmark's allocations and bytes allocated per
// event, for a benchmark whose op handles events events; call the
// function it returns after the loop. go test prints allocs/op as a
// whole number, so an allocation made once per thousand events (a
// slab, a buffer's growth) reads 0 there; allocs/event keeps it. Call it
// before b.Loop's first call, which starts the timer: reading the
// allocator's statistics stops the world.
func PerEvent(b *testing.B, events int) (done func()) {
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	return func() {
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		n := float64(b.N) * float64(events)
		b.ReportMetric(float64(after.Mallocs-before.Mallocs)/n, "allocs/event")
		b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/n, "B/event")
	}
}
