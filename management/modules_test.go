package management_test

// The tests of this package run a whole gateway, so they need the handlers
// registered; an external test file may import them without a cycle.
import _ "github.com/metask/caddy-ai-gateway"
