package testenv

import (
	"bytes"
	"sync"
)

// processOutput collects a child process's output while tests read it.
type processOutput struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *processOutput) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *processOutput) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
