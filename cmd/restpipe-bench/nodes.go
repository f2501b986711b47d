package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// node is a restpipe node process of the bench.
type node struct {
	*child
	http string // the gateway's address
	link string // server: the link address
}

// startServer starts a restpipe server node with the bench's plugins (and
// extra flags), listening for links on listen (127.0.0.1:0 unless a restart
// must keep the address), and waits until it serves.
func (r *runner) startServer(ctx context.Context, name, listen string, extra ...string) (*node, error) {
	args := append([]string{"server", "--listen", listen, "--http", "127.0.0.1:0",
		"--plugins", r.bins.pluginsDir, "--log-format", "json", "--log-level", "info"},
		append(r.pki.flags(nameServer), extra...)...)
	c, err := r.procs.start(name, r.bins.restpipe, args, startOpts{})
	if err != nil {
		return nil, err
	}
	l, err := c.waitLog(ctx, 0, time.Minute, "listening", nil)
	if err != nil {
		return nil, fmt.Errorf("%w\n%s", err, c.tail(20))
	}
	return &node{child: c, http: l.str("http"), link: l.str("link")}, nil
}

// startClient starts a restpipe client node named certName (with the
// bench's plugins) dialing server, and waits until it is linked and the
// server's time plugin answers through it.
func (r *runner) startClient(ctx context.Context, name, certName, server string) (*node, error) {
	args := append([]string{"client", "--server", server, "--server-name", nameServer, "--http", "127.0.0.1:0",
		"--plugins", r.bins.pluginsDir, "--log-format", "json", "--log-level", "info"},
		r.pki.flags(certName)...)
	c, err := r.procs.start(name, r.bins.restpipe, args, startOpts{})
	if err != nil {
		return nil, err
	}
	l, err := c.waitLog(ctx, 0, time.Minute, "listening", nil)
	if err != nil {
		return nil, fmt.Errorf("%w\n%s", err, c.tail(20))
	}
	up, err := c.waitLog(ctx, 0, time.Minute, "link up", nil)
	if err != nil {
		return nil, fmt.Errorf("%w\n%s", err, c.tail(20))
	}
	// How the link was shaped tells a LAN link (256 KiB windows, every
	// stream) from one a loaded start measured as a long path.
	rtt, _ := up["rtt"].(float64) // hclog writes a duration as nanoseconds
	window, _ := up["window"].(float64)
	r.res.note("%s: link shaped for a round trip of %v: window %v KiB, %v streams (a LAN link: 256 KiB, 288)",
		name, time.Duration(rtt).Round(time.Microsecond), window/1024, up["streams"])
	n := &node{child: c, http: l.str("http")}
	if err := getOK(ctx, "http://"+n.http+"/server/time"); err != nil {
		return nil, fmt.Errorf("%s: first event: %w\n%s", name, err, c.tail(20))
	}
	return n, nil
}

// getOK GETs url and wants 200.
func getOK(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return nil
}

// statusPlugin is what the bench reads of a plugin in a node's /status.
type statusPlugin struct {
	File    string  `json:"file"`
	PID     int     `json:"pid"`
	StartMs float64 `json:"start_ms"`
}

// findPlugin returns the plugin file of a node's /status for which ok
// holds, or an error saying it is not there.
func findPlugin(ctx context.Context, httpAddr, file string, ok func(statusPlugin) bool) (statusPlugin, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+httpAddr+"/status", nil)
	if err != nil {
		return statusPlugin{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return statusPlugin{}, err
	}
	defer resp.Body.Close()
	var st struct {
		Plugins []statusPlugin `json:"plugins"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return statusPlugin{}, fmt.Errorf("/status: %w", err)
	}
	for _, p := range st.Plugins {
		if p.File == file && ok(p) {
			return p, nil
		}
	}
	return statusPlugin{}, fmt.Errorf("no such %s plugin in /status", file)
}

// pluginPID returns the process id of a node's plugin from /status.
func pluginPID(ctx context.Context, httpAddr, file string) (int, error) {
	p, err := findPlugin(ctx, httpAddr, file, func(p statusPlugin) bool { return p.PID > 0 })
	return p.PID, err
}

// startDirect starts the baseline server (or with plain, the plain HTTP
// origin) as its own process and returns it with its address.
func (r *runner) startDirect(ctx context.Context, name string, plain bool) (*child, string, error) {
	args := []string{cmdServeDirect}
	if plain {
		args = append(args, "--plain")
	} else {
		cert, key := r.pki.files(nameDirect)
		args = append(args, "--ca", r.pki.ca(), "--cert", cert, "--key", key)
	}
	c, err := r.procs.start(name, r.bins.self, args, startOpts{stdoutPipe: true})
	if err != nil {
		return nil, "", err
	}
	type result struct {
		addr string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		var v struct{ Addr string }
		line, err := bufio.NewReader(c.stdout).ReadBytes('\n')
		if err == nil {
			err = json.Unmarshal(line, &v)
		}
		got <- result{v.Addr, err}
		_, _ = io.Copy(io.Discard, c.stdout)
	}()
	select {
	case res := <-got:
		if res.err != nil {
			return nil, "", fmt.Errorf("%s: read its address: %w\n%s", name, res.err, c.tail(20))
		}
		return c, res.addr, nil
	case <-time.After(30 * time.Second):
		return nil, "", fmt.Errorf("%s: no address within 30s\n%s", name, c.tail(20))
	case <-ctx.Done():
		return nil, "", ctx.Err()
	}
}
