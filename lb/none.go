package lb

import (
	"context"
	"fmt"
)

// None is the balancer of a fleet that has none: there is nothing to drain
// traffic from, so Drain and Enable succeed at once and Servers lists no
// server.
//
// None knows no server names, so it cannot tell a misspelt one from a real
// one: it accepts every name and never returns ErrUnknownServer. Checking
// names is then the inventory's job. WithMinimum has nothing to count on None:
// with minUp > 0 every drain through it fails with ErrUnknownServer, so a
// configuration without a balancer must not set a minimum. KeepOut has no
// server to confirm on None either and fails the same way: the runner skips
// balancer steps, and so those checks, on a fleet without a balancer.
//
// Like every Balancer, None honours ctx: a call with an ended ctx fails.
type None struct{}

// Servers returns an empty list.
func (None) Servers(ctx context.Context) ([]Server, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("servers: %w", err)
	}
	return []Server{}, nil
}

// Drain does nothing.
func (None) Drain(ctx context.Context, server string, _ DrainOptions) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("drain %s: %w", server, err)
	}
	return nil
}

// Enable does nothing.
func (None) Enable(ctx context.Context, server string, _ EnableOptions) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("enable %s: %w", server, err)
	}
	return nil
}
