package keystore

import (
	"errors"
	"fmt"
	"os"
)

// errLockHeld is what tryLock reports when someone else holds the lock.
var errLockHeld = errors.New("lock held")

// lockPath is the sidecar file Open locks. The lock is not taken on the
// database file itself: closing any descriptor of a file drops the fcntl
// locks SQLite holds on it (POSIX), BSD kernels let flock and fcntl locks
// conflict, and Windows byte-range locks are mandatory, so a lock on the
// database file would get in SQLite's way. The file stays on disk after
// Close; only the lock on it matters.
func lockPath(db string) string { return db + ".lock" }

// lockDatabase takes the exclusive process lock of the database at path,
// without waiting. The lock lasts until the returned file is closed.
func lockDatabase(path string) (*os.File, error) {
	f, err := os.OpenFile(lockPath(path), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock file of database %s: %w", path, err)
	}
	if err := tryLock(f); err != nil {
		f.Close()
		if errors.Is(err, errLockHeld) {
			return nil, fmt.Errorf("database %s is %w (only one Caddy may open it at a time; give each instance its own database)", path, ErrLocked)
		}
		return nil, fmt.Errorf("locking database %s: %w", path, err)
	}
	return f, nil
}

// privateFiles makes the database file, and its -wal and -shm files if they
// exist, readable by the owner only, creating the database file if it is
// missing. SQLite gives the -wal and -shm files it creates the mode of the
// database file, so all three are private from the start.
func privateFiles(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		return f.Close()
	}
	if !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("creating database %s: %w", path, err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o600); err != nil && !(p != path && errors.Is(err, os.ErrNotExist)) {
			return fmt.Errorf("making %s private: %w", p, err)
		}
	}
	return nil
}
