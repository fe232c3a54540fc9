package outbox

// Test hooks: force the INSERT or the COPY path, and reach snakeCase.

func (p Publisher) ForceInsert() Publisher { p.path = pathInsert; return p }
func (p Publisher) ForceCopy() Publisher   { p.path = pathCopy; return p }

var SnakeCase = snakeCase

const CopyMinEvents, CopyMinBytes = copyMinEvents, copyMinBytes
