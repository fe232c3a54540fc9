package sink

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/eventcdc/cdc/decoder"
)

// arrayCell is an Array column, filled from PostgreSQL's text form of an
// array: {1,2,NULL}, {"a b","c\"d"}, {{1,2},{3,4}} (what a Django
// ArrayField stores). Each element goes through the cell of the element
// type, so it is checked and converted as a column of that type would be,
// and a bad element refuses its row with the element's position. A NULL
// element is NULL in Array(Nullable(T)) and T's zero value otherwise, as a
// NULL column value is; a NULL array is an empty one (ClickHouse has no
// Nullable(Array)).
//
// The array's dimensions must be the column's: {{1,2}} does not go into
// Array(Int32), {1,2} not into Array(Array(Int32)). A lower bound other
// than 1 ([0:1]={1,2}) is dropped: ClickHouse arrays have none.
type arrayCell struct {
	typ   string
	depth int    // 2 for Array(Array(T))
	elem  string // T
	types serverTypes
	// cells holds one cell per element of the value, reused from row to
	// row: an element's value() points into its cell, and all of a row's
	// elements are handed over at once.
	cells []cell
	used  int
	v     []any // what set made: []any nested depth deep, elements as value() gives them
}

func (st serverTypes) newArrayCell(chType string) cell {
	elem, depth := chType, 0
	for {
		inner, ok := unwrap(elem, "Array")
		if !ok {
			break
		}
		elem, depth = inner, depth+1
	}
	if composite(elem) {
		return refusedCell{fmt.Errorf("cdc does not convert values into %s: make the event_log column a String (json arrives as JSON text)", chType)}
	}
	return &arrayCell{typ: chType, depth: depth, elem: elem, types: st}
}

func (c *arrayCell) set(v decoder.Value) error {
	switch v.Kind {
	case decoder.ValueNull:
		c.v = []any{}
		return nil
	case decoder.ValueText:
	default:
		return errNotText
	}
	c.used = 0
	p := pgArray{b: v.Data}
	p.skipBounds()
	arr, err := p.array(c, 0)
	if err == nil && p.i != len(p.b) {
		err = errors.New("text follows the closing brace")
	}
	if err != nil {
		var elemErr *elementError
		if errors.As(err, &elemErr) {
			return fmt.Errorf("element %d of %q: %w", elemErr.n, clip(v.Data), elemErr.err)
		}
		return fmt.Errorf("%q is not a PostgreSQL array for %s (%v): %s takes an outbox column of an array type, e.g. text[] or integer[]", clip(v.Data), c.typ, err, c.typ)
	}
	c.v = arr
	return nil
}

func (c *arrayCell) value() any { return c.v }

// element converts one element through the next free element cell.
func (c *arrayCell) element(data []byte, null bool) (any, error) {
	if c.used == len(c.cells) {
		c.cells = append(c.cells, c.types.newCell(c.elem, false))
	}
	e := c.cells[c.used]
	c.used++
	v := decoder.Value{Kind: decoder.ValueText, Data: data}
	if null {
		v = decoder.Value{Kind: decoder.ValueNull}
	}
	if err := e.set(v); err != nil {
		return nil, &elementError{n: c.used, err: err}
	}
	return e.value(), nil
}

// elementError is an element its cell refused, numbered from 1 in the
// order PostgreSQL writes them.
type elementError struct {
	n   int
	err error
}

func (e *elementError) Error() string { return fmt.Sprintf("element %d: %v", e.n, e.err) }
func (e *elementError) Unwrap() error { return e.err }

// boxArrayOID is PostgreSQL's box[], the one built-in array type whose
// elements are separated by ';', not ',': an element such as
// (1,1),(0,0) goes unquoted, and pgArray would split it.
const boxArrayOID = 1020

var errBoxArray = errors.New("a box[] value is not read into an Array column (its elements are separated by ';'): make the event_log column a String")

// pgArray reads PostgreSQL's array output (array_out): braces around
// elements separated by commas (the delimiter of every type but box);
// an element is double-quoted, with \ escaping " and \, when it is empty,
// is the word NULL, or holds a brace, quote, backslash, comma or space;
// an unquoted NULL is a null element.
type pgArray struct {
	b []byte
	i int
}

// skipBounds steps over a dimension decoration, "[0:1]={…}" or
// "[1:2][1:3]={…}", which array_out writes when a lower bound is not 1.
func (p *pgArray) skipBounds() {
	if len(p.b) == 0 || p.b[0] != '[' {
		return
	}
	if eq := bytes.Index(p.b, []byte("]={")); eq >= 0 {
		p.i = eq + 2
	}
}

// array reads one {…} at nesting level (0 for the outermost), whose items
// are arrays while level is below the column's depth minus one and
// elements at the last level.
func (p *pgArray) array(c *arrayCell, level int) ([]any, error) {
	if p.i >= len(p.b) || p.b[p.i] != '{' {
		return nil, fmt.Errorf("no { at byte %d", p.i)
	}
	p.i++
	items := []any{}
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return items, nil
	}
	for {
		if p.i >= len(p.b) {
			return nil, errors.New("no closing }")
		}
		inner := p.b[p.i] == '{'
		switch {
		case inner && level == c.depth-1:
			return nil, fmt.Errorf("it has more dimensions than %s", c.typ)
		case !inner && level < c.depth-1:
			return nil, fmt.Errorf("it has fewer dimensions than %s", c.typ)
		case inner:
			sub, err := p.array(c, level+1)
			if err != nil {
				return nil, err
			}
			items = append(items, sub)
		default:
			data, null, err := p.element()
			if err != nil {
				return nil, err
			}
			v, err := c.element(data, null)
			if err != nil {
				return nil, err
			}
			items = append(items, v)
		}
		if p.i >= len(p.b) {
			return nil, errors.New("no closing }")
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return items, nil
		default:
			return nil, fmt.Errorf("%q at byte %d where a comma or } belongs", p.b[p.i], p.i)
		}
	}
}

// element reads one element up to the comma or brace after it. Unquoted
// and escape-free quoted elements are slices of the value's own bytes; an
// escaped one is copied.
func (p *pgArray) element() (data []byte, null bool, err error) {
	if p.b[p.i] != '"' {
		start := p.i
		for p.i < len(p.b) && p.b[p.i] != ',' && p.b[p.i] != '}' {
			switch p.b[p.i] {
			case '"', '{', '\\':
				return nil, false, fmt.Errorf("%q inside an unquoted element at byte %d", p.b[p.i], p.i)
			}
			p.i++
		}
		data = p.b[start:p.i]
		if len(data) == 0 {
			return nil, false, fmt.Errorf("empty element at byte %d", start)
		}
		return data, bytes.EqualFold(data, []byte("NULL")), nil
	}
	p.i++
	start, escaped := p.i, false
	for ; p.i < len(p.b); p.i++ {
		switch p.b[p.i] {
		case '\\':
			escaped = true
			p.i++
		case '"':
			data = p.b[start:p.i]
			p.i++
			if escaped {
				data = unescape(data)
			}
			return data, false, nil
		}
	}
	return nil, false, errors.New("no closing quote")
}

func unescape(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' && i+1 < len(b) {
			i++
		}
		out = append(out, b[i])
	}
	return out
}
