package pluginsdk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/restpipe/restpipe/plugin-sdk/eventpath"
	pluginv1 "github.com/restpipe/restpipe/proto/plugin/v1"
	protoroute "github.com/restpipe/restpipe/proto/route"
)

// HandlerFunc answers one event. It must return once ctx is done.
type HandlerFunc func(ctx context.Context, ev *Event) (*Reply, error)

// Config is a plugin's configuration: the settings the node was given for
// it, by key.
type Config map[string]string

// Get returns the value of key, or def when it is not set.
func (c Config) Get(key, def string) string {
	if v, ok := c[key]; ok {
		return v
	}
	return def
}

// Verbs are the verbs a route may have (proto/route's, which the node
// shares).
var Verbs = protoroute.Verbs

// RouteName returns the route name of a verb and a noun: "get", "time/utc"
// gives "get_time_utc".
func RouteName(verb, noun string) string { return protoroute.Name(verb, noun) }

// Plugin is a handler plugin under construction: register its handlers,
// then call Serve. Register everything before Serve; a Plugin is not safe
// for concurrent registration.
type Plugin struct {
	name, version string
	routes        map[string]route // by route name
	configure     func(Config) error
	onPeer        PeerFunc
	errs          []error // registration mistakes, reported by Err and Serve

	logOnce sync.Once // guards logger: handlers may call Logger concurrently
	logger  hclog.Logger
}

type route struct {
	verb, noun string
	h          HandlerFunc
}

// New returns an empty plugin with a name and a version, shown in the
// node's logs and /status.
func New(name, version string) *Plugin {
	p := &Plugin{name: name, version: version, routes: make(map[string]route)}
	if name == "" {
		p.errs = append(p.errs, errors.New("plugin name is empty"))
	}
	return p
}

// Handle registers h for verb (get, post, put, patch, delete) and noun (one
// or more '/'-separated segments of letters, digits, '-' and '_'). A bad
// verb or noun, or a route registered twice, is reported by Err and stops
// Serve.
func (p *Plugin) Handle(verb, noun string, h HandlerFunc) {
	if err := checkRoute(verb, noun); err != nil {
		p.errs = append(p.errs, err)
		return
	}
	if h == nil {
		p.errs = append(p.errs, fmt.Errorf("route %s: nil handler", RouteName(verb, noun)))
		return
	}
	name := RouteName(verb, noun)
	if old, ok := p.routes[name]; ok {
		p.errs = append(p.errs, fmt.Errorf("route %s registered twice (%s %s and %s %s)", name, old.verb, old.noun, verb, noun))
		return
	}
	p.routes[name] = route{verb: verb, noun: noun, h: h}
}

// checkRoute validates a verb and a noun.
func checkRoute(verb, noun string) error {
	if err := protoroute.CheckVerb(verb); err != nil {
		return fmt.Errorf("route %q %q: %w", verb, noun, err)
	}
	if err := protoroute.CheckNoun(noun); err != nil {
		return fmt.Errorf("route %s %q: %w", verb, noun, err)
	}
	return nil
}

// Configure registers f to receive the plugin's configuration once, before
// any event. An error from f stops the plugin from serving; the node logs
// it and reports the plugin as misconfigured.
func (p *Plugin) Configure(f func(Config) error) { p.configure = f }

// Routes returns the names of the registered routes, sorted.
func (p *Plugin) Routes() []string {
	names := make([]string, 0, len(p.routes))
	for n := range p.routes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Err returns the registration mistakes so far, joined, or nil.
func (p *Plugin) Err() error {
	if len(p.routes) == 0 && p.onPeer == nil && len(p.errs) == 0 {
		return errors.New("plugin registers no route and no peer hook")
	}
	return errors.Join(p.errs...)
}

// PeerEvent is one change of the node's links, RestPipe's connection
// hooks. On the server node: a client linked (Kind "connection_added") or
// left ("connection_removed"). On a client node: the link to the server
// came up ("connection_success"), dropped ("connection_lost"), or an
// attempt to make it failed ("connection_fail").
type PeerEvent struct {
	Kind string
	// Peer is the verified name of the other node ("" for
	// connection_fail).
	Peer string
	// Peers is how many peers are connected after the change.
	Peers int
	// Error says why, for connection_fail and connection_lost.
	Error string
	// Time is when the change happened.
	Time time.Time
}

// PeerFunc receives peer events. The node calls it for one event at a
// time, in the order the changes happened; a slow PeerFunc delays the
// next events (and beyond a backlog of 256 the node drops them, logging
// it). An error it returns is logged by the node.
type PeerFunc func(ctx context.Context, ev PeerEvent) error

// OnPeer asks the node for peer events and registers f to receive them.
// Events that happen while the plugin is not running (before it started,
// or while it restarts) are not replayed.
func (p *Plugin) OnPeer(f PeerFunc) { p.onPeer = f }

// Logger returns the plugin's logger. Its lines reach the node's log under
// the plugin's name, at their level. It is safe for concurrent use.
func (p *Plugin) Logger() hclog.Logger {
	p.logOnce.Do(func() {
		p.logger = hclog.New(&hclog.LoggerOptions{
			Name:       p.name,
			Level:      hclog.LevelFromString(os.Getenv(LogLevelEnv)),
			JSONFormat: true,
			Output:     os.Stderr,
		})
	})
	return p.logger
}

// LogLevelEnv is the environment variable through which the node tells its
// plugins its log level, so they do not format lines it would drop.
const LogLevelEnv = "RESTPIPE_PLUGIN_LOG_LEVEL"

// Serve runs the plugin until the node stops it. It does not return: it
// exits the process, with status 1 if the plugin cannot serve (a
// registration mistake, or the binary was started by hand rather than by a
// node, which it says).
func (p *Plugin) Serve() {
	underNode := os.Getenv(pluginv1.MagicCookieKey) == pluginv1.MagicCookieValue
	if err := p.Err(); err != nil {
		if underNode {
			// A JSON line, so the node logs it as the error it is.
			p.Logger().Error("plugin cannot start", "error", err)
		} else {
			fmt.Fprintf(os.Stderr, "plugin %s cannot start: %v\n", p.name, err)
		}
		os.Exit(1)
	}
	if underNode {
		keepStdoutForHandshake()
	}
	srv := newServer(p)
	closeEvents, err := srv.listen(os.Getenv(eventpath.SocketDirEnv))
	if err != nil {
		p.Logger().Error("plugin cannot start", "error", err)
		os.Exit(1)
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         plugin.PluginSet{pluginv1.PluginName: &grpcPlugin{srv: srv}},
		GRPCServer:      plugin.DefaultGRPCServer, // also what makes go-plugin speak gRPC
		Logger:          p.Logger().Named("go-plugin"),
	})
	_ = closeEvents()
	os.Exit(0)
}

// Handshake is the go-plugin handshake of restpipe handler plugins.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  pluginv1.ProtocolVersion,
	MagicCookieKey:   pluginv1.MagicCookieKey,
	MagicCookieValue: pluginv1.MagicCookieValue,
}

// grpcPlugin registers the plugin's service with go-plugin's gRPC server.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	srv *server
}

func (g *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pluginv1.RegisterPluginServer(s, g.srv)
	return nil
}

func (g *grpcPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("pluginsdk: a plugin is never a gRPC client")
}

// RegisterGRPC serves p inside this process for a test harness (see
// pluginsdktest): its control service on s, and its event socket in dir.
// It returns the function that stops the event socket. Plugins call Serve
// instead.
func (p *Plugin) RegisterGRPC(s *grpc.Server, dir string) (closeEvents func() error, err error) {
	if err := p.Err(); err != nil {
		return nil, err
	}
	srv := newServer(p)
	if closeEvents, err = srv.listen(dir); err != nil {
		return nil, err
	}
	pluginv1.RegisterPluginServer(s, srv)
	return closeEvents, nil
}
