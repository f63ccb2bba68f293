package main

import (
	"strings"
	"testing"
	"time"
)

// A valid cluster configuration: the URL parsed into the client's options,
// the node's name and TTL kept; a bad URL's error never repeats the URL,
// which may carry a password.
func TestClusterConfig(t *testing.T) {
	cfg, err := loadConfig([]string{"REDIS_URL=redis://:hunter2@10.0.0.5:6380/3", "NODE_ID=node-1.a_B", "NODE_TTL=5s"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.redisOpts == nil || cfg.redisOpts.Addr != "10.0.0.5:6380" || cfg.redisOpts.DB != 3 || cfg.redisOpts.Password != "hunter2" {
		t.Fatalf("redis options %+v", cfg.redisOpts)
	}
	if cfg.NodeID != "node-1.a_B" || cfg.NodeTTL != 5*time.Second {
		t.Fatalf("node %q ttl %s", cfg.NodeID, cfg.NodeTTL)
	}
	if cfg, err := loadConfig(nil); err != nil || cfg.redisOpts != nil {
		t.Fatalf("no REDIS_URL: %v, %+v", err, cfg.redisOpts)
	}
	_, err = loadConfig([]string{"REDIS_URL=redis://:hunter2@10.0.0.5:6380/zero"})
	if err == nil || strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "10.0.0.5") {
		t.Fatalf("bad URL error %v repeats the URL", err)
	}
}
