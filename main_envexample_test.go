package main

// .env.example against the configuration: every variable listed once, each
// with a line of meaning above it, at its default.

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

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
