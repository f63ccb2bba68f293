package cluster

import (
	"context"
	"net/http"
	"time"
)

// httpClient is the tests' HTTP client: short timeouts, no shared state with
// the default client.
var httpClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// newRequest builds a GET for url bound to ctx.
func newRequest(ctx context.Context, url string) (*http.Request, error) {
	return http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
}
