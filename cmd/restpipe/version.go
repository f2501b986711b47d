package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set at build time, as `go tool -modfile=cmd/task.mod task build` and `go tool -modfile=cmd/task.mod task release` do:
//
//	go build -ldflags "-X main.version=v1.2.3 -X main.commit=abc1234" ./cmd/restpipe
//
// Without them, buildVersion falls back to what the Go toolchain recorded in
// the binary: the module version of `go install ...@v1.2.3`, and the VCS
// revision of a build in a git checkout.
var (
	version = "dev"
	commit  = ""
)

// buildVersion returns this build's version and commit ("unknown" when
// neither the linker flags nor the toolchain recorded one).
func buildVersion() (v, c string) {
	v, c = version, commit
	if info, ok := debug.ReadBuildInfo(); ok {
		if v == "dev" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			v = info.Main.Version
		}
		if c == "" {
			dirty := false
			for _, s := range info.Settings {
				switch s.Key {
				case "vcs.revision":
					c = s.Value
				case "vcs.modified":
					dirty = s.Value == "true"
				}
			}
			if c != "" && dirty {
				c += "-dirty"
			}
		}
	}
	if c == "" {
		c = "unknown"
	}
	return v, c
}

// versionString describes this build: version, commit and Go version.
func versionString() string {
	v, c := buildVersion()
	return fmt.Sprintf("restpipe %s (commit %s, %s %s/%s)", v, c, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// software is how this build names itself to peers in the link hello.
func software() string {
	v, _ := buildVersion()
	return "restpipe " + v
}
