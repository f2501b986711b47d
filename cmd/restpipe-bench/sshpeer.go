package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// startSSHPeer sets up the ssh -R peer of scenario e: a plain HTTP origin
// (the baseline's handlers without TLS) in its own process, a private sshd
// on a free loopback port with keys made for this run, and
// `ssh -N -R 0:127.0.0.1:<origin>` to it, which exposes the origin on a
// port sshd picks on 127.0.0.1. It returns that forwarded address, or an
// error wrapping errSkipped saying why ssh cannot run here.
func (r *runner) startSSHPeer(ctx context.Context) (sshPeer, error) {
	var none sshPeer
	sshd, ssh, keygen, err := r.findSSH(ctx)
	if err != nil {
		return none, err
	}
	dir := filepath.Join(r.work, "ssh")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return none, err
	}
	hostKey, userKey := filepath.Join(dir, "host_key"), filepath.Join(dir, "user_key")
	for _, k := range []string{hostKey, userKey} {
		if b, err := exec.CommandContext(ctx, keygen, "-q", "-t", "ed25519", "-N", "", "-C", "restpipe-bench", "-f", k).CombinedOutput(); err != nil {
			return none, fmt.Errorf("ssh-keygen: %v: %s", err, b)
		}
	}
	pub, err := os.ReadFile(userKey + ".pub")
	if err != nil {
		return none, err
	}
	authKeys := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authKeys, pub, 0o600); err != nil {
		return none, err
	}
	port, err := freePort()
	if err != nil {
		return none, err
	}
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		return none, err
	}
	fields := strings.Fields(string(hostPub))
	knownHosts := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(knownHosts, fmt.Appendf(nil, "[127.0.0.1]:%d %s %s\n", port, fields[0], fields[1]), 0o600); err != nil {
		return none, err
	}
	config := filepath.Join(dir, "sshd_config")
	conf := fmt.Sprintf(`ListenAddress 127.0.0.1
Port %d
HostKey %s
AuthorizedKeysFile %s
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
GatewayPorts no
PidFile %s
LogLevel INFO
`, port, hostKey, authKeys, filepath.Join(dir, "sshd.pid"))
	if err := os.WriteFile(config, []byte(conf), 0o600); err != nil {
		return none, err
	}
	// sshd running as root wants its privilege separation directory.
	if os.Geteuid() == 0 {
		if _, err := os.Stat("/run/sshd"); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
				return none, fmt.Errorf("%w: sshd needs /run/sshd: %v", errSkipped, err)
			}
		}
	}

	origin, originAddr, err := r.startDirect(ctx, "origin (plain HTTP, behind ssh -R)", true)
	if err != nil {
		return none, err
	}
	d, err := r.procs.start("sshd", sshd, []string{"-D", "-e", "-f", config}, startOpts{})
	if err != nil {
		return none, err
	}
	if err := waitDial(ctx, fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second); err != nil {
		return none, fmt.Errorf("sshd does not listen: %v\n%s", err, d.tail(10))
	}
	me, err := user.Current()
	if err != nil {
		return none, err
	}
	_, originPort, _ := net.SplitHostPort(originAddr)
	args := []string{"-N", "-F", "/dev/null", "-i", userKey, "-p", fmt.Sprint(port),
		"-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "UserKnownHostsFile=" + knownHosts, "-o", "StrictHostKeyChecking=yes",
		"-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=INFO",
		"-R", "127.0.0.1:0:127.0.0.1:" + originPort,
		me.Username + "@127.0.0.1"}
	c, err := r.procs.start("ssh -R", ssh, args, startOpts{})
	if err != nil {
		return none, err
	}
	allocated := regexp.MustCompile(`Allocated port (\d+) for remote forward`)
	l, err := c.waitLog(ctx, 0, 20*time.Second, "", func(l logLine) bool { return allocated.MatchString(l.msg()) })
	if err != nil {
		return none, fmt.Errorf("ssh -R: %v\n%s%s", err, c.tail(10), d.tail(10))
	}
	fwd := "127.0.0.1:" + allocated.FindStringSubmatch(l.msg())[1]
	if err := getOK(ctx, "http://"+fwd+"/time"); err != nil {
		return none, fmt.Errorf("through ssh -R: %v\n%s%s", err, c.tail(10), d.tail(10))
	}
	fmt.Fprintf(r.log, "ssh -R peer: sshd on 127.0.0.1:%d forwards %s to the origin at %s\n", port, fwd, originAddr)
	return sshPeer{fwd: fwd, ssh: c.pid(), sshd: d.pid(), origin: origin.pid()}, nil
}

// sshPeer is a running ssh -R: the forwarded address and its processes.
type sshPeer struct {
	fwd               string
	ssh, sshd, origin int // sshd serves the connection in a child process
}

// findSSH returns the paths of sshd, ssh and ssh-keygen, installing
// OpenSSH with apt-get when missing and allowed.
func (r *runner) findSSH(ctx context.Context) (sshd, ssh, keygen string, err error) {
	look := func() error {
		var err error
		if sshd, err = lookPath("sshd", "/usr/sbin/sshd"); err != nil {
			return err
		}
		if ssh, err = lookPath("ssh", "/usr/bin/ssh"); err != nil {
			return err
		}
		keygen, err = lookPath("ssh-keygen", "/usr/bin/ssh-keygen")
		return err
	}
	if look() == nil {
		return sshd, ssh, keygen, nil
	}
	switch {
	case !r.o.installSSH:
		return "", "", "", fmt.Errorf("%w: sshd or ssh is missing (and --install-ssh=false)", errSkipped)
	case os.Geteuid() != 0:
		return "", "", "", fmt.Errorf("%w: sshd or ssh is missing, and installing them needs root", errSkipped)
	}
	apt, err := exec.LookPath("apt-get")
	if err != nil {
		return "", "", "", fmt.Errorf("%w: sshd or ssh is missing, and there is no apt-get", errSkipped)
	}
	fmt.Fprintln(r.log, "installing openssh-server and openssh-client with apt-get for the ssh -R peer...")
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	install := func() ([]byte, error) {
		cmd := exec.CommandContext(ctx, apt, "install", "-y", "-q", "--no-install-recommends", "openssh-server", "openssh-client")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.CombinedOutput()
	}
	out, err := install()
	if err != nil {
		// The package lists may be missing or stale.
		upd := exec.CommandContext(ctx, apt, "update", "-q")
		upd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		_, _ = upd.CombinedOutput()
		out, err = install()
	}
	if err != nil {
		return "", "", "", fmt.Errorf("%w: apt-get install openssh-server openssh-client failed: %v: %s", errSkipped, err, lastLines(string(out), 3))
	}
	if err := look(); err != nil {
		return "", "", "", fmt.Errorf("%w: after installing OpenSSH: %v", errSkipped, err)
	}
	r.res.note("e. installed openssh-server and openssh-client with apt-get for this row")
	return sshd, ssh, keygen, nil
}

// lookPath finds a program on PATH or at its usual place.
func lookPath(name, usual string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if st, err := os.Stat(usual); err == nil && st.Mode()&0o111 != 0 {
		return usual, nil
	}
	return "", fmt.Errorf("%s not found", name)
}

// freePort returns a loopback TCP port that was free a moment ago, for a
// program (sshd) that cannot listen on port 0.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitDial waits until addr accepts TCP connections.
func waitDial(ctx context.Context, addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " / ")
}
