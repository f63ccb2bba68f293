package main

import (
	"context"
	"time"
)

// janitor asks the hub to sweep idle sessions every interval until ctx ends or
// the hub stops. The hub decides what expires; the janitor only keeps time, so
// the hub never needs a timer of its own.
func janitor(ctx context.Context, h *hub, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			if !h.send(sweepMsg{now: now}) {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}
