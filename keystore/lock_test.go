package keystore

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpenTwiceInProcessFailsWithErrLocked(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ks.db")
	s := openAt(t, path, Options{})
	mustAccount(t, s, "acme", "5")

	_, err := Open(ctx, Options{Path: path})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, "another process") {
		t.Fatalf("error %q should name %s and say another process holds it", msg, path)
	}
	// The failed Open must not have disturbed the first store.
	mustAccount(t, s, "beta", "1")
	checkStore(t, s)

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, Options{Path: path})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	defer s2.Close()
	if len(s2.Accounts(ctx)) != 2 {
		t.Fatalf("reopened store has %d accounts, want 2", len(s2.Accounts(ctx)))
	}
}

// lockChildEnv names the database TestLockHelperProcess holds open when the
// test binary runs as the child of TestOpenLockedByAnotherProcess.
const lockChildEnv = "KEYSTORE_TEST_LOCK_CHILD_DB"

// TestLockHelperProcess is not a test: run by TestOpenLockedByAnotherProcess
// in a child process, it opens the database, says "open" on stdout and keeps
// it open until its stdin closes.
func TestLockHelperProcess(t *testing.T) {
	path := os.Getenv(lockChildEnv)
	if path == "" {
		t.Skip("helper process for TestOpenLockedByAnotherProcess")
	}
	s, err := Open(context.Background(), Options{Path: path})
	if err != nil {
		os.Stdout.WriteString("error: " + err.Error() + "\n")
		os.Exit(1)
	}
	os.Stdout.WriteString("open\n")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	if err := s.Close(); err != nil {
		os.Exit(1)
	}
	os.Exit(0)
}

func TestOpenLockedByAnotherProcess(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ks.db")

	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), lockChildEnv+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "open\n" {
		stdin.Close()
		cmd.Wait()
		t.Fatalf("child: %q, %v", line, err)
	}

	_, err = Open(ctx, Options{Path: path})
	if !errors.Is(err, ErrLocked) {
		stdin.Close()
		cmd.Wait()
		t.Fatalf("Open while another process has the database: %v, want ErrLocked", err)
	}
	t.Logf("while the child holds it: %v", err)

	stdin.Close() // the child closes its store and exits
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	s, err := Open(ctx, Options{Path: path})
	if err != nil {
		t.Fatalf("Open after the other process exited: %v", err)
	}
	s.Close()
}
