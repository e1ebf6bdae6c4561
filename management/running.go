package management

import "github.com/metask/caddy-ai-gateway/keystore"

// RunningStore returns the key store of the running config's ai_gateway
// app, as the admin API finds it at request time. A handler that keeps the
// store it was provisioned with can compare: after a reload that switched
// the database, the two differ.
func RunningStore() (*keystore.Store, error) {
	app, err := currentApp()
	if err != nil {
		return nil, err
	}
	return app.Store(), nil
}
