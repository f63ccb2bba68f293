package main

import (
	"fmt"
	"math"
	"syscall"
)

// Every session holds a file descriptor, and so does every probe, health
// check and API call. When sessions may take them all, the first thing to
// stop answering is /livez, and a liveness probe then restarts the process
// and drops every player. So sessions are limited to the descriptor limit
// less a reserve that only the plain HTTP endpoints can use.
const (
	fdReservePercent = 10 // of the descriptor limit, kept for plain HTTP
	fdReserveMin     = 64 // descriptors kept however low the limit
)

// sessionCap is the MAX_SESSIONS in force and how it was chosen.
type sessionCap struct {
	sessions int    // the limit in force; never 0
	from     string // for the start-up log: which setting and which descriptor limit
	fds      uint64 // the process's descriptor limit (RLIMIT_NOFILE, soft)
	// plain is how many plain HTTP connections may be open before idle ones
	// are closed: half of what sessions leave, so the other half stays free
	// for a probe's connection, files and the listener. 0: no limit.
	plain   int
	warning string // set when a configured limit leaves no reserve
}

// sessionLimit returns the session limit for MAX_SESSIONS=configured: the
// configured one, or with 0 the descriptor limit less its reserve. Go raises
// the soft descriptor limit to the hard one at start, so that is what it reads.
func sessionLimit(configured int) (sessionCap, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		if configured > 0 {
			return sessionCap{sessions: configured, from: "MAX_SESSIONS"}, nil
		}
		return sessionCap{}, fmt.Errorf("MAX_SESSIONS=0 takes the descriptor limit, which cannot be read: %w", err)
	}
	return sessionLimitFor(configured, min(rl.Cur, math.MaxInt32))
}

// sessionLimitFor is sessionLimit for a process whose descriptor limit is fds.
func sessionLimitFor(configured int, fds uint64) (sessionCap, error) {
	reserve := max(fds*fdReservePercent/100, fdReserveMin)
	if configured > 0 {
		c := sessionCap{sessions: configured, from: "MAX_SESSIONS", fds: fds, plain: plainLimit(fds, configured)}
		if uint64(configured)+reserve > fds {
			c.warning = fmt.Sprintf("MAX_SESSIONS leaves fewer than %d of the %d descriptors for health and probes", reserve, fds)
		}
		return c, nil
	}
	if fds <= reserve {
		return sessionCap{}, fmt.Errorf("MAX_SESSIONS=0 takes the descriptor limit less a reserve of %d, but the limit is %d: raise it (ulimit -n) or set MAX_SESSIONS", reserve, fds)
	}
	return sessionCap{
		sessions: int(fds - reserve),
		from:     fmt.Sprintf("descriptor limit %d less a reserve of %d", fds, reserve),
		fds:      fds,
		plain:    plainLimit(fds, int(fds-reserve)),
	}, nil
}

// plainMin is the fewest plain HTTP connections ever allowed at once.
const plainMin = 16

// plainLimit is the plain connections allowed beside sessions sessions.
func plainLimit(fds uint64, sessions int) int {
	if uint64(sessions) >= fds {
		return plainMin
	}
	return max(int(fds-uint64(sessions))/2, plainMin)
}
