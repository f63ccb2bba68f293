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
//go:embed client/dugout.js
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

// clientModule is client/dugout.js.
var clientModule = newAsset(clientFiles, "client/dugout.js", "text/javascript; charset=utf-8")

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
