package main

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"time"
)

// The browser client is part of the binary, so a game page on any origin can
// import it straight from the server it talks to, always in the version that
// server speaks.
//
//go:embed client/dugout.js demo/index.html
var clientFiles embed.FS

// asset is one embedded file, served with a content hash as its ETag.
type asset struct {
	body        []byte
	etag        string
	contentType string
}

// newAsset reads an embedded file; a missing one is a build mistake.
func newAsset(fs embed.FS, name, contentType string) asset {
	body, err := fs.ReadFile(name)
	if err != nil {
		panic("embedded " + name + ": " + err.Error())
	}
	sum := sha256.Sum256(body)
	return asset{body: body, etag: `"` + hex.EncodeToString(sum[:8]) + `"`, contentType: contentType}
}

// clientModule is client/dugout.js; demoPage is the page a newcomer sees the
// client work in.
var (
	clientModule = newAsset(clientFiles, "client/dugout.js", "text/javascript; charset=utf-8")
	demoPage     = newAsset(clientFiles, "demo/index.html", "text/html; charset=utf-8")
)

// demoPolicy lets the demo page run its own inline script and style and talk
// to this server only: no other origin's script, style, font or socket.
const demoPolicy = "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; connect-src 'self' ws: wss:"

// serveDemo serves the demo page, same-origin only.
func (a asset) serveDemo(w http.ResponseWriter, r *http.Request) {
	a.servePage(w, r, demoPolicy)
}

// servePage serves a under the Content-Security-Policy policy, revalidated
// on every load so that a new binary's page is never mixed with an old one's.
func (a asset) servePage(w http.ResponseWriter, r *http.Request, policy string) {
	w.Header().Set("Content-Type", a.contentType)
	w.Header().Set("Content-Security-Policy", policy)
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("ETag", a.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

// serveModule serves a: cacheable (revalidated by its ETag), and importable
// as a module from pages on other origins (a module script is fetched with
// CORS, so it needs Access-Control-Allow-Origin; the file holds no secret).
func (a asset) serveModule(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", a.contentType)
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Header().Set("Access-Control-Allow-Origin", "*")
	w.Header().Set("ETag", a.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}
