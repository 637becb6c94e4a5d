package manager

import (
	"flag"
	"testing"
	"time"
)

// TestGracefulShutdownTimeout derives, from the command line, how long the
// manager waits for its runnables on SIGTERM: the receiver's whole shutdown
// (delay, in-flight callbacks, spool drain, last status write), so that a
// longer --receiver-shutdown-delay is not cut by controller-runtime's fixed
// 30 s; never less than 30 s when the controllers run too; and whatever a
// caller set itself.
func TestGracefulShutdownTimeout(t *testing.T) {
	set := 7 * time.Second
	for _, tc := range []struct {
		name string
		args []string
		set  *time.Duration
		want time.Duration
	}{
		{"receiver, defaults: 5 s delay + 10 s in flight + 5 s drain + 5 s status", []string{"--role=receiver"}, nil, 25 * time.Second},
		{"receiver, longer delay", []string{"--role=receiver", "--receiver-shutdown-delay=20s"}, nil, 40 * time.Second},
		{"receiver, every part", []string{"--role=receiver", "--receiver-shutdown-delay=1s", "--receiver-shutdown-timeout=2s", "--receiver-spool-drain-timeout=3s"}, nil, 11 * time.Second},
		{"all, defaults: the controllers' 30 s", []string{"--role=all"}, nil, 30 * time.Second},
		{"all, longer delay", []string{"--role=all", "--receiver-shutdown-delay=30s"}, nil, 50 * time.Second},
		{"controllers: the receiver's options do not count", []string{"--role=controllers", "--receiver-shutdown-delay=60s"}, nil, 30 * time.Second},
		{"set by the caller", []string{"--role=receiver", "--receiver-shutdown-delay=60s"}, &set, set},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := DefaultOptions()
			fs := flag.NewFlagSet("manager", flag.ContinueOnError)
			o.BindFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			o.Manager.GracefulShutdownTimeout = tc.set
			got := gracefulShutdownTimeout(o)
			if got == nil || *got != tc.want {
				t.Errorf("gracefulShutdownTimeout = %v, want %s", got, tc.want)
			}
		})
	}
}
