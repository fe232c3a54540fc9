package replication

import (
	"sync/atomic"
	"time"
)

// State is what other goroutines may read of a running replicator.
type State struct {
	streaming atomic.Bool
	lastMsg   atomic.Int64 // Unix nanos of the last message from the server
}

func (s *State) setStreaming(v bool) { s.streaming.Store(v) }

func (s *State) touch(now time.Time) { s.lastMsg.Store(now.UnixNano()) }

// Streaming reports whether the replication connection is up and streaming.
func (s *State) Streaming() bool { return s.streaming.Load() }

// LastMessage returns when the server last sent anything (data or keepalive).
func (s *State) LastMessage() time.Time { return time.Unix(0, s.lastMsg.Load()) }
