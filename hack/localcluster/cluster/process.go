package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Process is a program the local cluster (or a caller, such as the manager)
// runs in the background, in a process group of its own so that a Ctrl-C in
// the terminal reaches only the program that started it, which then stops
// every process in order.
type Process struct {
	// Name names the process in messages, such as "kube-scheduler".
	Name string
	// Path is the binary.
	Path string
	// Args are its arguments.
	Args []string
	// Env, when set, replaces the environment.
	Env []string
	// LogPath, when set, receives its standard output and error (truncated
	// first). Otherwise Stdout and Stderr do.
	LogPath string
	// Stdout and Stderr receive the output when LogPath is empty; nil
	// discards it.
	Stdout, Stderr io.Writer

	cmd     *exec.Cmd
	logFile *os.File
	done    chan struct{}
	exitErr error
}

// Start starts the process. It does not wait for it to be ready.
func (p *Process) Start() error {
	if _, err := os.Stat(p.Path); err != nil {
		return fmt.Errorf("%s: %w", p.Name, err)
	}
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Env = p.Env
	cmd.Stdout, cmd.Stderr = p.Stdout, p.Stderr
	if p.LogPath != "" {
		f, err := os.Create(p.LogPath)
		if err != nil {
			return fmt.Errorf("%s: creating its log file: %w", p.Name, err)
		}
		p.logFile = f
		cmd.Stdout, cmd.Stderr = f, f
	}
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		p.closeLog()
		return fmt.Errorf("starting %s: %w", p.Name, err)
	}
	p.cmd = cmd
	p.done = make(chan struct{})
	go func() {
		p.exitErr = cmd.Wait()
		p.closeLog()
		close(p.done)
	}()
	return nil
}

// Pid is the process's id, 0 before Start.
func (p *Process) Pid() int {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// WaitReady polls url (a plain-HTTP readiness endpoint of the process, such
// as a manager's /readyz) until it answers 200, for at most two minutes. It
// fails at once when the process exits first.
func (p *Process) WaitReady(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		last = err
		select {
		case <-p.Done():
			return fmt.Errorf("before it was ready, %w", p.ExitError())
		case <-ctx.Done():
			return fmt.Errorf("%s is not ready at %s: %w (%v)", p.Name, url, ctx.Err(), last)
		case <-ticker.C:
		}
	}
}

// Exited reports whether the process has exited, and how.
func (p *Process) Exited() (bool, error) {
	if p.done == nil {
		return false, nil
	}
	select {
	case <-p.done:
		return true, p.exitErr
	default:
		return false, nil
	}
}

// ExitError describes how the process ended, with the end of its log.
func (p *Process) ExitError() error {
	_, err := p.Exited()
	how := "exited"
	if err != nil {
		how = err.Error()
	}
	msg := fmt.Sprintf("%s stopped unexpectedly (%s)", p.Name, how)
	if tail := p.LogTail(15); tail != "" {
		msg += fmt.Sprintf("; the end of %s:\n%s", p.LogPath, tail)
	}
	return errors.New(msg)
}

// Stop sends SIGTERM to the process group, waits up to grace for the process
// to exit, then sends SIGKILL. It is safe to call more than once.
func (p *Process) Stop(grace time.Duration) error {
	if p.cmd == nil {
		return nil
	}
	if done, _ := p.Exited(); done {
		return nil
	}
	pgid := p.cmd.Process.Pid
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stopping %s (pid %d): %w", p.Name, pgid, err)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("%s (pid %d) did not stop within %s of SIGTERM and was killed", p.Name, pgid, grace)
}

// LogTail returns the last n lines of the process's log file.
func (p *Process) LogTail(n int) string {
	if p.LogPath == "" {
		return ""
	}
	return tailFile(p.LogPath, n)
}

func (p *Process) closeLog() {
	if p.logFile != nil {
		_ = p.logFile.Close()
		p.logFile = nil
	}
}

func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	data = bytes.TrimRight(data, "\n")
	lines := strings.Split(string(data), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i := range lines {
		lines[i] = "    " + lines[i]
	}
	return strings.Join(lines, "\n")
}
