package main

// Configuration: the contract's defaults, loadConfig reading only its
// argument, valid overrides, and every invalid value refused with its variable
// named. contractDefaults and configFields serve other tests too.

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// contractDefaults is the contract's table of defaults, as the config struct
// holds them after validation.
func contractDefaults() config {
	return config{
		ListenAddr:          ":8080",
		PingInterval:        25 * time.Second,
		PingTimeout:         30 * time.Second,
		MaxMessageBytes:     1000000,
		SessionTimeout:      300 * time.Second,
		ExpiryCheckInterval: 60 * time.Second,
		ExpiryWarning:       60 * time.Second,
		AllowedOrigins:      nil,
		JWTSecret:           "",
		RequireAuth:         false,
		RateLimit:           20,
		RateBurst:           40,
		SendQueueSize:       256,
		SendQueueBytes:      4194304,
		MaxGamesPerSession:  16,
		MaxGameSessions:     100,
		MaxSessions:         0,
		ShutdownTimeout:     10 * time.Second,
		LogLevel:            "info",
		HTTPTimeout:         10 * time.Second, // not in the contract: dugout's own
		HTTPIdleTimeout:     60 * time.Second, // not in the contract: dugout's own
		ResumeWindow:        60 * time.Second,
		GameHistoryFrames:   256,
		GameHistoryBytes:    262144,
		ActionIDTTL:         120 * time.Second,
		ActionIDMax:         256,
		ShutdownRetrySpread: 10 * time.Second,
		TokenRefreshWarning: 60 * time.Second,
		TokenExpiryGrace:    25 * time.Second,
		NodeTTL:             15 * time.Second,
		GameStateTimeouts:   "lobby=30m,in_progress=5m,paused=30m,final=2m",
		HealthGameIDs:       "public",
		stateTimeouts: map[string]time.Duration{"lobby": 30 * time.Minute, "in_progress": 5 * time.Minute,
			"paused": 30 * time.Minute, "final": 2 * time.Minute},
		rateLimitGrace: 5 * time.Second, // "rate limited continuously for more than 5 s"
		webhookTiming:  contractWebhookTiming,
		level:          zerolog.InfoLevel,
	}
}

// contractWebhookTiming is §9's numbers: at most 100 events or 1 s per POST, a
// 5 s timeout, retries for 5 minutes, 10 000 events queued. The backoff's
// base and cap are dugout's own.
var contractWebhookTiming = webhookTiming{batchMax: 100, batchWait: time.Second, postTimeout: 5 * time.Second,
	retryBudget: 5 * time.Minute, backoffBase: 500 * time.Millisecond, backoffCap: 30 * time.Second, queueMax: 10000}

// configFields maps every environment variable of the config struct to the Go
// field that holds it, read from the struct tags.
func configFields() map[string]string {
	fields := map[string]string{}
	typ := reflect.TypeFor[config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		if key := f.Tag.Get("env"); key != "" {
			fields[key] = f.Name
		}
	}
	return fields
}

// normalized makes an empty origin list compare equal however it is spelled.
func normalized(c config) config {
	if len(c.AllowedOrigins) == 0 {
		c.AllowedOrigins = nil
	}
	return c
}

func TestConfigDefaultsMatchContract(t *testing.T) {
	for _, tc := range []struct {
		name    string
		environ []string
	}{
		{"empty environment", nil},
		{"unrelated variables and malformed entries", []string{"PATH=/usr/bin", "HOME=/root", "NOEQUALSSIGN", "=x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := loadConfig(tc.environ)
			if err != nil {
				t.Fatalf("loadConfig: %v", err)
			}
			if want := contractDefaults(); !reflect.DeepEqual(normalized(got), want) {
				t.Fatalf("defaults\n got %+v\nwant %+v", got, want)
			}
		})
	}
	t.Run("every variable has a default in the table", func(t *testing.T) {
		want := []string{"LISTEN_ADDR", "PING_INTERVAL", "PING_TIMEOUT", "MAX_MESSAGE_BYTES", "SESSION_TIMEOUT",
			"EXPIRY_CHECK_INTERVAL", "EXPIRY_WARNING", "ALLOWED_ORIGINS", "JWT_SECRET", "REQUIRE_AUTH", "RATE_LIMIT",
			"RATE_BURST", "SEND_QUEUE_SIZE", "MAX_GAMES_PER_SESSION", "MAX_SESSIONS", "SHUTDOWN_TIMEOUT", "LOG_LEVEL",
			"SEND_QUEUE_BYTES", "MAX_GAME_SESSIONS", "HTTP_TIMEOUT", "HTTP_IDLE_TIMEOUT",
			"RESUME_WINDOW", "GAME_HISTORY_FRAMES", "GAME_HISTORY_BYTES", "ACTION_ID_TTL", "ACTION_ID_MAX", "SHUTDOWN_RETRY_SPREAD",
			"TOKEN_REFRESH_WARNING", "TOKEN_EXPIRY_GRACE", "WEBHOOK_URL", "WEBHOOK_SECRET", "SERVICE_TOKEN", "GAME_STATE_TIMEOUTS",
			"OPERATOR_TOKEN", "HEALTH_GAME_IDS", "REDIS_URL", "NODE_ID", "NODE_TTL"}
		fields := configFields()
		for _, key := range want {
			if _, ok := fields[key]; !ok {
				t.Errorf("config has no field for %s", key)
			}
		}
		if len(fields) != len(want) {
			t.Errorf("config reads %d variables, the contract lists %d: %v", len(fields), len(want), fields)
		}
	})
}

func TestConfigReadsOnlyItsArgument(t *testing.T) {
	t.Setenv("PING_INTERVAL", "bogus")
	t.Setenv("MAX_SESSIONS", "7")
	got, err := loadConfig(nil)
	if err != nil {
		t.Fatalf("loadConfig(nil) read the process environment: %v", err)
	}
	if got.MaxSessions != 0 {
		t.Fatalf("loadConfig(nil) read MAX_SESSIONS=%d from the process environment", got.MaxSessions)
	}
}

func TestConfigValidOverrides(t *testing.T) {
	for _, tc := range []struct {
		name    string
		environ []string
		want    func(*config)
	}{
		{"LISTEN_ADDR", []string{"LISTEN_ADDR=127.0.0.1:0"}, func(c *config) { c.ListenAddr = "127.0.0.1:0" }},
		{"PING_INTERVAL", []string{"PING_INTERVAL=200ms"}, func(c *config) { c.PingInterval = 200 * time.Millisecond }},
		{"PING_TIMEOUT shorter than the interval", []string{"PING_TIMEOUT=5s"}, func(c *config) { c.PingTimeout = 5 * time.Second }},
		{"PING_TIMEOUT", []string{"PING_TIMEOUT=1m30s"}, func(c *config) { c.PingTimeout = 90 * time.Second }},
		{"MAX_MESSAGE_BYTES", []string{"MAX_MESSAGE_BYTES=512"}, func(c *config) { c.MaxMessageBytes = 512 }},
		{"SESSION_TIMEOUT", []string{"SESSION_TIMEOUT=10m"}, func(c *config) { c.SessionTimeout = 10 * time.Minute }},
		{"SESSION_TIMEOUT 0 with the default warning", []string{"SESSION_TIMEOUT=0"}, func(c *config) { c.SessionTimeout = 0 }},
		{"SESSION_TIMEOUT 0s with a warning of an hour", []string{"SESSION_TIMEOUT=0s", "EXPIRY_WARNING=1h"},
			func(c *config) { c.SessionTimeout = 0; c.ExpiryWarning = time.Hour }},
		{"SESSION_TIMEOUT 0 with no warning", []string{"SESSION_TIMEOUT=0", "EXPIRY_WARNING=0"},
			func(c *config) { c.SessionTimeout = 0; c.ExpiryWarning = 0 }},
		{"EXPIRY_CHECK_INTERVAL", []string{"EXPIRY_CHECK_INTERVAL=5s"}, func(c *config) { c.ExpiryCheckInterval = 5 * time.Second }},
		{"EXPIRY_WARNING 0 turns the warning off", []string{"EXPIRY_WARNING=0"}, func(c *config) { c.ExpiryWarning = 0 }},
		{"EXPIRY_WARNING just under SESSION_TIMEOUT and every state's", []string{"EXPIRY_WARNING=299s", "GAME_STATE_TIMEOUTS=final=300s"},
			func(c *config) {
				c.ExpiryWarning, c.GameStateTimeouts = 299*time.Second, "final=300s"
				c.stateTimeouts = map[string]time.Duration{"final": 300 * time.Second}
			}},
		{"ALLOWED_ORIGINS one host", []string{"ALLOWED_ORIGINS=game.example.com"},
			func(c *config) { c.AllowedOrigins = []string{"game.example.com"} }},
		{"ALLOWED_ORIGINS trims spaces and drops empty entries", []string{"ALLOWED_ORIGINS= game.example.com , ,*.example.org:*,,"},
			func(c *config) { c.AllowedOrigins = []string{"game.example.com", "*.example.org:*"} }},
		{"ALLOWED_ORIGINS only separators is empty", []string{"ALLOWED_ORIGINS= , ,"}, func(c *config) {}},
		{"ALLOWED_ORIGINS any", []string{"ALLOWED_ORIGINS=*"}, func(c *config) { c.AllowedOrigins = []string{"*"} }},
		{"JWT_SECRET", []string{"JWT_SECRET=s3cret"}, func(c *config) { c.JWTSecret = "s3cret" }},
		{"REQUIRE_AUTH with JWT_SECRET", []string{"REQUIRE_AUTH=true", "JWT_SECRET=s3cret"},
			func(c *config) { c.RequireAuth = true; c.JWTSecret = "s3cret" }},
		{"REQUIRE_AUTH false", []string{"REQUIRE_AUTH=false"}, func(c *config) {}},
		{"RATE_LIMIT fractional", []string{"RATE_LIMIT=0.5"}, func(c *config) { c.RateLimit = 0.5 }},
		{"RATE_LIMIT", []string{"RATE_LIMIT=100"}, func(c *config) { c.RateLimit = 100 }},
		{"RATE_BURST", []string{"RATE_BURST=1"}, func(c *config) { c.RateBurst = 1 }},
		{"SEND_QUEUE_SIZE", []string{"SEND_QUEUE_SIZE=1"}, func(c *config) { c.SendQueueSize = 1 }},
		{"MAX_GAMES_PER_SESSION", []string{"MAX_GAMES_PER_SESSION=1"}, func(c *config) { c.MaxGamesPerSession = 1 }},
		{"MAX_SESSIONS", []string{"MAX_SESSIONS=100"}, func(c *config) { c.MaxSessions = 100 }},
		{"MAX_SESSIONS 0 is no limit", []string{"MAX_SESSIONS=0"}, func(c *config) {}},
		{"SHUTDOWN_TIMEOUT", []string{"SHUTDOWN_TIMEOUT=1s"}, func(c *config) { c.ShutdownTimeout = time.Second }},
		{"OPERATOR_TOKEN and HEALTH_GAME_IDS=operator", []string{"OPERATOR_TOKEN=" + strings.Repeat("o", 32), "HEALTH_GAME_IDS=operator"},
			func(c *config) { c.OperatorToken, c.HealthGameIDs = strings.Repeat("o", 32), "operator" }},
		{"TOKEN_REFRESH_WARNING", []string{"TOKEN_REFRESH_WARNING=5m"}, func(c *config) { c.TokenRefreshWarning = 5 * time.Minute }},
		{"TOKEN_EXPIRY_GRACE 0 closes at exp", []string{"TOKEN_EXPIRY_GRACE=0"}, func(c *config) { c.TokenExpiryGrace = 0 }},
		{"TOKEN_EXPIRY_GRACE longer than the warning", []string{"TOKEN_EXPIRY_GRACE=2m"}, func(c *config) { c.TokenExpiryGrace = 2 * time.Minute }},
		{"LOG_LEVEL debug", []string{"LOG_LEVEL=debug"}, func(c *config) { c.LogLevel = "debug"; c.level = zerolog.DebugLevel }},
		{"LOG_LEVEL warn", []string{"LOG_LEVEL=warn"}, func(c *config) { c.LogLevel = "warn"; c.level = zerolog.WarnLevel }},
		{"LOG_LEVEL disabled", []string{"LOG_LEVEL=disabled"}, func(c *config) { c.LogLevel = "disabled"; c.level = zerolog.Disabled }},
		{"WEBHOOK_URL with WEBHOOK_SECRET", []string{"WEBHOOK_URL=https://u:p@hooks.example.com:8443/presence?k=v", "WEBHOOK_SECRET=" + webhookTestSecret},
			func(c *config) {
				c.WebhookURL, c.WebhookSecret = "https://u:p@hooks.example.com:8443/presence?k=v", webhookTestSecret
				c.webhookTarget = &url.URL{Scheme: "https", User: url.UserPassword("u", "p"), Host: "hooks.example.com:8443",
					Path: "/presence", RawQuery: "k=v"}
			}},
		{"WEBHOOK_SECRET of 32 multibyte characters", []string{"WEBHOOK_URL=http://127.0.0.1:9/h", "WEBHOOK_SECRET=" + strings.Repeat("é", 32)},
			func(c *config) {
				c.WebhookURL, c.WebhookSecret = "http://127.0.0.1:9/h", strings.Repeat("é", 32)
				c.webhookTarget = &url.URL{Scheme: "http", Host: "127.0.0.1:9", Path: "/h"}
			}},
		{"WEBHOOK_SECRET alone is kept for later", []string{"WEBHOOK_SECRET=short"}, func(c *config) { c.WebhookSecret = "short" }},
		{"SERVICE_TOKEN of 32 characters", []string{"SERVICE_TOKEN=" + strings.Repeat("k", 32)},
			func(c *config) { c.ServiceToken = strings.Repeat("k", 32) }},
		{"GAME_STATE_TIMEOUTS of its own", []string{"GAME_STATE_TIMEOUTS= warmup=61s , extra_innings=24h"}, func(c *config) {
			c.GameStateTimeouts = " warmup=61s , extra_innings=24h"
			c.stateTimeouts = map[string]time.Duration{"warmup": 61 * time.Second, "extra_innings": 24 * time.Hour}
		}},
		{"GAME_STATE_TIMEOUTS just over a shorter EXPIRY_WARNING", []string{"EXPIRY_WARNING=10s", "GAME_STATE_TIMEOUTS=final=10001ms"}, func(c *config) {
			c.ExpiryWarning, c.GameStateTimeouts = 10*time.Second, "final=10001ms"
			c.stateTimeouts = map[string]time.Duration{"final": 10001 * time.Millisecond}
		}},
		{"every variable at once", []string{
			"LISTEN_ADDR=:9090", "PING_INTERVAL=10s", "PING_TIMEOUT=20s", "MAX_MESSAGE_BYTES=4096",
			"SESSION_TIMEOUT=2m", "EXPIRY_CHECK_INTERVAL=10s", "EXPIRY_WARNING=30s", "ALLOWED_ORIGINS=a.example,b.example",
			"JWT_SECRET=k", "REQUIRE_AUTH=true", "RATE_LIMIT=5", "RATE_BURST=10", "SEND_QUEUE_SIZE=64",
			"MAX_GAMES_PER_SESSION=4", "MAX_SESSIONS=1000", "SHUTDOWN_TIMEOUT=30s", "LOG_LEVEL=error",
			"SEND_QUEUE_BYTES=100000", "MAX_GAME_SESSIONS=2", "HTTP_TIMEOUT=3s", "HTTP_IDLE_TIMEOUT=7s",
		}, func(c *config) {
			*c = config{
				ListenAddr: ":9090", PingInterval: 10 * time.Second, PingTimeout: 20 * time.Second, MaxMessageBytes: 4096,
				SessionTimeout: 2 * time.Minute, ExpiryCheckInterval: 10 * time.Second, ExpiryWarning: 30 * time.Second,
				AllowedOrigins: []string{"a.example", "b.example"}, JWTSecret: "k", RequireAuth: true, RateLimit: 5,
				RateBurst: 10, SendQueueSize: 64, MaxGamesPerSession: 4, MaxSessions: 1000, ShutdownTimeout: 30 * time.Second,
				LogLevel: "error", rateLimitGrace: 5 * time.Second, level: zerolog.ErrorLevel,
				SendQueueBytes: 100000, MaxGameSessions: 2, HTTPTimeout: 3 * time.Second, HTTPIdleTimeout: 7 * time.Second,
				ResumeWindow: 60 * time.Second, GameHistoryFrames: 256, GameHistoryBytes: 262144, ActionIDTTL: 120 * time.Second,
				ActionIDMax: 256, ShutdownRetrySpread: 10 * time.Second, webhookTiming: contractWebhookTiming,
				TokenRefreshWarning: 60 * time.Second, TokenExpiryGrace: 25 * time.Second, NodeTTL: 15 * time.Second,
				GameStateTimeouts: "lobby=30m,in_progress=5m,paused=30m,final=2m", HealthGameIDs: "public",
				stateTimeouts: map[string]time.Duration{"lobby": 30 * time.Minute, "in_progress": 5 * time.Minute,
					"paused": 30 * time.Minute, "final": 2 * time.Minute},
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := loadConfig(tc.environ)
			if err != nil {
				t.Fatalf("loadConfig(%q): %v", tc.environ, err)
			}
			want := contractDefaults()
			tc.want(&want)
			if got, want := normalized(got), normalized(want); !reflect.DeepEqual(got, want) {
				t.Fatalf("loadConfig(%q)\n got %+v\nwant %+v", tc.environ, got, want)
			}
		})
	}
}

func TestConfigInvalidValuesNameTheVariable(t *testing.T) {
	fields := configFields()
	for _, tc := range []struct {
		name    string
		environ []string
		names   []string // every one must appear in the error
	}{
		{"PING_INTERVAL unparsable", []string{"PING_INTERVAL=bogus"}, []string{"PING_INTERVAL"}},
		{"OPERATOR_TOKEN short", []string{"OPERATOR_TOKEN=" + strings.Repeat("o", 31)}, []string{"OPERATOR_TOKEN"}},
		{"OPERATOR_TOKEN equal to SERVICE_TOKEN", []string{"OPERATOR_TOKEN=" + strings.Repeat("s", 32), "SERVICE_TOKEN=" + strings.Repeat("s", 32)},
			[]string{"OPERATOR_TOKEN", "SERVICE_TOKEN"}},
		{"HEALTH_GAME_IDS unknown", []string{"HEALTH_GAME_IDS=private"}, []string{"HEALTH_GAME_IDS"}},
		{"HEALTH_GAME_IDS in capitals", []string{"HEALTH_GAME_IDS=Operator"}, []string{"HEALTH_GAME_IDS"}},
		{"HEALTH_GAME_IDS=operator without OPERATOR_TOKEN", []string{"HEALTH_GAME_IDS=operator"}, []string{"HEALTH_GAME_IDS", "OPERATOR_TOKEN"}},
		{"PING_INTERVAL without unit", []string{"PING_INTERVAL=25"}, []string{"PING_INTERVAL"}},
		{"PING_INTERVAL negative", []string{"PING_INTERVAL=-1s"}, []string{"PING_INTERVAL"}},
		{"PING_INTERVAL zero", []string{"PING_INTERVAL=0"}, []string{"PING_INTERVAL"}},
		{"PING_TIMEOUT unparsable", []string{"PING_TIMEOUT=soon"}, []string{"PING_TIMEOUT"}},
		{"PING_TIMEOUT negative", []string{"PING_TIMEOUT=-5s"}, []string{"PING_TIMEOUT"}},
		{"PING_TIMEOUT zero", []string{"PING_TIMEOUT=0s"}, []string{"PING_TIMEOUT"}},
		{"MAX_MESSAGE_BYTES unparsable", []string{"MAX_MESSAGE_BYTES=1MB"}, []string{"MAX_MESSAGE_BYTES"}},
		{"MAX_MESSAGE_BYTES fractional", []string{"MAX_MESSAGE_BYTES=1.5"}, []string{"MAX_MESSAGE_BYTES"}},
		{"MAX_MESSAGE_BYTES overflows", []string{"MAX_MESSAGE_BYTES=99999999999999999999"}, []string{"MAX_MESSAGE_BYTES"}},
		{"MAX_MESSAGE_BYTES zero", []string{"MAX_MESSAGE_BYTES=0"}, []string{"MAX_MESSAGE_BYTES"}},
		{"MAX_MESSAGE_BYTES negative", []string{"MAX_MESSAGE_BYTES=-1"}, []string{"MAX_MESSAGE_BYTES"}},
		{"SESSION_TIMEOUT unparsable", []string{"SESSION_TIMEOUT=forever"}, []string{"SESSION_TIMEOUT"}},
		{"SESSION_TIMEOUT negative", []string{"SESSION_TIMEOUT=-1s"}, []string{"SESSION_TIMEOUT"}},
		{"EXPIRY_CHECK_INTERVAL unparsable", []string{"EXPIRY_CHECK_INTERVAL=often"}, []string{"EXPIRY_CHECK_INTERVAL"}},
		{"EXPIRY_CHECK_INTERVAL zero", []string{"EXPIRY_CHECK_INTERVAL=0"}, []string{"EXPIRY_CHECK_INTERVAL"}},
		{"EXPIRY_CHECK_INTERVAL negative", []string{"EXPIRY_CHECK_INTERVAL=-1m"}, []string{"EXPIRY_CHECK_INTERVAL"}},
		{"EXPIRY_WARNING unparsable", []string{"EXPIRY_WARNING=early"}, []string{"EXPIRY_WARNING"}},
		{"EXPIRY_WARNING negative", []string{"EXPIRY_WARNING=-1s"}, []string{"EXPIRY_WARNING"}},
		{"EXPIRY_WARNING negative with expiry off", []string{"SESSION_TIMEOUT=0", "EXPIRY_WARNING=-1s"}, []string{"EXPIRY_WARNING"}},
		{"EXPIRY_WARNING equal to the default SESSION_TIMEOUT", []string{"EXPIRY_WARNING=300s"}, []string{"EXPIRY_WARNING"}},
		{"EXPIRY_WARNING equal to SESSION_TIMEOUT", []string{"SESSION_TIMEOUT=30s", "EXPIRY_WARNING=30s"}, []string{"EXPIRY_WARNING"}},
		{"EXPIRY_WARNING longer than SESSION_TIMEOUT", []string{"SESSION_TIMEOUT=30s"}, []string{"EXPIRY_WARNING"}},
		{"RATE_LIMIT unparsable", []string{"RATE_LIMIT=fast"}, []string{"RATE_LIMIT"}},
		{"RATE_LIMIT zero", []string{"RATE_LIMIT=0"}, []string{"RATE_LIMIT"}},
		{"RATE_LIMIT negative", []string{"RATE_LIMIT=-1"}, []string{"RATE_LIMIT"}},
		{"RATE_LIMIT Inf", []string{"RATE_LIMIT=Inf"}, []string{"RATE_LIMIT"}},
		{"RATE_LIMIT +Inf", []string{"RATE_LIMIT=+Inf"}, []string{"RATE_LIMIT"}},
		{"RATE_LIMIT -Inf", []string{"RATE_LIMIT=-Inf"}, []string{"RATE_LIMIT"}},
		{"RATE_LIMIT NaN", []string{"RATE_LIMIT=NaN"}, []string{"RATE_LIMIT"}},
		{"RATE_LIMIT overflows to Inf", []string{"RATE_LIMIT=1e400"}, []string{"RATE_LIMIT"}},
		{"RATE_BURST unparsable", []string{"RATE_BURST=many"}, []string{"RATE_BURST"}},
		{"RATE_BURST fractional", []string{"RATE_BURST=2.5"}, []string{"RATE_BURST"}},
		{"RATE_BURST zero", []string{"RATE_BURST=0"}, []string{"RATE_BURST"}},
		{"RATE_BURST negative", []string{"RATE_BURST=-1"}, []string{"RATE_BURST"}},
		{"SEND_QUEUE_SIZE unparsable", []string{"SEND_QUEUE_SIZE=big"}, []string{"SEND_QUEUE_SIZE"}},
		{"SEND_QUEUE_SIZE zero", []string{"SEND_QUEUE_SIZE=0"}, []string{"SEND_QUEUE_SIZE"}},
		{"SEND_QUEUE_SIZE negative", []string{"SEND_QUEUE_SIZE=-1"}, []string{"SEND_QUEUE_SIZE"}},
		{"MAX_GAMES_PER_SESSION unparsable", []string{"MAX_GAMES_PER_SESSION=lots"}, []string{"MAX_GAMES_PER_SESSION"}},
		{"MAX_GAMES_PER_SESSION zero", []string{"MAX_GAMES_PER_SESSION=0"}, []string{"MAX_GAMES_PER_SESSION"}},
		{"MAX_GAMES_PER_SESSION negative", []string{"MAX_GAMES_PER_SESSION=-3"}, []string{"MAX_GAMES_PER_SESSION"}},
		{"SEND_QUEUE_BYTES unparsable", []string{"SEND_QUEUE_BYTES=4MB"}, []string{"SEND_QUEUE_BYTES"}},
		{"SEND_QUEUE_BYTES zero", []string{"SEND_QUEUE_BYTES=0"}, []string{"SEND_QUEUE_BYTES", "MAX_MESSAGE_BYTES"}},
		{"SEND_QUEUE_BYTES negative", []string{"SEND_QUEUE_BYTES=-1"}, []string{"SEND_QUEUE_BYTES", "MAX_MESSAGE_BYTES"}},
		{"SEND_QUEUE_BYTES one short of the largest frame", []string{"SEND_QUEUE_BYTES=1065535"}, []string{"SEND_QUEUE_BYTES", "MAX_MESSAGE_BYTES"}},
		{"SEND_QUEUE_BYTES below a raised MAX_MESSAGE_BYTES", []string{"MAX_MESSAGE_BYTES=8000000"}, []string{"SEND_QUEUE_BYTES", "MAX_MESSAGE_BYTES"}},
		{"MAX_GAME_SESSIONS unparsable", []string{"MAX_GAME_SESSIONS=all"}, []string{"MAX_GAME_SESSIONS"}},
		{"MAX_GAME_SESSIONS zero", []string{"MAX_GAME_SESSIONS=0"}, []string{"MAX_GAME_SESSIONS"}},
		{"MAX_GAME_SESSIONS one", []string{"MAX_GAME_SESSIONS=1"}, []string{"MAX_GAME_SESSIONS"}},
		{"MAX_GAME_SESSIONS negative", []string{"MAX_GAME_SESSIONS=-2"}, []string{"MAX_GAME_SESSIONS"}},
		{"HTTP_TIMEOUT zero", []string{"HTTP_TIMEOUT=0"}, []string{"HTTP_TIMEOUT"}},
		{"HTTP_TIMEOUT unparsable", []string{"HTTP_TIMEOUT=10"}, []string{"HTTP_TIMEOUT"}},
		{"HTTP_IDLE_TIMEOUT negative", []string{"HTTP_IDLE_TIMEOUT=-1s"}, []string{"HTTP_IDLE_TIMEOUT"}},
		{"RESUME_WINDOW negative", []string{"RESUME_WINDOW=-1s"}, []string{"RESUME_WINDOW"}},
		{"RESUME_WINDOW unparsable", []string{"RESUME_WINDOW=1m30"}, []string{"RESUME_WINDOW"}},
		{"GAME_HISTORY_FRAMES zero", []string{"GAME_HISTORY_FRAMES=0"}, []string{"GAME_HISTORY_FRAMES"}},
		{"GAME_HISTORY_BYTES below 1024", []string{"GAME_HISTORY_BYTES=1023"}, []string{"GAME_HISTORY_BYTES"}},
		{"ACTION_ID_TTL shorter than RESUME_WINDOW", []string{"ACTION_ID_TTL=30s"}, []string{"ACTION_ID_TTL", "RESUME_WINDOW"}},
		{"ACTION_ID_TTL zero", []string{"ACTION_ID_TTL=0", "RESUME_WINDOW=0"}, []string{"ACTION_ID_TTL"}},
		{"ACTION_ID_MAX zero", []string{"ACTION_ID_MAX=0"}, []string{"ACTION_ID_MAX"}},
		{"SHUTDOWN_RETRY_SPREAD zero", []string{"SHUTDOWN_RETRY_SPREAD=0"}, []string{"SHUTDOWN_RETRY_SPREAD"}},
		{"TOKEN_REFRESH_WARNING zero", []string{"TOKEN_REFRESH_WARNING=0"}, []string{"TOKEN_REFRESH_WARNING"}},
		{"TOKEN_REFRESH_WARNING negative", []string{"TOKEN_REFRESH_WARNING=-1s"}, []string{"TOKEN_REFRESH_WARNING"}},
		{"TOKEN_REFRESH_WARNING unparsable", []string{"TOKEN_REFRESH_WARNING=60"}, []string{"TOKEN_REFRESH_WARNING"}},
		{"TOKEN_EXPIRY_GRACE negative", []string{"TOKEN_EXPIRY_GRACE=-1s"}, []string{"TOKEN_EXPIRY_GRACE"}},
		{"TOKEN_EXPIRY_GRACE unparsable", []string{"TOKEN_EXPIRY_GRACE=soon"}, []string{"TOKEN_EXPIRY_GRACE"}},
		{"MAX_SESSIONS unparsable", []string{"MAX_SESSIONS=unlimited"}, []string{"MAX_SESSIONS"}},
		{"MAX_SESSIONS negative", []string{"MAX_SESSIONS=-1"}, []string{"MAX_SESSIONS"}},
		{"SHUTDOWN_TIMEOUT unparsable", []string{"SHUTDOWN_TIMEOUT=later"}, []string{"SHUTDOWN_TIMEOUT"}},
		{"SHUTDOWN_TIMEOUT zero", []string{"SHUTDOWN_TIMEOUT=0"}, []string{"SHUTDOWN_TIMEOUT"}},
		{"SHUTDOWN_TIMEOUT negative", []string{"SHUTDOWN_TIMEOUT=-10s"}, []string{"SHUTDOWN_TIMEOUT"}},
		{"LOG_LEVEL bogus", []string{"LOG_LEVEL=bogus"}, []string{"LOG_LEVEL"}},
		{"LOG_LEVEL verbose", []string{"LOG_LEVEL=verbose"}, []string{"LOG_LEVEL"}},
		{"REQUIRE_AUTH unparsable", []string{"REQUIRE_AUTH=yes"}, []string{"REQUIRE_AUTH"}},
		{"REQUIRE_AUTH without JWT_SECRET", []string{"REQUIRE_AUTH=true"}, []string{"REQUIRE_AUTH", "JWT_SECRET"}},
		{"ALLOWED_ORIGINS malformed pattern", []string{"ALLOWED_ORIGINS=["}, []string{"ALLOWED_ORIGINS"}},
		{"ALLOWED_ORIGINS one malformed pattern among good ones", []string{"ALLOWED_ORIGINS=a.example, b[.example"}, []string{"ALLOWED_ORIGINS"}},
		{"ALLOWED_ORIGINS malformed escape", []string{`ALLOWED_ORIGINS=a.example\`}, []string{"ALLOWED_ORIGINS"}},
		{"WEBHOOK_URL relative", []string{"WEBHOOK_URL=/hooks/presence", "WEBHOOK_SECRET=" + webhookTestSecret}, []string{"WEBHOOK_URL"}},
		{"WEBHOOK_URL without scheme", []string{"WEBHOOK_URL=hooks.example.com/presence", "WEBHOOK_SECRET=" + webhookTestSecret}, []string{"WEBHOOK_URL"}},
		{"WEBHOOK_URL not http", []string{"WEBHOOK_URL=ftp://hooks.example.com/presence", "WEBHOOK_SECRET=" + webhookTestSecret}, []string{"WEBHOOK_URL"}},
		{"WEBHOOK_URL without host", []string{"WEBHOOK_URL=https:///presence", "WEBHOOK_SECRET=" + webhookTestSecret}, []string{"WEBHOOK_URL"}},
		{"WEBHOOK_URL with only a port", []string{"WEBHOOK_URL=http://:8080/presence", "WEBHOOK_SECRET=" + webhookTestSecret}, []string{"WEBHOOK_URL"}},
		{"WEBHOOK_URL opaque", []string{"WEBHOOK_URL=https:hooks.example.com", "WEBHOOK_SECRET=" + webhookTestSecret}, []string{"WEBHOOK_URL"}},
		{"WEBHOOK_URL unparsable", []string{"WEBHOOK_URL=http://hooks example.com/%zz", "WEBHOOK_SECRET=" + webhookTestSecret}, []string{"WEBHOOK_URL"}},
		{"WEBHOOK_URL without WEBHOOK_SECRET", []string{"WEBHOOK_URL=https://hooks.example.com/presence"}, []string{"WEBHOOK_URL", "WEBHOOK_SECRET"}},
		{"WEBHOOK_SECRET one character short", []string{"WEBHOOK_URL=https://hooks.example.com/presence", "WEBHOOK_SECRET=" + webhookTestSecret[:31]},
			[]string{"WEBHOOK_URL", "WEBHOOK_SECRET"}},
		{"SERVICE_TOKEN too short", []string{"SERVICE_TOKEN=" + strings.Repeat("k", 31)}, []string{"SERVICE_TOKEN"}},
		{"GAME_STATE_TIMEOUTS without =", []string{"GAME_STATE_TIMEOUTS=lobby"}, []string{"GAME_STATE_TIMEOUTS"}},
		{"GAME_STATE_TIMEOUTS upper-case state", []string{"GAME_STATE_TIMEOUTS=Lobby=30m"}, []string{"GAME_STATE_TIMEOUTS"}},
		{"GAME_STATE_TIMEOUTS state of 33 characters", []string{"GAME_STATE_TIMEOUTS=" + strings.Repeat("a", 33) + "=5m"}, []string{"GAME_STATE_TIMEOUTS"}},
		{"GAME_STATE_TIMEOUTS empty name", []string{"GAME_STATE_TIMEOUTS==5m"}, []string{"GAME_STATE_TIMEOUTS"}},
		{"GAME_STATE_TIMEOUTS empty entry", []string{"GAME_STATE_TIMEOUTS=lobby=30m,,final=2m"}, []string{"GAME_STATE_TIMEOUTS"}},
		{"GAME_STATE_TIMEOUTS unparsable duration", []string{"GAME_STATE_TIMEOUTS=lobby=soon"}, []string{"GAME_STATE_TIMEOUTS"}},
		{"GAME_STATE_TIMEOUTS duration without unit", []string{"GAME_STATE_TIMEOUTS=lobby=30"}, []string{"GAME_STATE_TIMEOUTS"}},
		{"GAME_STATE_TIMEOUTS state twice", []string{"GAME_STATE_TIMEOUTS=lobby=30m,lobby=5m"}, []string{"GAME_STATE_TIMEOUTS"}},
		{"GAME_STATE_TIMEOUTS entry equal to EXPIRY_WARNING", []string{"GAME_STATE_TIMEOUTS=final=60s"}, []string{"GAME_STATE_TIMEOUTS", "EXPIRY_WARNING"}},
		{"GAME_STATE_TIMEOUTS entry shorter than a raised EXPIRY_WARNING", []string{"EXPIRY_WARNING=3m"}, []string{"GAME_STATE_TIMEOUTS", "EXPIRY_WARNING"}},
		{"GAME_STATE_TIMEOUTS entry over 24h", []string{"GAME_STATE_TIMEOUTS=lobby=24h1s"}, []string{"GAME_STATE_TIMEOUTS"}},
		{"GAME_STATE_TIMEOUTS negative entry", []string{"GAME_STATE_TIMEOUTS=lobby=-5m"}, []string{"GAME_STATE_TIMEOUTS"}},
		{"REDIS_URL not redis", []string{"REDIS_URL=http://cache.example:6379"}, []string{"REDIS_URL"}},
		{"REDIS_URL without scheme", []string{"REDIS_URL=cache.example:6379"}, []string{"REDIS_URL"}},
		{"REDIS_URL bad database", []string{"REDIS_URL=redis://cache.example:6379/zero"}, []string{"REDIS_URL"}},
		{"NODE_ID with a space", []string{"NODE_ID=node 1"}, []string{"NODE_ID"}},
		{"NODE_ID of 65 characters", []string{"NODE_ID=" + strings.Repeat("n", 65)}, []string{"NODE_ID"}},
		{"NODE_ID with a slash", []string{"NODE_ID=a/b"}, []string{"NODE_ID"}},
		{"NODE_TTL zero", []string{"NODE_TTL=0"}, []string{"NODE_TTL"}},
		{"NODE_TTL negative", []string{"NODE_TTL=-15s"}, []string{"NODE_TTL"}},
		{"NODE_TTL unparsable", []string{"NODE_TTL=soon"}, []string{"NODE_TTL"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := loadConfig(tc.environ)
			if err == nil {
				t.Fatalf("loadConfig(%q) accepted it: %+v", tc.environ, cfg)
			}
			msg := err.Error()
			for _, name := range tc.names {
				if !strings.Contains(msg, name) {
					t.Errorf("error %q does not name %s", msg, name)
				}
			}
			for key, field := range fields {
				if strings.Contains(msg, field) {
					t.Errorf("error %q names the Go field %s instead of %s", msg, field, key)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error %q spans several lines", msg)
			}
		})
	}
}
