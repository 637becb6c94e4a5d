package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// lockDir takes an exclusive lock on dir/lock, held until the returned file
// is closed (or the program exits), so that two clusters never share a
// folder.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		_ = f.Close()
		return nil, fmt.Errorf("another local cluster is running from %s (pid %s): stop it first (Ctrl-C where it runs), or use another folder", dir, bytes.TrimSpace(holder))
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, nil
}

// stopLeftovers stops the processes that a run killed without warning (so
// it could not stop them) left behind in dir: the processes running one of
// the binaries in assets whose command line names a path inside dir. Only
// called with dir's lock held, so none of them belongs to a live run. Linux
// only (it reads /proc); elsewhere it does nothing.
func stopLeftovers(dir, assets string, out io.Writer) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	needle := []byte(dir + string(filepath.Separator))
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || filepath.Dir(exe) != filepath.Clean(assets) {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, needle) {
			continue
		}
		fmt.Fprintf(out, "      stopping %s (pid %d), left running by an earlier run in this folder\n", filepath.Base(exe), pid)
		_ = syscall.Kill(pid, syscall.SIGTERM)
		pids = append(pids, pid)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
