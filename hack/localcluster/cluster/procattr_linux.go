package cluster

import "syscall"

// sysProcAttr puts the child in a process group of its own and has the
// kernel kill it if this program dies without stopping it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
