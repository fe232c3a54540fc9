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
	// Read into scratch first: whether the row is carved from the chunks
	// depends on its size.
	if cap(d.scratch) < int(n) {
		d.scratch = make([]Value, n)
	}
	scratch := d.scratch[:n]
	defer clear(scratch) // it aliases the message, which may be megabytes
	size, binary := 0, false
	for i := range scratch {
		scratch[i] = r.value()
		if r.err != nil {
			return nil, 0, fmt.Errorf("column %d %q: %w", i, rel.Columns[i].Name, r.err)
		}
		n := len(scratch[i].Data)
		if scratch[i].Kind == ValueBinary {
			col := rel.Columns[i]
			bound, ok := textBound(col.TypeOID, n)
			if !ok {
				return nil, 0, &BinaryError{Column: col.Name, TypeOID: col.TypeOID, Reason: "of a type cdc reads only as text"}
			}
			n, binary = bound, true
		}
		size += n
	}
	if r.end("the tuple"); r.err != nil {
		return nil, 0, r.err
	}
	values, err := d.detach(scratch, size, rel)
	if err != nil {
		return nil, 0, err
	}
	if binary {
		// The text is often shorter than its bound: the row's size is
		// what it holds.
		size = 0
		for _, v := range values {
			size += len(v.Data)
		}
	}
	return values, size, nil
}

// Rows are carved out of shared chunks rather than allocated one by one: a
// backlog decodes hundreds of thousands of small rows, and two allocations
// per row were most of the objects the pipeline made. A chunk is freed
// once every row carved from it is (rows are stored and dropped in WAL
// order, so that is soon after). A row larger than chunkBytes/8 gets its
// own values and buffer: a chunk of values points at the bytes of every row
// carved from it, so a 10 MiB event carved from one would stay in memory
// until the chunk's last row is stored.
const (
	chunkBytes  = 64 << 10
	chunkValues = 1024
	largeRow    = chunkBytes / 8
)

// noBytes backs the empty values of a row that holds no bytes at all.
var noBytes = []byte{}

// detach copies values, which alias the message, into a row of their own:
// the caller may then reuse the message buffer. A binary value of rel's
// column becomes its text (binary.go); size must hold that text's bound.
// The row's slice and each Data are capped at their length, so appending
// to one cannot overwrite the next.
func (d *Decoder) detach(values []Value, size int, rel *Relation) ([]Value, error) {
	n := len(values)
	var row []Value
	var buf []byte
	if size > largeRow || n > chunkValues/8 {
		row = make([]Value, n)
		buf = make([]byte, 0, size)
	} else {
		if len(d.valueChunk) < n {
			d.valueChunk = make([]Value, chunkValues)
		}
		row, d.valueChunk = d.valueChunk[:n:n], d.valueChunk[n:]
		if len(d.byteChunk) < size {
			d.byteChunk = make([]byte, chunkBytes)
		}
		buf, d.byteChunk = d.byteChunk[:0:size], d.byteChunk[size:]
	}
	if buf == nil {
		// A row of empty and NULL values before any chunk exists: its
		// empty text values still get non-nil Data, as Value promises.
		buf = noBytes[:0:0]
	}
	for i, v := range values {
		if v.Data != nil {
			start := len(buf)
			if v.Kind == ValueBinary {
				col := rel.Columns[i]
				var bad string
				if buf, bad = appendText(buf, col.TypeOID, v.Data); bad != "" {
					return nil, &BinaryError{Column: col.Name, TypeOID: col.TypeOID, Reason: bad}
				}
				v.Kind = ValueText
			} else {
				buf = append(buf, v.Data...)
			}
			v.Data = buf[start:len(buf):len(buf)]
		}
		row[i] = v
	}
	return row, nil
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
