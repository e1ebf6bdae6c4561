// Command testcaddy is Caddy with the standard modules and the
// caddy-ai-gateway modules: exactly the main package xcaddy generates for
// `xcaddy build --with github.com/metask/caddy-ai-gateway`.
//
// It exists so that tests (crash_test.go) and the benchmark (bench/run.sh
// with SKIP_BUILD=1) can build a real caddy binary quickly with
//
//	go build -o caddy ./internal/testcaddy
//
// which compiles inside this module and reuses the test build cache, instead
// of xcaddy's throwaway module. Users build their binary with ./xcaddy.sh.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// plug in Caddy modules here
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/metask/caddy-ai-gateway"
)

func main() {
	caddycmd.Main()
}
