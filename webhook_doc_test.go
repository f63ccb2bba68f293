package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// docBlock returns the one fenced block of lang in PROTOCOL.md that contains marker.
func docBlock(t *testing.T, lang, marker string) string {
	t.Helper()
	doc, err := os.ReadFile("PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, part := range strings.Split(string(doc), "```"+lang+"\n")[1:] {
		block, _, ok := strings.Cut(part, "\n```")
		if ok && strings.Contains(block, marker) {
			found = append(found, block+"\n")
		}
	}
	if len(found) != 1 {
		t.Fatalf("PROTOCOL.md has %d %s blocks with %q, want 1", len(found), lang, marker)
	}
	return found[0]
}

// snippetCase is a request as a backend gets it, and whether the snippet must accept it.
type snippetCase struct {
	name, secret, timestamp, signature, body string
	accept                                   bool
}

// snippetCases signs a body with dugout's own code, then spoils each part.
func snippetCases() []snippetCase {
	body := string(encodeWebhookBody([]presenceEvent{testPresence(1), testPresence(2)}))
	now := strconv.FormatInt(time.Now().Unix(), 10)
	old := strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10)
	sig := signWebhook([]byte(webhookTestSecret), now, []byte(body))
	return []snippetCase{
		{"signed now", webhookTestSecret, now, sig, body, true},
		{"body changed", webhookTestSecret, now, sig, strings.Replace(body, `"offset":1`, `"offset":9`, 1), false},
		{"another secret", webhookTestSecret + "x", now, sig, body, false},
		{"timestamp changed", webhookTestSecret, old, sig, body, false},
		{"signed an hour ago", webhookTestSecret, old, signWebhook([]byte(webhookTestSecret), old, []byte(body)), body, false},
		{"no prefix", webhookTestSecret, now, strings.TrimPrefix(sig, "sha256="), body, false},
		{"no signature", webhookTestSecret, now, "", body, false},
		{"no timestamp", webhookTestSecret, "", sig, body, false},
	}
}

// TestProtocolDocWebhookSnippets runs PROTOCOL.md's signature checks, as
// written there, against signatures dugout made: each must accept what
// dugout signed now, and refuse it with any part changed or an hour old.
func TestProtocolDocWebhookSnippets(t *testing.T) {
	t.Run("Go", func(t *testing.T) {
		dir := t.TempDir()
		snippet := strings.Replace(docBlock(t, "go", "func VerifyDugout"), "package backend", "package main", 1)
		harness := `package main

import (
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"time"
)

func main() {
	r := httptest.NewRequest("POST", "/hooks/presence", strings.NewReader(os.Getenv("BODY")))
	r.Header.Set("X-Dugout-Timestamp", os.Getenv("TS"))
	r.Header.Set("X-Dugout-Signature", os.Getenv("SIG"))
	body, err := VerifyDugout(r, []byte(os.Getenv("SECRET")), 5*time.Minute)
	fmt.Println(err == nil && string(body) == os.Getenv("BODY"))
}
`
		for name, src := range map[string]string{"go.mod": "module snippet\n\ngo 1.22\n", "verify.go": snippet, "main.go": harness} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		bin := filepath.Join(dir, "verify")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
		build.Dir = dir
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("PROTOCOL.md's Go snippet does not build: %v\n%s", err, out)
		}
		for _, tc := range snippetCases() {
			cmd := exec.CommandContext(ctx, bin)
			cmd.Env = append(os.Environ(), "SECRET="+tc.secret, "TS="+tc.timestamp, "SIG="+tc.signature, "BODY="+tc.body)
			out, err := cmd.Output()
			if got := strings.TrimSpace(string(out)); err != nil || got != strconv.FormatBool(tc.accept) {
				t.Errorf("%s: the Go snippet says %q (%v), want %v", tc.name, got, err, tc.accept)
			}
		}
	})
	t.Run("Python", func(t *testing.T) {
		python, err := exec.LookPath("python3")
		if err != nil {
			t.Skip("no python3 on this machine: PROTOCOL.md's Python snippet is not checked")
		}
		var script bytes.Buffer
		script.WriteString(docBlock(t, "python", "def verify_dugout"))
		script.WriteString("\nimport os\nprint(verify_dugout(os.environb[b'SECRET'], os.environ['TS'], os.environ['SIG'], os.environb[b'BODY']))\n")
		for _, tc := range snippetCases() {
			cmd := exec.Command(python, "-c", script.String())
			cmd.Env = append(os.Environ(), "SECRET="+tc.secret, "TS="+tc.timestamp, "SIG="+tc.signature, "BODY="+tc.body)
			out, err := cmd.CombinedOutput()
			if got := strings.TrimSpace(string(out)); err != nil || got != fmt.Sprint(map[bool]string{true: "True", false: "False"}[tc.accept]) {
				t.Errorf("%s: the Python snippet says %q (%v), want %v", tc.name, got, err, tc.accept)
			}
		}
	})
}
