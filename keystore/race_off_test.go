//go:build !race

package keystore

// raceEnabled: see race_on_test.go.
const raceEnabled = false
