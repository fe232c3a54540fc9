package testenv

import (
	"encoding/json"
	"testing"
)

// Plan is one node of a plan printed by EXPLAIN (ANALYZE, FORMAT JSON),
// with BUFFERS or without.
type Plan struct {
	Type    string  `json:"Node Type"`
	Index   string  `json:"Index Name"`
	Rows    float64 `json:"Actual Rows"` // per loop
	Removed float64 `json:"Rows Removed by Filter"`
	Loops   float64 `json:"Actual Loops"` // 3 for a parallel scan with two workers
	Workers float64 `json:"Workers Launched"`
	Plans   []Plan  `json:"Plans"`
	// With BUFFERS: the shared buffers the node (and those under it) found
	// in memory and read.
	SharedHitBlocks  int64 `json:"Shared Hit Blocks"`
	SharedReadBlocks int64 `json:"Shared Read Blocks"`
}

// ParsePlan reads the output of EXPLAIN (ANALYZE, FORMAT JSON) of one
// statement.
func ParsePlan(t testing.TB, out string) Plan {
	t.Helper()
	var plans []struct{ Plan Plan }
	if err := json.Unmarshal([]byte(out), &plans); err != nil || len(plans) != 1 {
		t.Fatalf("explain output %s: %v", out, err)
	}
	return plans[0].Plan
}

// Nodes lists the plan's nodes, top down.
func (p Plan) Nodes() []Plan {
	out := []Plan{p}
	for _, c := range p.Plans {
		out = append(out, c.Nodes()...)
	}
	return out
}
