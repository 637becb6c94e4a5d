// Package version holds the release version and source commit the manager
// was built from. The build stamps them with the linker:
//
//	go build -ldflags "-X github.com/imcallback/friend-deletion-operator/internal/version.Version=v0.1.0 \
//	  -X github.com/imcallback/friend-deletion-operator/internal/version.Commit=$(git rev-parse HEAD)" .
//
// The Dockerfile and `make build` do so; a plain `go build` leaves the
// defaults below, and Commit then falls back to the VCS revision Go records
// in the binary.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the release, for example v0.1.0; "dev" when not stamped.
var Version = "dev"

// Commit is the full git commit the binary was built from; empty when not
// stamped and Go recorded no VCS revision.
var Commit = ""

// String is the one line `manager --version` prints: version, commit and the
// Go toolchain and platform.
func String() string {
	commit := Commit
	if commit == "" {
		commit = vcsRevision()
	}
	if commit == "" {
		commit = "unknown"
	}
	return fmt.Sprintf("friend-deletion-operator %s (commit %s, %s, %s/%s)", Version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// vcsRevision is the commit Go's build stamped into the binary's build
// information (go build -buildvcs), or "".
func vcsRevision() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" {
			return s.Value
		}
	}
	return ""
}
