//go:build !race

package management

// raceEnabled: see race_on_test.go.
const raceEnabled = false
