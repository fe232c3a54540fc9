package outbox_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/eventcdc/cdc/outbox"
)

// BenchmarkPublish compares the INSERT and COPY paths by batch size, each
// batch in its own transaction (rolled back), over a real connection. The crossover sets
// copyMinEvents.
func BenchmarkPublish(b *testing.B) {
	ctx := context.Background()
	conn := connect(b)
	for _, n := range []int{1, 8, 32, 64, 128, 512} {
		events := make([]outbox.Event, n)
		for i := range events {
			events[i] = outbox.Event{Type: "user_created", Environment: "bench",
				Context: map[string]any{"user_id": i, "email": "someone@example.com", "plan": "pro"}}
		}
		for _, path := range []struct {
			name string
			pub  outbox.Publisher
		}{{"insert", outbox.Publisher{}.ForceInsert()}, {"copy", outbox.Publisher{}.ForceCopy()}} {
			b.Run(fmt.Sprintf("%s/%d", path.name, n), func(b *testing.B) {
				for b.Loop() {
					tx, err := conn.Begin(ctx)
					if err != nil {
						b.Fatal(err)
					}
					if err := path.pub.Publish(ctx, tx, events...); err != nil {
						b.Fatal(err)
					}
					// Roll back: the commit costs the same on both paths.
					if err := tx.Rollback(ctx); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
			})
		}
	}
}
