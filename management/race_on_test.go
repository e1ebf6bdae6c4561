//go:build race

package management

// raceEnabled: the race detector slows the pure-Go SQLite down some
// fortyfold, so tests of many rows use fewer.
const raceEnabled = true
