package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
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
			"OPERATOR_TOKEN", "HEALTH_GAME_IDS"}
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

func TestEnvExampleListsEveryVariableWithItsDefault(t *testing.T) {
	b, err := os.ReadFile(".env.example")
	if err != nil {
		t.Fatalf(".env.example: %v", err)
	}
	var environ []string
	seen := map[string]bool{}
	prev := ""
	for line := range strings.Lines(string(b)) {
		line = strings.TrimRight(line, "\r\n")
		if line != "" && !strings.HasPrefix(line, "#") {
			key, _, ok := strings.Cut(line, "=")
			if !ok {
				t.Errorf(".env.example line %q is not KEY=VALUE", line)
			}
			if seen[key] {
				t.Errorf(".env.example lists %s twice", key)
			}
			seen[key] = true
			if !strings.HasPrefix(prev, "# ") {
				t.Errorf(".env.example gives %s no line of meaning above it", key)
			}
			environ = append(environ, line)
		}
		prev = line
	}
	for key := range configFields() {
		if !seen[key] {
			t.Errorf(".env.example does not list %s", key)
		}
	}
	for key := range seen {
		if _, ok := configFields()[key]; !ok {
			t.Errorf(".env.example lists %s, which the server does not read", key)
		}
	}
	got, err := loadConfig(environ)
	if err != nil {
		t.Fatalf("loading .env.example: %v", err)
	}
	if want := contractDefaults(); !reflect.DeepEqual(normalized(got), want) {
		t.Fatalf(".env.example's values are not the defaults\n got %+v\nwant %+v", got, want)
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
				TokenRefreshWarning: 60 * time.Second, TokenExpiryGrace: 25 * time.Second,
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

// childEnv, set to "1", makes a process test call main() instead of testing:
// the test binary re-runs itself as the real dugout process.
const childEnv = "DUGOUT_TEST_CHILD_RUNS_MAIN"

// childCommand re-runs the test binary so that only test runs, as the real
// process with environ on top of a clean configuration (any config variable in
// the parent's environment is left out, and LISTEN_ADDR never asks for :8080).
func childCommand(ctx context.Context, test string, environ ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+test+"$")
	fields := configFields()
	for _, kv := range os.Environ() {
		key, _, _ := strings.Cut(kv, "=")
		if _, ok := fields[key]; !ok && key != childEnv {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, childEnv+"=1", "LISTEN_ADDR=127.0.0.1:0")
	cmd.Env = append(cmd.Env, environ...) // later entries win
	return cmd
}

func TestProcessExitsOnInvalidConfig(t *testing.T) {
	if os.Getenv(childEnv) == "1" {
		main()
		return
	}
	for _, tc := range []struct {
		name string
		env  string
		key  string
	}{
		{"unparsable duration", "PING_INTERVAL=bogus", "PING_INTERVAL"},
		{"NaN rate", "RATE_LIMIT=NaN", "RATE_LIMIT"},
		{"warning not shorter than timeout", "EXPIRY_WARNING=300s", "EXPIRY_WARNING"},
		{"webhook without its secret", "WEBHOOK_URL=https://hooks.example.com/presence", "WEBHOOK_SECRET"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 4*waitFor)
			defer cancel()
			cmd := childCommand(ctx, "TestProcessExitsOnInvalidConfig", tc.env)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("the process with %s was still running after %s: it started instead of exiting", tc.env, 4*waitFor)
			}
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("the process with %s ended with %v, want a non-zero exit (stderr %q)", tc.env, err, stderr.String())
			}
			out := strings.TrimSuffix(stderr.String(), "\n")
			if out == "" || strings.Contains(out, "\n") {
				t.Fatalf("stderr is not one line: %q", stderr.String())
			}
			if !strings.Contains(out, tc.key) {
				t.Fatalf("stderr %q does not name %s", out, tc.key)
			}
			if field := configFields()[tc.key]; strings.Contains(out, field) {
				t.Fatalf("stderr %q names the Go field %s", out, field)
			}
			t.Logf("exit %d: %s", exit.ExitCode(), out)
		})
	}
}

// lineWriter hands every complete line written to it to lines, and keeps all of it.
type lineWriter struct {
	mu      sync.Mutex
	all     bytes.Buffer
	pending []byte
	lines   chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all.Write(p)
	w.pending = append(w.pending, p...)
	for {
		i := bytes.IndexByte(w.pending, '\n')
		if i < 0 {
			return len(p), nil
		}
		select {
		case w.lines <- string(w.pending[:i]):
		default: // nobody is waiting for more lines
		}
		w.pending = w.pending[i+1:]
	}
}

func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.all.String()
}

func TestProcessServesAndStopsOnSignal(t *testing.T) {
	if os.Getenv(childEnv) == "1" {
		main()
		return
	}
	for name, sig := range map[string]syscall.Signal{"SIGTERM": syscall.SIGTERM, "SIGINT": syscall.SIGINT} {
		t.Run(name, func(t *testing.T) { testProcessStopsOn(t, sig) })
	}
}

// testProcessStopsOn starts the real process, connects a client to the
// address its start-up line names, sends sig, and expects going-away and exit 0.
func testProcessStopsOn(t *testing.T, sig syscall.Signal) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*waitFor)
	defer cancel()
	cmd := childCommand(ctx, "TestProcessServesAndStopsOnSignal", "SHUTDOWN_TIMEOUT=5s", "LOG_LEVEL=info")
	stderr := &lineWriter{lines: make(chan string, 64)}
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	exited := make(chan struct{}) // closed once the process has been waited for
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	var addr string
	for addr == "" {
		select {
		case line := <-stderr.lines:
			var entry struct {
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Addr != "" {
				addr = entry.Addr
			}
		case <-exited:
			t.Fatalf("the process exited before listening: %v; stderr %q", exitErr, stderr.String())
		case <-ctx.Done():
			t.Fatalf("no log line with addr; stderr %q", stderr.String())
		}
	}
	c := dial(t, "ws://"+addr+"/ws", nil)
	if status, _, err := getStatus("http://" + addr + "/livez"); err != nil || status != http.StatusOK {
		t.Fatalf("/livez: %d %v", status, err)
	}
	signalled := time.Now()
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: %v", sig, err)
	}
	if code := c.expectClose(waitFor); code != websocket.StatusGoingAway {
		t.Fatalf("close code %d after %s, want %d", code, sig, websocket.StatusGoingAway)
	}
	select {
	case <-exited:
		if exitErr != nil {
			t.Fatalf("the process ended with %v after %s, want exit 0; stderr %q stdout %q", exitErr, sig, stderr.String(), stdout.String())
		}
		// A race-enabled binary lingers about a second at exit on purpose.
		t.Logf("exited %s after %s", time.Since(signalled), sig)
	case <-ctx.Done():
		t.Fatalf("the process still runs after %s; stderr %q", sig, stderr.String())
	}
}

// syncBuffer is a log sink that the server's goroutines and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// entries parses the JSON log lines written so far.
func (b *syncBuffer) entries(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(b.String()) {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

// running is one call of run in the background, with its log.
type running struct {
	addr   string // as onListen reported it
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error // run's result

	finished bool
	err      error
}

// startRun calls run with cfg in a goroutine, returns once it listens, and
// stops it when the test ends.
func startRun(t *testing.T, cfg config) *running {
	t.Helper()
	r := &running{logs: &syncBuffer{}, done: make(chan error, 1)}
	log := zerolog.New(r.logs).Level(zerolog.TraceLevel)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	listening := make(chan net.Addr, 1)
	go func() { r.done <- run(ctx, cfg, log, func(a net.Addr) { listening <- a }) }()
	t.Cleanup(func() {
		r.cancel()
		if err := r.wait(t, cfg.ShutdownTimeout+waitFor); err != nil {
			t.Logf("run at cleanup: %v", err)
		}
	})
	select {
	case a := <-listening:
		r.addr = a.String()
	case err := <-r.done:
		r.finished, r.err = true, err
		t.Fatalf("run returned before listening: %v", err)
	case <-time.After(waitFor):
		t.Fatal("run did not listen")
	}
	return r
}

// wait returns run's result, failing the test if run is still going after within.
func (r *running) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	if r.finished {
		return r.err
	}
	select {
	case r.err = <-r.done:
		r.finished = true
		return r.err
	case <-time.After(within):
		t.Fatalf("run still running %s after it was asked to stop", within)
		return nil
	}
}

// returned reports whether run has returned, without waiting.
func (r *running) returned() bool {
	if r.finished {
		return true
	}
	select {
	case r.err = <-r.done:
		r.finished = true
		return true
	default:
		return false
	}
}

func TestRunLogsTheBoundAddress(t *testing.T) {
	cfg := testConfig(t)
	cfg.ListenAddr = "127.0.0.1:0"
	r := startRun(t, cfg)
	var addrs []string
	eventually(t, "a start-up line carrying addr", func() bool {
		addrs = addrs[:0]
		for _, e := range r.logs.entries(t) {
			if a, ok := e["addr"].(string); ok {
				addrs = append(addrs, a)
			}
		}
		return len(addrs) > 0
	})
	if len(addrs) != 1 {
		t.Fatalf("%d start-up lines carry addr, want 1: %s", len(addrs), r.logs.String())
	}
	addr := addrs[0]
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" || port == "0" || port == "" {
		t.Fatalf("logged addr %q is not the bound address", addr)
	}
	if addr != r.addr {
		t.Fatalf("logged addr %q, but run listens on %q", addr, r.addr)
	}
	// The logged address is one a client can reach.
	c := dial(t, "ws://"+addr+"/ws", nil)
	c.send(`{"type":"heartbeat","id":"h"}`)
	c.expect("heartbeat_ack")
	r.cancel()
	if code := c.expectClose(cfg.ShutdownTimeout); code != websocket.StatusGoingAway {
		t.Fatalf("close code %d, want %d", code, websocket.StatusGoingAway)
	}
	if err := r.wait(t, cfg.ShutdownTimeout); err != nil {
		t.Fatalf("run: %v", err)
	}
}

// TestRunLogsTheAddressAtAnyLogLevel holds run to the contract's unconditional
// "at start the server logs one line carrying the address", which is what makes
// LISTEN_ADDR=127.0.0.1:0 usable: main hands run a logger filtered at
// LOG_LEVEL, as here. Only LOG_LEVEL=disabled may silence it.
func TestRunLogsTheAddressAtAnyLogLevel(t *testing.T) {
	for _, level := range []string{"trace", "info", "warn", "error"} {
		t.Run("LOG_LEVEL="+level, func(t *testing.T) {
			cfg, err := loadConfig([]string{"LISTEN_ADDR=127.0.0.1:0", "LOG_LEVEL=" + level})
			if err != nil {
				t.Fatal(err)
			}
			logs := &syncBuffer{}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			listening := make(chan net.Addr, 1)
			go func() {
				done <- run(ctx, cfg, zerolog.New(logs).Level(cfg.level), func(a net.Addr) { listening <- a })
			}()
			var bound net.Addr
			select {
			case bound = <-listening:
			case err := <-done:
				cancel()
				t.Fatalf("run: %v", err)
			case <-time.After(waitFor):
				cancel()
				<-done
				t.Fatal("run did not listen")
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("run: %v", err)
			}
			var addrs []string
			for _, e := range logs.entries(t) {
				if a, ok := e["addr"].(string); ok {
					addrs = append(addrs, a)
				}
			}
			if len(addrs) != 1 || addrs[0] != bound.String() {
				t.Fatalf("with LOG_LEVEL=%s the start-up lines carrying addr are %q, want one with %s", level, addrs, bound)
			}
		})
	}
}

func TestRunRefusesABadListenAddr(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, tc := range []struct{ name, addr string }{
		{"not an address", "not-an-address"},
		{"port out of range", "127.0.0.1:99999"},
		{"port already taken", taken.Addr().String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.ListenAddr = tc.addr
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			listened := make(chan net.Addr, 1)
			go func() {
				done <- run(ctx, cfg, zerolog.New(io.Discard), func(a net.Addr) { listened <- a })
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), "LISTEN_ADDR") {
					t.Fatalf("run with LISTEN_ADDR=%q: %v, want an error naming LISTEN_ADDR", tc.addr, err)
				}
				t.Logf("%v", err)
			case a := <-listened:
				cancel()
				<-done
				t.Fatalf("run with LISTEN_ADDR=%q listened on %s", tc.addr, a)
			case <-time.After(waitFor):
				cancel()
				<-done
				t.Fatalf("run with LISTEN_ADDR=%q neither failed nor listened", tc.addr)
			}
		})
	}
}

// joinAll joins every client to game in turn, reading the reply and the
// presence each earlier member receives, so no frame is left unread.
func joinAll(t *testing.T, game string, clients ...*client) {
	t.Helper()
	for i, c := range clients {
		c.send(`{"type":"join_game","id":"j","data":{"game_id":"` + game + `"}}`)
		c.expect("game_joined")
		for _, earlier := range clients[:i] {
			earlier.expect("presence")
		}
	}
}

func TestShutdownClosesEveryConnWithGoingAway(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	cfg := testConfig(t)
	cfg.PingInterval = time.Minute // no ping in flight to muddle the close
	cfg.ShutdownTimeout = 5 * time.Second
	r := startRun(t, cfg)
	url := "ws://" + r.addr + "/ws"
	players := []*client{dial(t, url, nil), dial(t, url, nil), dial(t, url, nil)}
	joinAll(t, "0b6c5a8e-3f21-4c1d-9e7a-2d4b6f8a1c3e", players...)
	idle := dial(t, url, nil) // in no game
	everyone := append(players, idle)

	start := time.Now()
	r.cancel()
	for i, c := range everyone {
		if code := c.expectClose(cfg.ShutdownTimeout); code != websocket.StatusGoingAway {
			t.Fatalf("client %d: close code %d, want %d (going away)", i, code, websocket.StatusGoingAway)
		}
	}
	// Going-away is sent only after the HTTP server has stopped accepting.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if ws, resp, err := websocket.Dial(ctx, url, nil); err == nil {
		_ = ws.CloseNow()
		t.Fatal("a handshake after shutdown began was accepted")
	} else if resp != nil && resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a handshake after shutdown began got HTTP %d", resp.StatusCode)
	}
	if err := r.wait(t, cfg.ShutdownTimeout); err != nil {
		t.Fatalf("run returned %v, want nil", err)
	}
	if elapsed := time.Since(start); elapsed > cfg.ShutdownTimeout {
		t.Fatalf("shutdown took %s, more than SHUTDOWN_TIMEOUT %s", elapsed, cfg.ShutdownTimeout)
	}
	for _, c := range everyone {
		_ = c.ws.CloseNow()
	}
	goleak.VerifyNone(t, ignore)
}

// rawPeer is a WebSocket client written by hand on a TCP socket, so that a
// test can make it go silent: it answers nothing, not even the close handshake.
type rawPeer struct {
	nc net.Conn
	br *bufio.Reader
}

// dialRaw performs the opening handshake by hand at addr (host:port) and reads
// the session frame, which proves the server registered the session.
func dialRaw(t *testing.T, addr string) *rawPeer {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, waitFor)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(waitFor))
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	fmt.Fprintf(nc, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", addr, base64.StdEncoding.EncodeToString(key))
	p := &rawPeer{nc: nc, br: bufio.NewReader(nc)}
	resp, err := http.ReadResponse(p.br, nil)
	if err != nil {
		t.Fatalf("raw handshake: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("raw handshake: HTTP %d", resp.StatusCode)
	}
	op, payload, err := p.readFrame()
	if err != nil || op != 1 || !bytes.Contains(payload, []byte(`"session"`)) {
		t.Fatalf("raw peer's first frame: opcode %d %q %v", op, payload, err)
	}
	_ = nc.SetDeadline(time.Time{})
	return p
}

// readFrame reads one unmasked server frame and returns its opcode and payload.
func (p *rawPeer) readFrame() (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(p.br, h[:]); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 != 0 {
		return 0, nil, errors.New("server frame is masked")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(p.br, ext[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(p.br, ext[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(ext[:])
	}
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(p.br, payload); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, payload, nil
}

// closeCode reads what the server has sent since the peer went silent and
// returns the code of its close frame, and whether the server then cut the socket.
func (p *rawPeer) closeCode(within time.Duration) (code int, cut bool, err error) {
	_ = p.nc.SetReadDeadline(time.Now().Add(within))
	code = -1
	for {
		op, payload, err := p.readFrame()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
			return code, true, nil
		}
		if err != nil {
			return code, false, err
		}
		if op == 8 && len(payload) >= 2 {
			code = int(binary.BigEndian.Uint16(payload))
		}
	}
}

func TestShutdownWithAFrozenPeerFitsTheBudget(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	cfg := testConfig(t)
	cfg.PingInterval = time.Minute
	cfg.ShutdownTimeout = time.Second
	r := startRun(t, cfg)
	game := "5d2f7a10-8c4b-4e3a-b1f6-9a0c2e4d6b8f"
	live := dial(t, "ws://"+r.addr+"/ws", nil)
	joinAll(t, game, live)
	frozen := dialRaw(t, r.addr) // from here on it never reads, nor answers a close

	start := time.Now()
	r.cancel()
	if code := live.expectClose(cfg.ShutdownTimeout); code != websocket.StatusGoingAway {
		t.Fatalf("live client: close code %d, want %d", code, websocket.StatusGoingAway)
	}
	if r.returned() {
		t.Fatal("run returned before the frozen peer was dealt with: the test observed nothing")
	}
	// The frozen peer holds shutdown up, yet the live client was told at once.
	err := r.wait(t, cfg.ShutdownTimeout+waitFor)
	elapsed := time.Since(start)
	if err != nil {
		t.Errorf("run returned %v, want nil", err)
	}
	if elapsed > cfg.ShutdownTimeout {
		t.Errorf("shutdown took %s with a frozen peer, more than SHUTDOWN_TIMEOUT %s", elapsed, cfg.ShutdownTimeout)
	}
	t.Logf("shutdown with a frozen peer took %s", elapsed)
	code, cut, err := frozen.closeCode(waitFor)
	if err != nil {
		t.Fatalf("frozen peer's socket: %v", err)
	}
	if code != int(websocket.StatusGoingAway) || !cut {
		t.Fatalf("frozen peer got close code %d, socket cut %t; want %d and cut", code, cut, websocket.StatusGoingAway)
	}
	_ = live.ws.CloseNow()
	_ = frozen.nc.Close()
	goleak.VerifyNone(t, ignore)
}

// noKeepAlive is an HTTP client that leaves no idle connection behind.
var noKeepAlive = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: waitFor}

// getStatus fetches url and returns its status and Content-Type. It never
// fails the test, so any goroutine may call it.
func getStatus(url string) (int, string, error) {
	resp, err := noKeepAlive.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), nil
}
