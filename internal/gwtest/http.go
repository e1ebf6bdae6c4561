package gwtest

import (
	"io"
	"net/http"
	"strings"
	"time"
)

// RawHTTP is a client for byte-exact comparisons: it never asks for
// compression, so a test sees the bytes the gateway sent.
var RawHTTP = &http.Client{
	Timeout:   60 * time.Second,
	Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 128},
}

// Post sends a raw JSON POST to the gateway with RawHTTP, with key as a
// Bearer token (none if "") and the given extra headers, and returns
// status, headers and body. It never touches a testing.T, so any goroutine
// may call it.
func Post(g *Gateway, path, key, body string, headers map[string]string) (int, http.Header, []byte, error) {
	req, err := http.NewRequest("POST", g.BaseURL+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := RawHTTP.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}
