package pgtest

import "syscall"

// sysProcAttr makes the kernel send the server SIGQUIT (PostgreSQL's
// immediate shutdown) if the test binary dies without stopping it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGQUIT}
}
