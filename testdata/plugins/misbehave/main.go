// Command misbehave is a test plugin whose behaviour depends on the name it
// is installed under, so one binary plays every misbehaving plugin:
//
//	crash-on-start   exits before serving
//	junk-stdout      prints to stdout before serving (breaks the handshake)
//	hang-handshake   never serves
//	crash-loop       serves, then exits 100ms after describing itself, every time
//	dup-route*       serves get_time, as the time plugin and every other
//	                 dup-route* file do
//	misconfigured    refuses its configuration
//	anything else    serves, under noun <name>/...:
//	                 ok (pid, version, peer, node, and the time left before
//	                 the deadline), crash (exits mid-event), hang (ignores
//	                 its context), fork-crash (starts a child holding its
//	                 stderr, ?detach=1 in a session of its own, then
//	                 exits), spin (burns CPU for ?ms, ignoring its
//	                 context), alloc (?mb megabytes), print (writes to
//	                 stdout and to file
//	                 descriptor 1), slow (?ms=N, or until canceled, which
//	                 it logs with the event id), post echo, and peers
//	                 (the peer events it received, in order), env (its
//	                 environment's names, and ?name='s value)
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	pluginsdk "github.com/restpipe/restpipe/plugin-sdk"
)

// version is set with -ldflags "-X main.version=2" to build a second version.
var version = "1"

func main() {
	name := filepath.Base(os.Args[0])
	switch name {
	case "crash-on-start":
		os.Exit(3)
	case "junk-stdout":
		fmt.Println("hello from a plugin that talks too early")
	case "hang-handshake":
		select {}
	}
	p := pluginsdk.New(name, version)
	if name == "crash-loop" {
		// Crash shortly after describing itself, so its routes are
		// published first.
		p.Configure(func(pluginsdk.Config) error {
			go func() { time.Sleep(100 * time.Millisecond); os.Exit(4) }()
			return nil
		})
	}
	if strings.HasPrefix(name, "dup-route") {
		p.Handle("get", "time", func(context.Context, *pluginsdk.Event) (*pluginsdk.Reply, error) {
			return pluginsdk.JSON("dup"), nil
		})
		p.Serve()
	}
	if name == "misconfigured" {
		p.Configure(func(c pluginsdk.Config) error { return errors.New("setting \"color\" is required") })
	}
	p.Handle("get", name+"/ok", func(ctx context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		reply := map[string]any{"pid": os.Getpid(), "version": version, "peer": ev.Peer, "node": ev.Node}
		if d, ok := ctx.Deadline(); ok {
			reply["deadline_ms"] = time.Until(d).Milliseconds()
		}
		return pluginsdk.JSON(reply), nil
	})
	p.Handle("get", name+"/crash", func(context.Context, *pluginsdk.Event) (*pluginsdk.Reply, error) {
		os.Exit(2)
		return nil, nil
	})
	// fork-crash starts a child that holds the plugin's stderr (and, with
	// ?detach=1, leaves its process group), answers with the child's pid,
	// then exits: the node must see the crash at once all the same.
	p.Handle("get", name+"/fork-crash", func(_ context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		cmd := exec.Command("sleep", "300")
		// The process's own descriptor 2, the pipe to the node (go-plugin
		// points os.Stderr at a pipe of its own).
		fd2 := os.NewFile(2, "stderr")
		cmd.Stdout, cmd.Stderr = fd2, fd2
		if ev.QueryValue("detach") == "1" {
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		go func() { time.Sleep(100 * time.Millisecond); os.Exit(5) }()
		return pluginsdk.JSON(map[string]int{"child_pid": cmd.Process.Pid}), nil
	})
	// spin burns CPU for ?ms (default a minute), ignoring its context.
	p.Handle("get", name+"/spin", func(_ context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		ms, _ := strconv.Atoi(ev.QueryValue("ms"))
		if ms <= 0 {
			ms = 60000
		}
		for end := time.Now().Add(time.Duration(ms) * time.Millisecond); time.Now().Before(end); {
		}
		return pluginsdk.Text("spun"), nil
	})
	// alloc allocates and touches ?mb megabytes.
	p.Handle("get", name+"/alloc", func(_ context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		mb, _ := strconv.Atoi(ev.QueryValue("mb"))
		b := make([]byte, mb<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		return pluginsdk.JSON(map[string]int{"allocated_mb": len(b) >> 20}), nil
	})
	p.Handle("get", name+"/hang", func(context.Context, *pluginsdk.Event) (*pluginsdk.Reply, error) {
		select {}
	})
	p.Handle("get", name+"/print", func(context.Context, *pluginsdk.Event) (*pluginsdk.Reply, error) {
		fmt.Println("printed to os.Stdout by a handler")
		os.NewFile(1, "fd1").WriteString("written to file descriptor 1 by a handler\n")
		p.Logger().Warn("logged by a handler", "answer", 42)
		// Terminal escapes and a bell, on every way out.
		fmt.Println("escape \x1b[31mred\x1b[0m\a on stdout")
		os.NewFile(2, "fd2").WriteString("escape \x1b]0;title\x07 on descriptor 2\n")
		p.Logger().Info("escape \x1b[2J in a log line", "value", "\x1b[1mbold")
		return pluginsdk.Text("printed"), nil
	})
	p.Handle("get", name+"/slow", func(ctx context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		ms, _ := strconv.Atoi(ev.QueryValue("ms"))
		p.Logger().Info("slow event started", "id", ev.ID, "ms", ms)
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			return pluginsdk.JSON(map[string]any{"slept_ms": ms, "version": version}), nil
		case <-ctx.Done():
			p.Logger().Info("slow event canceled", "id", ev.ID, "error", ctx.Err())
			return nil, ctx.Err()
		}
	})
	// The names of the variables in the plugin's environment, and the
	// value of ?name=.
	p.Handle("get", name+"/env", func(_ context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		var names []string
		for _, e := range os.Environ() {
			k, _, _ := strings.Cut(e, "=")
			names = append(names, k)
		}
		return pluginsdk.JSON(map[string]any{"names": names, "value": os.Getenv(ev.QueryValue("name"))}), nil
	})
	// Peer events, as received, in order.
	var (
		peersMu sync.Mutex
		peers   = []map[string]any{}
	)
	p.OnPeer(func(_ context.Context, ev pluginsdk.PeerEvent) error {
		peersMu.Lock()
		defer peersMu.Unlock()
		peers = append(peers, map[string]any{"kind": ev.Kind, "peer": ev.Peer, "peers": ev.Peers, "error": ev.Error})
		return nil
	})
	p.Handle("get", name+"/peers", func(context.Context, *pluginsdk.Event) (*pluginsdk.Reply, error) {
		peersMu.Lock()
		defer peersMu.Unlock()
		return pluginsdk.JSON(peers), nil
	})
	p.Handle("post", name+"/echo", func(_ context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		return pluginsdk.Stream(ev.ContentType, ev.Body, ev.Size), nil
	})
	p.Serve()
}
