package plugins

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
	"google.golang.org/grpc"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/internal/drain"
	"github.com/restpipe/restpipe/plugin-sdk/eventpath"
	pluginv1 "github.com/restpipe/restpipe/proto/plugin/v1"
)

// handshake is what plugin processes must answer with.
var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  pluginv1.ProtocolVersion,
	MagicCookieKey:   pluginv1.MagicCookieKey,
	MagicCookieValue: pluginv1.MagicCookieValue,
}

// instance is one running process of a plugin file.
type instance struct {
	file     string                 // the plugin's file name, its identity
	version  []byte                 // the file version it runs (see Manager.scan)
	sum      atomic.Pointer[[]byte] // sha256 of the binary it runs, for Status; nil until hashed or if unreadable
	client   *plugin.Client
	runner   atomic.Pointer[procRunner] // set by go-plugin's start, read by a canceled start
	rpc      pluginv1.PluginClient
	events   *eventpath.Client // the plugin's event socket
	desc     *pluginv1.DescribeResponse
	routes   []string
	debug    bool // keep tracebacks
	observer Observer
	tail     *tailWriter   // the end of its standard error, for why it died
	took     time.Duration // how long its start took: launch, handshake, describe

	inFlight drain.Counter // events in flight; drains when the instance is replaced or stops

	mu sync.Mutex

	// peers queues peer events for the plugin, delivered in order by
	// deliverPeers; nil unless the plugin asked for them.
	peers       chan *pluginv1.PeerEventRequest // guarded by mu for sending and closing
	peersClosed bool
	peersDone   chan struct{}
	peerCancel  context.CancelFunc // ends the hook call in progress
	killOnce    sync.Once
	log         hclog.Logger
}

// startInstance launches the plugin at path, connects to it and describes
// it. It returns once the plugin is ready for events or failed to be.
func (m *Manager) startInstance(ctx context.Context, path string, version []byte) (*instance, error) {
	started := time.Now()
	file := filepath.Base(path)
	log := safeLogger{m.log.Named(file)}
	inst := &instance{file: file, version: version, debug: m.log.IsDebug(), observer: m.cfg.Observer,
		tail: &tailWriter{}}

	if m.cfg.Checksums != nil {
		// go-plugin's own check (SecureConfig) runs on the command it
		// builds, which a custom runner replaces; the same check runs
		// here, on the file as it is now, before every exec (a crash
		// restart too: the file may have been rewritten since the scan
		// hashed it).
		want, listed := m.cfg.Checksums[file]
		if !listed {
			return nil, fmt.Errorf("%w: %s is not in the checksum manifest", errPinned, file)
		}
		sum, err := hashFile(path)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errPinned, err)
		}
		if subtle.ConstantTimeCompare(sum, want) != 1 {
			return nil, fmt.Errorf("%w: sha256 of %s (%.6x...) does not match the checksum manifest (%.6x...)", errPinned, path, sum, want)
		}
		inst.sum.Store(&sum)
	} else {
		// The sha256 shown in Status is computed beside the start, not
		// before it, and yielding as it goes (hashFile), so that on a
		// node with one processor it delays neither the start nor the
		// first events: it took 16-30 ms for a 19 MB plugin, which the
		// start used to wait for.
		go func() {
			if sum, err := hashFile(path); err == nil {
				inst.sum.Store(&sum)
				log.Debug("plugin binary hashed", "sha256", shortHash(sum))
			}
		}()
	}
	var socketDir string // the plugin's private directory, made by go-plugin
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake,
		Plugins:          plugin.PluginSet{pluginv1.PluginName: &grpcPlugin{}},
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		// go-plugin hands the runner a command without a path, carrying
		// the environment it prepared (handshake cookie, mTLS certificate).
		RunnerFunc: func(l hclog.Logger, c *exec.Cmd, dir string) (runner.Runner, error) {
			socketDir = dir
			cmd := exec.Command(path)
			// go-plugin's variables (SkipHostEnv: none of the node's),
			// then the plugin's environment.
			cmd.Env = append(append(c.Env, m.cfg.Env...), pluginsdkLogLevel+"="+levelName(m.log))
			if m.cfg.GOMAXPROCS > 0 && !hasEnv(m.cfg.Env, "GOMAXPROCS") {
				cmd.Env = append(cmd.Env, "GOMAXPROCS="+strconv.Itoa(m.cfg.GOMAXPROCS))
			}
			r, err := newProcRunner(l, cmd)
			if err != nil {
				return nil, err
			}
			r.maxData, r.nice = m.cfg.MaxMemory, m.cfg.Nice
			inst.runner.Store(r)
			return r, nil
		},
		// With a RunnerFunc, go-plugin gives each plugin a private 0700
		// directory for its socket (removed when the plugin is killed):
		// what Config.AutoMTLS's default relies on.
		AutoMTLS:     m.cfg.AutoMTLS,
		SkipHostEnv:  true,
		StartTimeout: m.cfg.StartTimeout,
		Logger:       safeLogger{m.log},
		SyncStdout:   newLineLogger(log, "stdout"),
		SyncStderr:   newLineLogger(log, "stderr"),
		Stderr:       inst.tail,
	})
	inst.client = client

	// Starting cannot be interrupted by go-plugin itself; killing the
	// process makes it give up at once.
	stop := context.AfterFunc(ctx, func() {
		if r := inst.runner.Load(); r != nil {
			_ = r.Kill(context.Background())
		}
	})
	defer stop()

	rpcClient, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, inst.tail.withLastWords("start", err)
	}
	raw, err := rpcClient.Dispense(pluginv1.PluginName)
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("connect: %w", err)
	}
	inst.rpc = raw.(pluginv1.PluginClient)

	// One StartTimeout for launch, handshake and describe together.
	dctx, cancel := context.WithDeadline(ctx, started.Add(m.cfg.StartTimeout))
	defer cancel()
	desc, err := inst.rpc.Describe(dctx, &pluginv1.DescribeRequest{
		ProtocolVersion: pluginv1.ProtocolVersion,
		Node:            &pluginv1.Node{Role: string(m.cfg.Node.Role), Name: m.cfg.Node.Name},
		Config:          m.cfg.PluginConfig[file],
	})
	if err != nil {
		client.Kill()
		return nil, inst.tail.withLastWords("describe", err)
	}
	if err := checkDescription(desc); err != nil {
		client.Kill()
		if !errors.Is(err, errMisconfigured) {
			err = fmt.Errorf("%w: %w", errBadPlugin, err)
		}
		return nil, err
	}
	if filepath.Dir(desc.EventSocket) != socketDir || socketDir == "" {
		client.Kill()
		return nil, fmt.Errorf("%w: its event socket %q is not in its private directory %q", errBadPlugin, desc.EventSocket, socketDir)
	}
	inst.events = eventpath.NewClient(desc.EventSocket, 0)
	inst.desc = desc
	inst.took = time.Since(started)
	for _, r := range desc.Routes {
		inst.routes = append(inst.routes, r.Name)
	}
	inst.log = log
	if desc.PeerEvents {
		inst.peers = make(chan *pluginv1.PeerEventRequest, peerBacklog)
		inst.peersDone = make(chan struct{})
		var peerCtx context.Context
		peerCtx, inst.peerCancel = context.WithCancel(context.Background())
		go inst.deliverPeers(peerCtx)
	}
	return inst, nil
}

// Reasons a plugin is refused rather than retried at once.
var (
	// errMisconfigured marks a plugin that refused its configuration.
	errMisconfigured = errors.New("plugin refused its configuration")
	// errPinned marks a plugin whose checksum does not match the manifest.
	errPinned = errors.New("plugin refused by checksum pinning")
	// errBadPlugin marks a plugin whose description cannot be routed.
	errBadPlugin = errors.New("plugin description refused")
)

// hasEnv reports whether env sets name.
func hasEnv(env []string, name string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, name+"=") {
			return true
		}
	}
	return false
}

// pluginsdkLogLevel is the environment variable telling a plugin the node's
// log level (pluginsdk.LogLevelEnv; the host does not import the SDK).
const pluginsdkLogLevel = "RESTPIPE_PLUGIN_LOG_LEVEL"

// checkDescription refuses a description the host cannot route by.
func checkDescription(d *pluginv1.DescribeResponse) error {
	if d.ProtocolVersion != pluginv1.ProtocolVersion {
		return fmt.Errorf("plugin speaks plugin protocol %d, this node %d", d.ProtocolVersion, pluginv1.ProtocolVersion)
	}
	if d.Error != "" {
		return fmt.Errorf("%w: %s", errMisconfigured, d.Error)
	}
	if len(d.Routes) == 0 {
		return errors.New("plugin serves no route")
	}
	seen := map[string]bool{}
	for _, r := range d.Routes {
		if err := host.CheckVerb(r.Verb); err != nil {
			return fmt.Errorf("route %q: %w", r.Name, err)
		}
		if err := host.CheckNoun(r.Noun); err != nil {
			return fmt.Errorf("route %q: %w", r.Name, err)
		}
		if want := host.RouteName(r.Verb, r.Noun); r.Name != want {
			return fmt.Errorf("route %q should be named %q", r.Name, want)
		}
		if seen[r.Name] {
			return fmt.Errorf("route %q declared twice", r.Name)
		}
		seen[r.Name] = true
	}
	return nil
}

// exited is closed when the plugin process has exited.
func (in *instance) exited() <-chan struct{} { return in.runner.Load().exited }

// pid returns the plugin process id.
func (in *instance) pid() int { return int(in.runner.Load().pid.Load()) }

// acquire counts one more event in flight, unless the instance drains.
func (in *instance) acquire() bool {
	_, ok := in.inFlight.Enter()
	return ok
}

// release counts an acquired event as done.
func (in *instance) release() { in.inFlight.Leave() }

// drain refuses new events and returns a channel closed once the events in
// flight have finished.
func (in *instance) drain() <-chan struct{} {
	in.inFlight.Drain()
	return in.inFlight.Idle()
}

// kill stops the process: gracefully if it answers, by force otherwise.
// Peer events still queued are dropped.
func (in *instance) kill() {
	in.killOnce.Do(in.stopPeers)
	in.events.Close()
	in.client.Kill()
	if r := in.runner.Load(); r != nil {
		_ = r.Kill(context.Background())
		<-r.exited
	}
	if in.peersDone != nil {
		<-in.peersDone
	}
}

// grpcPlugin gives go-plugin the client side of the plugin protocol.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

func (grpcPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("the host never serves the plugin protocol")
}

func (grpcPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return pluginv1.NewPluginClient(c), nil
}

// shortSum is the first digits of the binary's sha256, "" until hashed.
func (inst *instance) shortSum() string {
	if p := inst.sum.Load(); p != nil {
		return shortHash(*p)
	}
	return ""
}
