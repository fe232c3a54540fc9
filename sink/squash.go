package sink

import (
	"context"
	"fmt"
	"strconv"

	"go.uber.org/zap"
)

// squashRowBytes is what storedNone counts for each row beyond twice its
// values: a generous bound of what ClickHouse holds for it in memory
// (offsets, numbers wider in binary than in text, columns it fills with
// their defaults).
const squashRowBytes = 1 << 10

// storedNone reports whether ClickHouse cannot have stored any of sent,
// the rows of an INSERT that broke: the server squashes an INSERT's
// blocks until they hold min_insert_block_size_rows or _bytes
// (1,048,576 rows or 256 MiB by default), writing nothing before, and
// drops what it squashed when the INSERT fails. sent is below both when
// its rows are fewer and twice its values plus squashRowBytes a row are
// fewer bytes (a setting of 0 leaves its measure out; both 0, every block
// is written as it comes). When the settings cannot be read it says
// false: the read-back is asked, as it would be without this.
func (c *ClickHouse) storedNone(ctx context.Context, sent []Row) bool {
	minRows, minBytes, err := c.squashSettings(ctx)
	if err != nil {
		c.log.Debug("could not read the server's min_insert_block_size settings; asking which rows of the broken INSERT are stored", zap.Error(err))
		return false
	}
	bytes := uint64(0)
	for i := range sent {
		bytes += 2*uint64(sent[i].Size) + squashRowBytes
	}
	return squashedWhole(uint64(len(sent)), bytes, minRows, minBytes)
}

// squashedWhole reports whether rows rows of bytes bytes stay below the
// squashing thresholds minRows and minBytes (0: that one not applied).
func squashedWhole(rows, bytes, minRows, minBytes uint64) bool {
	if minRows == 0 && minBytes == 0 {
		return false
	}
	return (minRows == 0 || rows < minRows) && (minBytes == 0 || bytes < minBytes)
}

// squashSettings reads min_insert_block_size_rows and _bytes as the
// sink's queries have them: the DSN's settings and the user's profile.
func (c *ClickHouse) squashSettings(ctx context.Context) (minRows, minBytes uint64, err error) {
	values, err := c.serverSettings(ctx, "min_insert_block_size settings", "value", "min_insert_block_size_rows", "min_insert_block_size_bytes")
	if err != nil {
		return 0, 0, err
	}
	if len(values) != 2 {
		return 0, 0, fmt.Errorf("read min_insert_block_size settings: %d of 2 found", len(values))
	}
	if minRows, err = strconv.ParseUint(values["min_insert_block_size_rows"], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("read min_insert_block_size_rows: %w", err)
	}
	if minBytes, err = strconv.ParseUint(values["min_insert_block_size_bytes"], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("read min_insert_block_size_bytes: %w", err)
	}
	return minRows, minBytes, nil
}
