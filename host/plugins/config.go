package plugins

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/restpipe/restpipe/host"
)

// Routes is where the manager publishes which handler serves which routes;
// host/dispatch implements it.
type Routes interface {
	// Set makes h serve routes on behalf of owner, replacing what owner
	// served before, or changes nothing and fails if another owner holds
	// one of them.
	Set(owner string, routes []string, h host.Handler) error
	// Remove withdraws every route of owner.
	Remove(owner string)
}

// Observer is told about plugin processes and calls. Implementations must
// be fast and safe for concurrent use.
type Observer interface {
	PluginStarted(file string)
	PluginCrashed(file string) // a crash or a failed start
	PluginQuarantined(file string)
	// PluginRefreshed: a plugin was restarted because its abandoned
	// handlers exceeded MaxAbandoned.
	PluginRefreshed(file string)
	// ObservePluginCall: a plugin answered an event with its reply header
	// (or failed) after d.
	ObservePluginCall(d time.Duration, kind host.Kind)
	// PeerHook: a peer event was delivered to a plugin, or dropped because
	// the plugin fell behind.
	PeerHook(delivered bool)
	// BadReply: a plugin answered with a reply the node refused (an
	// invalid status); the caller got handler_failed.
	BadReply(file string)
}

type nopObserver struct{}

func (nopObserver) PluginStarted(string)                       {}
func (nopObserver) PluginCrashed(string)                       {}
func (nopObserver) PluginQuarantined(string)                   {}
func (nopObserver) PluginRefreshed(string)                     {}
func (nopObserver) ObservePluginCall(time.Duration, host.Kind) {}
func (nopObserver) PeerHook(bool)                              {}
func (nopObserver) BadReply(string)                            {}

// Config configures a Manager.
type Config struct {
	// Dir is the plugins directory. Required; it must exist.
	Dir string
	// Node is the node the plugins run on, told to each plugin.
	Node host.Node
	// Routes receives the plugins' routes. Required.
	Routes Routes
	// Logger receives the manager's logs and, under each plugin's file
	// name, the plugins' own. Default: a null logger.
	Logger hclog.Logger
	// Observer, when set, is told about plugin processes and calls.
	Observer Observer

	// PluginConfig is each plugin's configuration, by plugin file name,
	// passed to the plugin before its first event. A plugin receives its
	// own only.
	PluginConfig map[string]map[string]string

	// Env is the environment of every plugin process, as NAME=VALUE
	// entries, besides go-plugin's own variables: plugins do not inherit
	// the node's environment (it may hold secrets, such as other
	// plugins' settings in RESTPIPE_PLUGIN_CONFIG). Default: the node's
	// values of PassEnv.
	Env []string

	// Checksums, when not nil, pins plugins: only files listed here (by
	// file name) whose sha256 matches are started; any other is refused
	// with a log line.
	Checksums map[string][]byte

	// AutoMTLS secures the connection to each plugin process with
	// go-plugin's one-time certificates. Default false: each plugin's
	// Unix socket is created in a directory of its own with mode 0700
	// (removed when the plugin stops), so only the node's own user (who
	// could attach to the plugin anyway) and root can connect to it, and
	// AutoMTLS would add about 25 ms to every plugin start (P-521 keys
	// generated on both sides) and a TLS layer to every call.
	AutoMTLS bool

	// GOMAXPROCS, when above 0, is the GOMAXPROCS of plugin processes (a
	// GOMAXPROCS in the node's own environment wins). One processor per
	// plugin saves the scheduler's hand-offs between threads on every
	// event; plugins that compute in parallel want more. Default 1.
	GOMAXPROCS int

	// MaxAbandoned, when above 0, restarts a plugin whose abandoned
	// handlers (still running after their event was canceled or timed
	// out: a handler that ignores its context) exceed it: a new process
	// takes the plugin's events, the old one finishes its events in
	// flight and is killed. The node asks each plugin every
	// StatsInterval. Default 0: never (/status and /metrics show them).
	MaxAbandoned int

	// MaxMemory, when above 0, limits each plugin process's data segment
	// (RLIMIT_DATA: its heap and private writable mappings; a Go plugin
	// starts near 100 MiB of it, mostly reserved rather than resident) to
	// that many bytes: beyond it, its allocations fail and it crashes,
	// and is restarted like any crash. Linux only.
	MaxMemory int64

	// Nice, when above 0, lowers each plugin process's CPU priority by
	// that much (the nice value of every thread it has when it starts,
	// which later threads inherit), so that a plugin burning CPU slows
	// the node and the other plugins less. Linux only.
	Nice int

	// StatsInterval is how often the node asks a running plugin about its
	// handlers (running and abandoned). Default 2s.
	StatsInterval time.Duration

	// StartTimeout bounds a plugin's start: launch, handshake and describe.
	// Default 10s.
	StartTimeout time.Duration

	// MinRestart and MaxRestart bound the wait before restarting a crashed
	// plugin; it doubles with each crash within CrashWindow. Defaults
	// 100ms and 10s.
	MinRestart time.Duration
	MaxRestart time.Duration

	// QuarantineAfter crashes within CrashWindow quarantine a plugin: it is
	// not restarted until its file changes. Defaults 5 and 1m.
	QuarantineAfter int
	CrashWindow     time.Duration

	// Settle is how long a new or changed file must stay unchanged before
	// it is started, so a copy in progress is never launched half-written.
	// Default 300ms.
	Settle time.Duration

	// Rescan is how often the directory is read in full, besides watching
	// it for changes. Default 10s.
	Rescan time.Duration

	// DrainTimeout bounds how long a replaced or removed plugin's events in
	// flight may run on its old process before it is killed. Default 5m.
	DrainTimeout time.Duration
}

// PassEnv names the variables of the node's environment a plugin gets by
// default: what programs and interpreters need to run, nothing of the
// node's own configuration.
var PassEnv = []string{"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES",
	"TZ", "TMPDIR", "PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "SSL_CERT_FILE", "SSL_CERT_DIR"}

// EnvFrom returns the NAME=VALUE entries of names that getenv has.
func EnvFrom(names []string, getenv func(string) string) []string {
	var env []string
	for _, n := range names {
		if v := getenv(n); v != "" {
			env = append(env, n+"="+v)
		}
	}
	return env
}

// DefaultConfig returns the defaults; Dir and Routes must still be set.
func DefaultConfig() Config {
	return Config{
		Logger:          hclog.NewNullLogger(),
		GOMAXPROCS:      1,
		StartTimeout:    10 * time.Second,
		StatsInterval:   2 * time.Second,
		MinRestart:      100 * time.Millisecond,
		MaxRestart:      10 * time.Second,
		QuarantineAfter: 5,
		CrashWindow:     time.Minute,
		Settle:          300 * time.Millisecond,
		Rescan:          10 * time.Second,
		DrainTimeout:    5 * time.Minute,
	}
}

// WithDefaults returns c with every zero field set to its default (see
// DefaultConfig); a nil Env is PassEnv's variables of this process.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.Env == nil {
		c.Env = EnvFrom(PassEnv, os.Getenv)
	}
	for _, f := range c.durations(&d) {
		if *f.v == 0 {
			*f.v = *f.def
		}
	}
	if c.QuarantineAfter == 0 {
		c.QuarantineAfter = d.QuarantineAfter
	}
	return c
}

// durations pairs each duration field of c with its default in d.
func (c *Config) durations(d *Config) []struct{ v, def *time.Duration } {
	return []struct{ v, def *time.Duration }{
		{&c.StartTimeout, &d.StartTimeout}, {&c.MinRestart, &d.MinRestart}, {&c.MaxRestart, &d.MaxRestart},
		{&c.CrashWindow, &d.CrashWindow}, {&c.Settle, &d.Settle}, {&c.Rescan, &d.Rescan}, {&c.DrainTimeout, &d.DrainTimeout},
		{&c.StatsInterval, &d.StatsInterval},
	}
}

// Validate reports the first setting that cannot work, counting zero
// fields as their defaults. It changes nothing, and checks that Dir is a
// directory.
func (c Config) Validate() error {
	c = c.WithDefaults()
	if c.Dir == "" {
		return errors.New("plugins: Dir is required")
	}
	st, err := os.Stat(c.Dir)
	if err != nil {
		return fmt.Errorf("plugins directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("plugins directory %s is not a directory", c.Dir)
	}
	if c.Routes == nil {
		return errors.New("plugins: Routes is required")
	}
	for _, e := range c.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("plugins: Env entry %q is not NAME=VALUE", e)
		}
	}
	d := DefaultConfig()
	for _, f := range c.durations(&d) {
		if *f.v < 0 {
			return errors.New("plugins: durations must be positive")
		}
	}
	if c.MaxAbandoned < 0 || c.MaxMemory < 0 || c.Nice < 0 || c.Nice > 19 {
		return errors.New("plugins: MaxAbandoned and MaxMemory must be positive, Nice between 0 and 19")
	}
	if c.MaxRestart < c.MinRestart {
		return fmt.Errorf("plugins: MaxRestart %v is below MinRestart %v", c.MaxRestart, c.MinRestart)
	}
	return nil
}
