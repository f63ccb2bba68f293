// Package soak holds dugout's soak tests: load without loss. Each test starts
// the real binary (internal/servertest) on loopback, drives it with many
// WebSocket clients from this process, and checks that nothing is lost and
// nothing outlives its connection. Figures are printed with t.Logf; see
// README.md for the large run.
package soak

import (
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var (
	flagClients = flag.Int("soak.clients", 600, "concurrent clients per churn wave (the test process holds the client side of every one)")
	flagWaves   = flag.Int("soak.waves", 3, "churn waves")
	flagGames   = flag.Int("soak.games", 50, "games the churn clients spread over")
	flagFlood   = flag.Duration("soak.flood", 5*time.Second, "continuous rate limiting after which the flooder must be closed with 1008 (the binary fixes it at 5 s)")
)

// TestMain checks that the test process itself leaks no goroutine: every
// client's reader, every sampler and every sender has ended by the time the
// tests return.
func TestMain(m *testing.M) {
	code := m.Run()
	httpClient.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines outlived the soak tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
