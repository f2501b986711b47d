package hosttest

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
)

// FindPython returns a python3 (3.11+) that imports grpc and protobuf,
// what the Python SDK needs, installing Debian's python3-grpcio and
// python3-protobuf once when none does and the test runs as root with
// apt-get; or "" and why there is none, for the test to skip with.
// RESTPIPE_TEST_PYTHON names an interpreter to try first.
var FindPython = sync.OnceValues(func() (path, why string) {
	const probe = "import sys, grpc, google.protobuf; assert sys.version_info >= (3, 11)"
	try := func() string {
		cands := []string{os.Getenv("RESTPIPE_TEST_PYTHON"), "/usr/bin/python3"}
		if p, err := exec.LookPath("python3"); err == nil {
			cands = append(cands, p)
		}
		for _, c := range cands {
			if c != "" && exec.Command(c, "-c", probe).Run() == nil {
				return c
			}
		}
		return ""
	}
	if p := try(); p != "" {
		return p, ""
	}
	if _, err := exec.LookPath("apt-get"); err != nil || os.Getuid() != 0 {
		return "", "no python3 (3.11+) here imports grpc and google.protobuf, and they cannot be installed (needs root and apt-get): " +
			"apt-get install python3-grpcio python3-protobuf, or set RESTPIPE_TEST_PYTHON"
	}
	cmd := exec.Command("apt-get", "install", "-y", "-qq", "--no-install-recommends", "python3-grpcio", "python3-protobuf")
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Sprintf("no python3 imports grpc, and apt-get install python3-grpcio python3-protobuf failed: %v\n%s", err, out)
	}
	if p := try(); p != "" {
		return p, ""
	}
	return "", "python3-grpcio and python3-protobuf are installed, yet no python3 imports them"
})
