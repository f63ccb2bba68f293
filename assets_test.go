package main

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
)

// TestClientModuleIsServed checks GET /client/dugout.js: the very file in
// client/, as JavaScript, importable from another origin, cacheable and
// revalidated by its ETag.
func TestClientModuleIsServed(t *testing.T) {
	s := startServer(t, testConfig(t))
	want, err := os.ReadFile("client/dugout.js")
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", s.ts.URL+"/client/dugout.js", nil)
	req.Header.Set("Origin", "https://game.example.com")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	h := resp.Header
	switch {
	case resp.StatusCode != http.StatusOK:
		t.Fatalf("HTTP %d", resp.StatusCode)
	case !bytes.Equal(body, want):
		t.Fatalf("served %d bytes, not client/dugout.js (%d bytes)", len(body), len(want))
	case h.Get("Content-Type") != "text/javascript; charset=utf-8":
		t.Errorf("Content-Type %q", h.Get("Content-Type"))
	case h.Get("Access-Control-Allow-Origin") != "*":
		t.Errorf("Access-Control-Allow-Origin %q: a page on another origin cannot import it", h.Get("Access-Control-Allow-Origin"))
	case h.Get("Cache-Control") == "" || h.Get("ETag") == "":
		t.Errorf("Cache-Control %q, ETag %q: not cacheable", h.Get("Cache-Control"), h.Get("ETag"))
	}
	req, _ = http.NewRequest("GET", s.ts.URL+"/client/dugout.js", nil)
	req.Header.Set("If-None-Match", h.Get("ETag"))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("a request with the current ETag got HTTP %d, want 304", resp.StatusCode)
	}
}

// TestDemoPageIsServed checks GET /demo/: the embedded page, as HTML, under a
// policy that allows nothing but this server, and /demo redirected to it.
func TestDemoPageIsServed(t *testing.T) {
	s := startServer(t, testConfig(t))
	want, err := os.ReadFile("demo/index.html")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(s.ts.URL + "/demo")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/demo/" || !bytes.Equal(body, want) {
		t.Fatalf("GET /demo: HTTP %d at %s, %d bytes; want the page at /demo/", resp.StatusCode, resp.Request.URL.Path, len(body))
	}
	if ct, csp := resp.Header.Get("Content-Type"), resp.Header.Get("Content-Security-Policy"); ct != "text/html; charset=utf-8" || !strings.HasPrefix(csp, "default-src 'self'") {
		t.Errorf("Content-Type %q, Content-Security-Policy %q", ct, csp)
	}
	if bytes.Contains(body, []byte("http://")) || bytes.Contains(body, []byte("https://")) {
		t.Error("the demo page names another origin: it must be self-contained")
	}
	resp, err = http.Get(s.ts.URL + "/demo/other")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /demo/other: HTTP %d, want 404", resp.StatusCode)
	}
}
