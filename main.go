// Command dugout is the realtime session server of a multiplayer baseball
// game: WebSocket sessions that are always true, game rooms with presence,
// and an operator's view at /health/connections.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	stdlog "log"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/caarlos0/env/v11"
	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// config is every setting, read from the environment once at start.
// The contract (../shared/protocol-v1.md) defines each variable.
type config struct {
	ListenAddr string `env:"LISTEN_ADDR" envDefault:":8080"`
	// PingTimeout may be shorter or longer than PingInterval: only one ping is
	// in flight at a time, so a dead peer is found within their sum.
	PingInterval        time.Duration `env:"PING_INTERVAL" envDefault:"25s"`
	PingTimeout         time.Duration `env:"PING_TIMEOUT" envDefault:"30s"`
	MaxMessageBytes     int64         `env:"MAX_MESSAGE_BYTES" envDefault:"1000000"`
	SessionTimeout      time.Duration `env:"SESSION_TIMEOUT" envDefault:"300s"`
	ExpiryCheckInterval time.Duration `env:"EXPIRY_CHECK_INTERVAL" envDefault:"60s"`
	// ExpiryWarning must be shorter than SessionTimeout: it is how long before
	// expiry the warning goes out.
	ExpiryWarning  time.Duration `env:"EXPIRY_WARNING" envDefault:"60s"`
	AllowedOrigins []string      `env:"ALLOWED_ORIGINS" envSeparator:","`
	JWTSecret      string        `env:"JWT_SECRET"`
	RequireAuth    bool          `env:"REQUIRE_AUTH" envDefault:"false"`
	RateLimit      float64       `env:"RATE_LIMIT" envDefault:"20"`
	RateBurst      int           `env:"RATE_BURST" envDefault:"40"`
	SendQueueSize  int           `env:"SEND_QUEUE_SIZE" envDefault:"256"`
	// SendQueueBytes must hold the largest frame a relay can make (a message
	// of MaxMessageBytes and its envelope), or one such frame would make its
	// every recipient a slow consumer.
	SendQueueBytes     int           `env:"SEND_QUEUE_BYTES" envDefault:"4194304"`
	MaxGamesPerSession int           `env:"MAX_GAMES_PER_SESSION" envDefault:"16"`
	MaxGameSessions    int           `env:"MAX_GAME_SESSIONS" envDefault:"100"`
	MaxSessions        int           `env:"MAX_SESSIONS" envDefault:"0"`
	ShutdownTimeout    time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"10s"`
	LogLevel           string        `env:"LOG_LEVEL" envDefault:"info"`
	// Plain HTTP requests (health, probes, the handshake itself) get
	// HTTPTimeout to be read and answered, and a kept-alive connection is
	// closed after HTTPIdleTimeout without a request, so idle clients cannot
	// hold the descriptors the probes need.
	HTTPTimeout     time.Duration `env:"HTTP_TIMEOUT" envDefault:"10s"`
	HTTPIdleTimeout time.Duration `env:"HTTP_IDLE_TIMEOUT" envDefault:"60s"`

	// Protocol 2: sessions that outlive their connection.
	ResumeWindow      time.Duration `env:"RESUME_WINDOW" envDefault:"60s"`
	GameHistoryFrames int           `env:"GAME_HISTORY_FRAMES" envDefault:"256"`
	GameHistoryBytes  int           `env:"GAME_HISTORY_BYTES" envDefault:"262144"`
	// ActionIDTTL must cover RESUME_WINDOW: an action retried after a resume
	// must still find its id remembered.
	ActionIDTTL         time.Duration `env:"ACTION_ID_TTL" envDefault:"120s"`
	ActionIDMax         int           `env:"ACTION_ID_MAX" envDefault:"256"`
	ShutdownRetrySpread time.Duration `env:"SHUTDOWN_RETRY_SPREAD" envDefault:"10s"`

	// Protocol 2: token expiry while connected (contract v2 §10). A session
	// is warned TokenRefreshWarning before its token's exp and closed
	// TokenExpiryGrace after it; the two are independent of each other.
	TokenRefreshWarning time.Duration `env:"TOKEN_REFRESH_WARNING" envDefault:"60s"`
	TokenExpiryGrace    time.Duration `env:"TOKEN_EXPIRY_GRACE" envDefault:"25s"`

	// Presence webhooks. The URL may carry a secret (userinfo, a query
	// token): only its scheme and host are ever logged.
	WebhookURL    string `env:"WEBHOOK_URL"`
	WebhookSecret string `env:"WEBHOOK_SECRET"`

	// Protocol 2: the game backend drives sessions (api.go). ServiceToken is
	// a secret: it is compared in constant time and never logged.
	ServiceToken      string `env:"SERVICE_TOKEN"`
	GameStateTimeouts string `env:"GAME_STATE_TIMEOUTS" envDefault:"lobby=30m,in_progress=5m,paused=30m,final=2m"`

	// Operator surfaces (contract v2 §11). OperatorToken is a secret like
	// ServiceToken; HealthGameIDs says whether /health/connections lists game
	// ids to anyone or only to a caller with the operator token.
	OperatorToken string `env:"OPERATOR_TOKEN"`
	HealthGameIDs string `env:"HEALTH_GAME_IDS" envDefault:"public"`

	// Cluster mode over Redis (contract v2 §12; cluster.go). RedisURL is a
	// secret (it may carry a password): it is never logged.
	RedisURL string        `env:"REDIS_URL"`
	NodeID   string        `env:"NODE_ID"`
	NodeTTL  time.Duration `env:"NODE_TTL" envDefault:"15s"`

	// Not configurable: the contract fixes them (the flood grace at 5 s, the
	// webhook's batching, timeouts and bounds). Tests shorten them.
	rateLimitGrace time.Duration
	webhookTiming  webhookTiming
	level          zerolog.Level
	webhookTarget  *url.URL                 // WebhookURL parsed; nil when it is empty
	stateTimeouts  map[string]time.Duration // GAME_STATE_TIMEOUTS, parsed
	// Not configurable: the contract fixes seatless settings at an hour and
	// 100 000 games (0 means those). Tests shorten them.
	settingsTTL time.Duration
	settingsMax int
	redisOpts   *redis.Options // RedisURL parsed; nil on one node
}

// envelopeSlack is what a relayed frame may add to the client message it
// carries (type, game, sender); the contract fixes it at 65536.
const envelopeSlack = 64 << 10

// loadConfig reads and validates the configuration from environ (os.Environ's
// shape). Its error names the environment variable at fault, never a Go field.
func loadConfig(environ []string) (config, error) {
	vars := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	cfg := config{rateLimitGrace: 5 * time.Second, webhookTiming: defaultWebhookTiming()}
	if err := env.ParseWithOptions(&cfg, env.Options{Environment: vars}); err != nil {
		return config{}, namedParseError(err, vars)
	}
	return cfg, cfg.validate()
}

// namedParseError rewrites the env library's error, which names the Go field,
// into one naming the variable and the value it could not use.
func namedParseError(err error, vars map[string]string) error {
	var agg env.AggregateError
	if errors.As(err, &agg) && len(agg.Errors) > 0 {
		err = agg.Errors[0]
	}
	var pe env.ParseError
	if errors.As(err, &pe) {
		if f, ok := reflect.TypeOf(config{}).FieldByName(pe.Name); ok {
			key := f.Tag.Get("env")
			return fmt.Errorf("%s=%q is not a valid %s", key, vars[key], pe.Type)
		}
	}
	return err
}

// validate checks the values that parse but make no sense.
func (c *config) validate() error {
	positive := []struct {
		name string
		ok   bool
	}{
		{"PING_INTERVAL", c.PingInterval > 0},
		{"PING_TIMEOUT", c.PingTimeout > 0},
		{"MAX_MESSAGE_BYTES", c.MaxMessageBytes > 0},
		{"EXPIRY_CHECK_INTERVAL", c.ExpiryCheckInterval > 0},
		{"RATE_LIMIT", c.RateLimit > 0 && !math.IsInf(c.RateLimit, 0)},
		{"RATE_BURST", c.RateBurst > 0},
		{"SEND_QUEUE_SIZE", c.SendQueueSize > 0},
		{"MAX_GAMES_PER_SESSION", c.MaxGamesPerSession > 0},
		{"SHUTDOWN_TIMEOUT", c.ShutdownTimeout > 0},
		{"HTTP_TIMEOUT", c.HTTPTimeout > 0},
		{"HTTP_IDLE_TIMEOUT", c.HTTPIdleTimeout > 0},
		{"GAME_HISTORY_FRAMES", c.GameHistoryFrames > 0},
		{"ACTION_ID_MAX", c.ActionIDMax > 0},
		{"SHUTDOWN_RETRY_SPREAD", c.ShutdownRetrySpread > 0},
		// A warning is a client's only cue to refresh in time: it cannot be turned off.
		{"TOKEN_REFRESH_WARNING", c.TokenRefreshWarning > 0},
	}
	for _, p := range positive {
		if !p.ok {
			return fmt.Errorf("%s must be greater than zero", p.name)
		}
	}
	switch {
	case c.SessionTimeout < 0:
		return errors.New("SESSION_TIMEOUT must not be negative (0 turns expiry off)")
	case c.ExpiryWarning < 0:
		return errors.New("EXPIRY_WARNING must not be negative (0 turns the warning off)")
	case c.SessionTimeout > 0 && c.ExpiryWarning >= c.SessionTimeout:
		return fmt.Errorf("EXPIRY_WARNING (%s) must be shorter than SESSION_TIMEOUT (%s)", c.ExpiryWarning, c.SessionTimeout)
	case c.MaxSessions < 0:
		return errors.New("MAX_SESSIONS must not be negative (0 means the descriptor limit less a reserve)")
	case int64(c.SendQueueBytes) < c.MaxMessageBytes+envelopeSlack:
		return fmt.Errorf("SEND_QUEUE_BYTES (%d) must be at least MAX_MESSAGE_BYTES (%d) + %d, so the largest relayed frame fits",
			c.SendQueueBytes, c.MaxMessageBytes, envelopeSlack)
	case c.ResumeWindow < 0:
		return errors.New("RESUME_WINDOW must not be negative (0 turns resume off, as in protocol 1)")
	case c.GameHistoryBytes < 1024:
		return fmt.Errorf("GAME_HISTORY_BYTES must be at least 1024, not %d", c.GameHistoryBytes)
	case c.ActionIDTTL < c.ResumeWindow || c.ActionIDTTL <= 0:
		return fmt.Errorf("ACTION_ID_TTL (%s) must be positive and at least RESUME_WINDOW (%s)", c.ActionIDTTL, c.ResumeWindow)
	case c.TokenExpiryGrace < 0:
		return errors.New("TOKEN_EXPIRY_GRACE must not be negative (0 closes a session at its token's exp)")
	case c.MaxGameSessions < 2:
		return fmt.Errorf("MAX_GAME_SESSIONS must be at least 2 (a game needs two players), not %d", c.MaxGameSessions)
	case c.RequireAuth && c.JWTSecret == "":
		return errors.New("REQUIRE_AUTH=true needs JWT_SECRET: without it no token can be valid")
	case c.ServiceToken != "" && len(c.ServiceToken) < minServiceToken:
		// The length only: the token itself never reaches a log line.
		return fmt.Errorf("SERVICE_TOKEN must be at least %d characters when set (it has %d)", minServiceToken, len(c.ServiceToken))
	}
	// With expiry off (the operator's rollback switch) no timeout applies, so
	// none need be longer than the warning.
	warning := c.ExpiryWarning
	if c.SessionTimeout == 0 {
		warning = 0
	}
	timeouts, err := parseStateTimeouts(c.GameStateTimeouts, warning)
	if err != nil {
		return err
	}
	c.stateTimeouts = timeouts
	origins := c.AllowedOrigins[:0]
	for _, o := range c.AllowedOrigins {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		if _, err := path.Match(o, ""); err != nil {
			return fmt.Errorf("ALLOWED_ORIGINS has a malformed pattern %q", o)
		}
		origins = append(origins, o)
	}
	c.AllowedOrigins = origins
	if err := c.validateOperator(); err != nil {
		return err
	}
	if err := c.validateCluster(); err != nil {
		return err
	}
	level, err := zerolog.ParseLevel(c.LogLevel)
	if err != nil || c.LogLevel == "" {
		return fmt.Errorf("LOG_LEVEL=%q is not a level (trace, debug, info, warn, error, fatal, panic, disabled)", c.LogLevel)
	}
	c.level = level
	return c.validateWebhook()
}

// webhookSecretMin is the shortest WEBHOOK_SECRET accepted, in characters.
const webhookSecretMin = 32

// validateWebhook checks WEBHOOK_URL and WEBHOOK_SECRET. Its errors never
// repeat the URL: it may carry a secret.
func (c *config) validateWebhook() error {
	c.webhookTarget = nil
	if c.WebhookURL == "" {
		return nil
	}
	u, err := url.Parse(c.WebhookURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return errors.New("WEBHOOK_URL must be an absolute http:// or https:// URL with a host")
	}
	if n := utf8.RuneCountInString(c.WebhookSecret); n < webhookSecretMin {
		return fmt.Errorf("WEBHOOK_SECRET must be at least %d characters when WEBHOOK_URL is set (it has %d)", webhookSecretMin, n)
	}
	c.webhookTarget = u
	return nil
}

// server ties the hub, the janitor and the HTTP handlers together.
type server struct {
	// set at construction
	cfg        config
	log        zerolog.Logger
	hub        *hub
	acceptOpts websocket.AcceptOptions
	jwtParser  *jwt.Parser
	slots      chan struct{} // one token per session when MAX_SESSIONS is set
	health     healthCache
	hook       *webhook // nil without WEBHOOK_URL
	bridge     *bridge  // nil on one node
	met        *metrics
	gatherer   prometheus.Gatherer // what /dashboard/data reads counters and histograms from: met's registry
	dashRing   readRing            // the dashboard's earlier readings, for rates

	handlers   sync.WaitGroup // /ws handlers still running
	draining   atomic.Bool    // set once shutdown begins
	hardStop   context.Context
	hardCancel context.CancelFunc
	background sync.WaitGroup // the hub and the janitor
	stopJan    context.CancelFunc
}

// newServer builds a server and starts its hub and janitor.
func newServer(cfg config, log zerolog.Logger) *server {
	var hook *webhook
	if cfg.webhookTarget != nil {
		hook = newWebhook(cfg.webhookTarget, cfg.WebhookSecret, cfg.webhookTiming, log)
	}
	met := newMetrics()
	var h *hub
	var b *bridge
	if cfg.redisOpts != nil {
		node := cfg.NodeID
		if node == "" {
			node = rand.Text()[:16]
		}
		b = newBridge(bridgeConfig{opts: cfg.redisOpts, node: node, ttl: cfg.NodeTTL,
			historyFrames: cfg.GameHistoryFrames, historyBytes: cfg.GameHistoryBytes, maxSeats: cfg.MaxGameSessions},
			log, func(m hubMsg) bool { return h.send(m) }, func() (hubCounts, []int64, bool) { return h.askClusterCounts() })
	}
	s := &server{
		cfg:      cfg,
		log:      log,
		met:      met,
		gatherer: met.reg,
		hub: newHub(hubConfig{
			sessionTimeout: cfg.SessionTimeout,
			expiryWarning:  cfg.ExpiryWarning,
			maxGames:       cfg.MaxGamesPerSession,
			maxSeats:       cfg.MaxGameSessions,
			retrySpread:    cfg.ShutdownRetrySpread,
			resumeWindow:   cfg.ResumeWindow,
			historyFrames:  cfg.GameHistoryFrames,
			historyBytes:   cfg.GameHistoryBytes,
			actionTTL:      cfg.ActionIDTTL,
			actionMax:      cfg.ActionIDMax,
			tokenWarning:   cfg.TokenRefreshWarning,
			tokenGrace:     cfg.TokenExpiryGrace,
			webhook:        hook,
			stateTimeouts:  cfg.stateTimeouts,
			settingsTTL:    cfg.settingsTTL,
			settingsMax:    cfg.settingsMax,
			metrics:        met,
			bridge:         b,
		}, 1024),
		hook:      hook,
		bridge:    b,
		jwtParser: jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithJSONNumber()),
	}
	met.watch(s.hub.askCounts, s.draining.Load, hook)
	if b != nil {
		met.watchBridge(b)
	}
	s.acceptOpts.OriginPatterns = originPatterns(cfg.AllowedOrigins)
	for _, o := range cfg.AllowedOrigins {
		if o == "*" {
			s.acceptOpts.InsecureSkipVerify = true // the operator asked for any origin
		}
	}
	if cfg.MaxSessions > 0 {
		s.slots = make(chan struct{}, cfg.MaxSessions)
	}
	s.hardStop, s.hardCancel = context.WithCancel(context.Background())
	janCtx, stopJan := context.WithCancel(context.Background())
	s.stopJan = stopJan
	s.background.Add(1)
	h = s.hub
	go func() { defer s.background.Done(); s.hub.run() }()
	if b != nil {
		b.start()
	}
	if cfg.SessionTimeout > 0 {
		s.background.Add(1)
		go func() { defer s.background.Done(); janitor(janCtx, s.hub, cfg.ExpiryCheckInterval) }()
	}
	return s
}

// originPatterns returns the patterns the library matches Origin hosts
// against. A browser leaves the default port out of Origin, so a pattern
// "host:*" (any port) must also match the bare host, which the library's
// path.Match would not.
func originPatterns(allowed []string) []string {
	out := make([]string, 0, len(allowed))
	for _, p := range allowed {
		out = append(out, p)
		if host, ok := strings.CutSuffix(p, ":*"); ok && host != "" {
			out = append(out, host)
		}
	}
	return out
}

// routes returns the server's HTTP handler.
func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", s.serveWS)
	mux.HandleFunc("GET /health/connections", s.serveConnections)
	mux.HandleFunc("GET /healthz", s.serveReady)
	mux.HandleFunc("GET /readyz", s.serveReady)
	mux.HandleFunc("GET /livez", serveLive)
	mux.Handle("GET /metrics", s.met.handler()) // no token: aggregates only, label values from closed sets
	mux.HandleFunc("GET /client/dugout.js", clientModule.serveModule)
	mux.HandleFunc("GET /demo/{$}", demoPage.serveDemo)
	s.dashboardRoutes(mux)
	if s.cfg.ServiceToken != "" {
		// Without a token the API does not exist: every /api/ path is the mux's 404.
		mux.HandleFunc("/api/", s.serveAPI)
	}
	return mux
}

// shutdown ends the server in the contract's order: readiness goes to 503,
// stopHTTP stops accepting, every conn is closed with going-away at once (each
// writer runs its own close handshake, so a frozen peer delays nobody), and the
// handlers are awaited. Close handshakes still running at 80% of the budget
// are cut so that the whole shutdown fits inside it. Then, with the hub
// stopped, the webhook delivers what it holds for what is left of the budget.
func (s *server) shutdown(budget time.Duration, stopHTTP func(context.Context) error) error {
	deadline := time.Now().Add(budget)
	err := s.stopConns(deadline, stopHTTP)
	s.hook.stop(deadline)
	return err
}

// stopConns is shutdown's part before the webhook's: everything but it ends by deadline.
func (s *server) stopConns(deadline time.Time, stopHTTP func(context.Context) error) error {
	s.draining.Store(true)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	httpErr := stopHTTP(ctx)
	s.hub.send(shutdownMsg{})
	s.stopJan()
	done := make(chan struct{})
	go func() {
		s.handlers.Wait()
		s.background.Wait()
		if s.bridge != nil {
			// After the hub's hand-over: what it queued runs first, then the
			// node's key goes, so the others adopt its sessions at once.
			s.bridge.deregister(time.Until(deadline))
			s.bridge.stop()
		}
		close(done)
	}()
	soft := time.NewTimer(time.Until(deadline) * 4 / 5)
	defer soft.Stop()
	select {
	case <-done:
		return httpErr
	case <-soft.C:
		s.log.Warn().Msg("close handshakes outlasted the shutdown budget; cutting the rest")
		s.hardCancel()
	}
	select {
	case <-done:
		return httpErr
	case <-ctx.Done():
		return errors.New("connections still open at the end of SHUTDOWN_TIMEOUT")
	}
}

// maxHeaderBytes bounds a request's line and headers, for net/http and for
// the handshakes front reads itself.
const maxHeaderBytes = 64 << 10

// run serves until ctx ends, then shuts down gracefully. onListen, when set,
// learns the address actually bound (LISTEN_ADDR may ask for port 0).
func run(ctx context.Context, cfg config, log zerolog.Logger, onListen func(net.Addr)) error {
	limit, err := sessionLimit(cfg.MaxSessions)
	if err != nil {
		return err
	}
	cfg.MaxSessions = limit.sessions
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("LISTEN_ADDR=%q: %w", cfg.ListenAddr, err)
	}
	s := newServer(cfg, log)
	plain := newPlainConns(limit.plain)
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() { defer close(watched); plain.watch(watchCtx) }()
	defer func() { stopWatch(); <-watched }()
	// The timeouts are for plain HTTP: a hijacked WebSocket's deadlines are
	// cleared by net/http, and its liveness is the pings'.
	srv := &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: cfg.HTTPTimeout,
		ReadTimeout:       cfg.HTTPTimeout,
		WriteTimeout:      cfg.HTTPTimeout,
		IdleTimeout:       cfg.HTTPIdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          httpErrorLog(log),
		ConnState:         plain.track,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(newFront(ln, s, plain, cfg.HTTPTimeout, maxHeaderBytes)) }()
	// Logged at no level, so every LOG_LEVEL but disabled shows where to connect.
	log.Log().Str("addr", ln.Addr().String()).Dur("ping_interval", cfg.PingInterval).
		Dur("session_timeout", cfg.SessionTimeout).Int("max_sessions", limit.sessions).
		Str("max_sessions_from", limit.from).Int("max_plain_http", limit.plain).
		Bool("service_api", cfg.ServiceToken != "").Bool("operator_token", cfg.OperatorToken != "").
		Str("health_game_ids", cfg.HealthGameIDs).Msg("listening") // whether a token is set, never the token
	if cfg.webhookTarget != nil {
		log.Info().Str("target", webhookTargetForLog(cfg.webhookTarget)).Msg("presence webhook on")
	}
	if limit.warning != "" {
		log.Warn().Int("max_sessions", limit.sessions).Uint64("fd_limit", limit.fds).Msg(limit.warning)
	}
	if cfg.SessionTimeout > 0 && cfg.ExpiryWarning > 0 && cfg.ExpiryWarning < cfg.ExpiryCheckInterval {
		log.Warn().Msg("EXPIRY_WARNING is shorter than EXPIRY_CHECK_INTERVAL: some sessions may expire without a warning")
	}
	if onListen != nil {
		onListen(ln.Addr())
	}
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		_ = s.shutdown(cfg.ShutdownTimeout, srv.Shutdown)
		return fmt.Errorf("serve: %w", err)
	}
	log.Info().Msg("shutting down")
	start := time.Now()
	err = s.shutdown(cfg.ShutdownTimeout, srv.Shutdown)
	<-serveErr // Serve returns ErrServerClosed once Shutdown has begun
	log.Info().Dur("duration", time.Since(start)).Err(err).Msg("stopped")
	return err
}

// httpErrorLog sends the HTTP server's own error lines (accept errors, TLS
// handshakes, panics in handlers) through the structured log as warnings,
// instead of plain text beside it.
func httpErrorLog(log zerolog.Logger) *stdlog.Logger {
	l := log.With().Str("component", "http").Logger()
	return stdlog.New(httpLogWriter{l}, "", 0)
}

// httpLogWriter turns each line the standard logger writes into one warning.
type httpLogWriter struct{ log zerolog.Logger }

// Write logs p, one line, as a warning.
func (w httpLogWriter) Write(p []byte) (int, error) {
	w.log.Warn().Msg(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func main() {
	log := zerolog.New(os.Stderr).With().Timestamp().Logger()
	cfg, err := loadConfig(os.Environ())
	if err != nil {
		log.Error().Err(err).Msg("invalid configuration")
		os.Exit(2)
	}
	log = log.Level(cfg.level)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log, nil); err != nil {
		log.Error().Err(err).Msg("exit")
		os.Exit(1)
	}
}
