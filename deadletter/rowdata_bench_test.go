package deadletter_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/eventcdc/cdc/deadletter"
	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/sink"
)

// BenchmarkRowData renders a refused 1 MiB event of HTML-heavy JSON, as
// RowData does and as encoding/json did before (a map of string copies,
// with "<" escaped to six bytes): compare B/op side by side.
//
//	go test -run XXX -bench RowData -benchmem ./deadletter/
func BenchmarkRowData(b *testing.B) {
	rel := &decoder.Relation{Columns: []decoder.Column{{Name: "id"}, {Name: "event_type"}, {Name: "event_context"}}}
	payload := `{"html":"` + strings.Repeat(`<p class=\"x\">a &amp; b</p>`, 1<<20/30) + `"}`
	row := sink.Row{Relation: rel, Values: []decoder.Value{
		{Kind: decoder.ValueText, Data: []byte("00000000-0000-4000-8000-000000000001")},
		{Kind: decoder.ValueText, Data: []byte("page.saved")},
		{Kind: decoder.ValueText, Data: []byte(payload)},
	}}
	b.Run("RowData", func(b *testing.B) {
		b.SetBytes(int64(len(payload)))
		for b.Loop() {
			data, _ := deadletter.RowData(row)
			_ = data
		}
	})
	b.Run("encoding/json map", func(b *testing.B) {
		b.SetBytes(int64(len(payload)))
		for b.Loop() {
			m := make(map[string]*string, len(row.Values))
			for i, col := range rel.Columns {
				s := string(row.Values[i].Data)
				m[col.Name] = &s
			}
			data, _ := json.Marshal(m)
			_ = data
		}
	})
}
