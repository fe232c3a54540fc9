package decoder

import "fmt"

// readTuple reads the TupleData of an Insert for rel, which must be the last
// thing in the message. The values are copied out of the message: see
// detach.
func (d *Decoder) readTuple(r *reader, rel *Relation) ([]Value, int, error) {
	n := r.int16("column count")
	if r.err != nil {
		return nil, 0, r.err
	}
	if int(n) != len(rel.Columns) {
		return nil, 0, fmt.Errorf("tuple has %d columns, relation %d %s has %d", n, rel.ID, rel.qualifiedName(), len(rel.Columns))
	}
	values := d.carveValues(int(n))
	size := 0
	for i := range values {
		values[i] = r.value()
		if r.err != nil {
			return nil, 0, fmt.Errorf("column %d %q: %w", i, rel.Columns[i].Name, r.err)
		}
		size += len(values[i].Data)
	}
	if r.end("the tuple"); r.err != nil {
		return nil, 0, r.err
	}
	d.detach(values, size)
	return values, size, nil
}

// Rows are carved out of shared chunks rather than allocated one by one: a
// backlog decodes hundreds of thousands of small rows, and two allocations
// per row were most of the objects the pipeline made. A chunk is freed
// once every row carved from it is (rows are stored and dropped in WAL
// order, so that is soon after); a row larger than chunkBytes/8 gets its own
// buffer, so a 10 MiB event never keeps a chunk's neighbours alive nor the
// other way round.
const (
	chunkBytes  = 64 << 10
	chunkValues = 1024
)

// carveValues returns n zero values of a fresh row. The slice is capped at n
// so appending to it cannot reach the next row's.
func (d *Decoder) carveValues(n int) []Value {
	if n > chunkValues/8 {
		return make([]Value, n)
	}
	if len(d.valueChunk) < n {
		d.valueChunk = make([]Value, chunkValues)
	}
	v := d.valueChunk[:n:n]
	d.valueChunk = d.valueChunk[n:]
	return v
}

// detach copies the values' data, which alias the message, into one
// buffer carved from the decoder's byte chunk: the caller may then reuse
// the message buffer. Each Data is capped at its own length so appending to
// one cannot overwrite the next.
func (d *Decoder) detach(values []Value, size int) {
	var buf []byte
	switch {
	case size > chunkBytes/8:
		buf = make([]byte, 0, size)
	default:
		if len(d.byteChunk) < size {
			d.byteChunk = make([]byte, chunkBytes)
		}
		buf = d.byteChunk[:0:size]
		d.byteChunk = d.byteChunk[size:]
	}
	for i := range values {
		v := &values[i]
		if v.Data == nil {
			continue
		}
		start := len(buf)
		buf = append(buf, v.Data...)
		v.Data = buf[start:len(buf):len(buf)]
	}
}

// skipTuple checks the TupleData of a message we ignore without keeping it.
// Its column count is not held against the cached relation: the message is
// dropped either way, and an old key tuple need not follow the publication's
// column list.
func skipTuple(r *reader, what string) {
	n := r.int16("column count")
	if r.err != nil {
		r.err = fmt.Errorf("%s: %w", what, r.err)
		return
	}
	if n < 0 {
		r.err = fmt.Errorf("%s: negative column count %d", what, n)
		return
	}
	for i := 0; i < int(n); i++ {
		if r.value(); r.err != nil {
			r.err = fmt.Errorf("%s column %d: %w", what, i, r.err)
			return
		}
	}
}
