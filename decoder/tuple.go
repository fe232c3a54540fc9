package decoder

import "fmt"

// readTuple reads the TupleData of an Insert for rel, which must be the last
// thing in the message. The values are copied out of the message: see
// detach.
func readTuple(r *reader, rel *Relation) ([]Value, int, error) {
	n := r.int16("column count")
	if r.err != nil {
		return nil, 0, r.err
	}
	if int(n) != len(rel.Columns) {
		return nil, 0, fmt.Errorf("tuple has %d columns, relation %d %s has %d", n, rel.ID, rel.qualifiedName(), len(rel.Columns))
	}
	values := make([]Value, n)
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
	detach(values, size)
	return values, size, nil
}

// detach copies the values' data, which alias the message, into one new
// buffer: the caller may then reuse the message buffer, and a decoded row
// costs one allocation for its bytes however many columns it has. Each Data
// is capped at its own length so appending to one cannot overwrite the next.
func detach(values []Value, size int) {
	buf := make([]byte, 0, size)
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
