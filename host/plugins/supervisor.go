package plugins

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	pluginv1 "github.com/restpipe/restpipe/proto/plugin/v1"
)

// Plugin states, as /status shows them.
const (
	StateStarting      = "starting"
	StateRunning       = "running"
	StateRestarting    = "restarting"    // crashed; restarting after a backoff
	StateQuarantined   = "quarantined"   // crashed too often; waits for a new file
	StateMisconfigured = "misconfigured" // refused its configuration
	StateRefused       = "refused"       // not started: checksum pinning or a bad plugin
	StateConflict      = "conflict"      // another plugin serves one of its routes
	StateStopped       = "stopped"
)

// Status describes one plugin.
type Status struct {
	// File is the plugin's file name in the plugins directory: its
	// identity, the owner of its routes, and the key of its configuration.
	File string `json:"file"`
	// Name and Version are what the plugin says it is.
	Name    string `json:"name"`
	Version string `json:"version"`
	// Routes are the route names it serves.
	Routes []string `json:"routes"`
	// State is one word: see the State constants.
	State string `json:"state"`
	// Restarts counts restarts after crashes.
	Restarts int `json:"restarts"`
	// PID is the plugin process, 0 when none runs.
	PID int `json:"pid,omitempty"`
	// SHA256 is the hash of the binary running, in hex (first 12 digits).
	SHA256 string `json:"sha256,omitempty"`
	// SDK is the SDK the running plugin says it is built with ("go/2.0.0",
	// "python/1.0.0").
	SDK string `json:"sdk,omitempty"`
	// StartMillis is how long the running process took to start, in
	// milliseconds: launch (for a script, the interpreter and its
	// imports), go-plugin's handshake, and describing its routes.
	StartMillis float64 `json:"start_ms,omitempty"`
	// Error is why the plugin is not running, if it is not.
	Error string `json:"error,omitempty"`
	// InFlight counts its events in flight.
	InFlight int `json:"in_flight"`
	// Connections counts the event connections the node holds to the
	// plugin, idle ones included (at most eventpath.DefaultMaxIdle idle).
	Connections int `json:"connections"`
	// Handlers counts the handlers running in the plugin, and Abandoned
	// those among them whose event already ended (canceled or timed out:
	// handlers that ignore their context), as the plugin said at the last
	// check (every StatsInterval).
	Handlers  int `json:"handlers"`
	Abandoned int `json:"abandoned"`
}

// supervisor keeps one plugin file's process running: it starts it,
// publishes its routes, restarts it after crashes, swaps in new versions
// and quarantines it when it keeps crashing.
type supervisor struct {
	m    *Manager
	file string
	path string
	log  hclog.Logger
	h    *pluginHandle
	wake chan struct{} // a new file version, a removal, or freed routes
	done chan struct{} // closed when run returns
	// tried is closed after the first start attempt.
	tried     chan struct{}
	triedOnce sync.Once

	mu        sync.Mutex
	want      []byte // version of the file to run (see Manager.scan); nil once removed
	removed   bool
	freed     bool // routes were freed elsewhere: retry a conflict
	status    Status
	published []string // routes held in the table
}

func newSupervisor(m *Manager, file, path string, version []byte) *supervisor {
	return &supervisor{
		m:      m,
		file:   file,
		path:   path,
		log:    m.log.With("plugin", file),
		h:      &pluginHandle{file: file},
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		tried:  make(chan struct{}),
		want:   version,
		status: Status{File: file, Name: file, State: StateStarting, Routes: []string{}},
	}
}

// update asks for the file version to run.
func (s *supervisor) update(version []byte) {
	s.mu.Lock()
	s.want = version
	s.mu.Unlock()
	s.poke()
}

// remove asks the supervisor to withdraw the plugin and stop.
func (s *supervisor) remove() {
	s.mu.Lock()
	s.removed = true
	s.mu.Unlock()
	s.poke()
}

func (s *supervisor) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *supervisor) target() (want []byte, removed, freed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	freed, s.freed = s.freed, false
	return s.want, s.removed, freed
}

// peek returns what the supervisor was last asked to run.
func (s *supervisor) peek() ([]byte, bool, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.want, s.removed, s.freed
}

// retryConflict asks a supervisor whose routes were taken to try again.
func (s *supervisor) retryConflict() {
	s.mu.Lock()
	s.freed = true
	s.mu.Unlock()
	s.poke()
}

func (s *supervisor) setStatus(f func(*Status)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.status)
}

// snapshot returns the plugin's status now.
func (s *supervisor) snapshot() Status {
	s.mu.Lock()
	st := s.status
	st.Routes = slices.Clone(st.Routes)
	s.mu.Unlock()
	if in := s.h.cur.Load(); in != nil {
		if st.State == StateRunning {
			st.SHA256 = in.shortSum()
		}
		st.InFlight = in.inFlight.InFlight()
		idle, active := in.events.Conns()
		st.Connections = idle + active
	}
	return st
}

// run supervises the plugin until ctx ends or the file is removed.
func (s *supervisor) run(ctx context.Context) {
	defer close(s.done)
	defer s.triedOnce.Do(func() { close(s.tried) })
	var (
		cur     *instance        // the process serving, or nil
		drains  sync.WaitGroup   // replaced processes finishing their events
		crashes []time.Time      // recent crashes, for backoff and quarantine
		retry   <-chan time.Time // when to restart after a crash
		tried   []byte           // the version last started
		stuck   []byte           // a version that cannot run: not retried until the file changes
		refresh bool             // start a new process of the same version: the running one's handlers are abandoned
	)
	stats := time.NewTicker(s.m.cfg.StatsInterval)
	defer stats.Stop()
	defer drains.Wait()
	stop := func() {
		s.unpublish()
		if cur != nil {
			s.h.setUnavailable("plugin " + s.file + " is stopping")
			s.drainAndKill(ctx, cur)
			cur = nil
		}
	}

	for {
		want, removed, freed := s.target()
		if freed && s.snapshot().State == StateConflict {
			stuck = nil
		}
		if !bytes.Equal(want, tried) {
			// A new file: whatever held the old one back does not apply.
			retry, stuck, crashes = nil, nil, nil
		}
		switch {
		case removed:
			stop()
			s.setStatus(func(st *Status) { st.State, st.PID, st.Error = StateStopped, 0, "removed from the plugins directory" })
			s.log.Info("plugin removed")
			return
		case ctx.Err() != nil:
			stop()
			s.setStatus(func(st *Status) { st.State, st.PID = StateStopped, 0 })
			return
		}

		needStart := (cur == nil || !bytes.Equal(cur.version, want) || refresh) && !bytes.Equal(stuck, want) && retry == nil
		if needStart {
			if cur == nil {
				s.setStatus(func(st *Status) { st.State = StateStarting })
			}
			tried = want
			inst, err := s.m.startInstance(ctx, s.path, want)
			s.triedOnce.Do(func() { close(s.tried) })
			switch {
			case err == nil:
				if perr := s.publish(inst); perr != nil {
					s.log.Error("plugin not routed: a route is taken", "error", perr)
					inst.kill()
					stuck = want
					if cur == nil {
						s.setStatus(func(st *Status) { st.State, st.Error = StateConflict, perr.Error() })
					}
					break
				}
				old, refreshed := cur, refresh
				cur, stuck, refresh = inst, nil, false
				s.h.cur.Store(inst)
				s.m.cfg.Observer.PluginStarted(s.file)
				s.setStatus(func(st *Status) {
					st.State, st.Error = StateRunning, ""
					st.Name, st.Version = inst.desc.Name, inst.desc.Version
					st.Routes, st.PID = slices.Clone(inst.routes), inst.pid()
					st.SDK, st.Handlers, st.Abandoned = inst.desc.Sdk, 0, 0
					st.StartMillis = float64(inst.took.Microseconds()) / 1000
				})
				if old != nil {
					if refreshed {
						s.log.Warn("plugin restarted: too many abandoned handlers", "pid", inst.pid(), "old_pid", old.pid())
					} else {
						s.log.Info("plugin replaced by a new version", "name", inst.desc.Name, "version", inst.desc.Version,
							"old_version", old.desc.Version, "old_sha256", old.shortSum())
					}
					drains.Add(1)
					go func() { defer drains.Done(); s.drainAndKill(ctx, old) }()
				} else {
					s.log.Info("plugin running", "name", inst.desc.Name, "version", inst.desc.Version,
						"routes", inst.routes, "pid", inst.pid())
				}
			case ctx.Err() != nil:
				continue
			case isPermanent(err):
				stuck = want
				state := StateRefused
				if errors.Is(err, errMisconfigured) {
					state = StateMisconfigured
				}
				s.log.Error("plugin refused", "error", err)
				if cur == nil {
					s.h.setUnavailable(fmt.Sprintf("plugin %s is %s: %v", s.file, state, err))
					s.setStatus(func(st *Status) { st.State, st.Error = state, err.Error() })
				}
			case cur != nil && refresh:
				// The restart for abandoned handlers failed: try again at
				// the next check.
				refresh = false
				s.log.Error("plugin restart for abandoned handlers failed; keeping the running one", "error", err)
			case cur != nil:
				// A new version failed to start; the running one keeps
				// serving until the file changes again.
				stuck = want
				s.log.Error("new plugin version failed to start; keeping the running one", "error", err)
			default:
				crashes = s.crashed(crashes, err)
				if retry = s.backoff(crashes, err); retry == nil {
					stuck = want
				}
			}
		}

		var exited <-chan struct{}
		if cur != nil {
			exited = cur.exited()
		}
		select {
		case <-s.wake:
		case <-ctx.Done():
		case <-retry:
			retry = nil
		case <-stats.C:
			if cur != nil && s.checkHandlers(ctx, cur) {
				refresh = true
			}
		case <-exited:
			s.h.cur.CompareAndSwap(cur, nil)
			cur.kill()
			err := errors.New("plugin process exited")
			if words := cur.tail.lastWords(); words != "" {
				err = fmt.Errorf("plugin process exited (its last words on stderr: %s)", words)
			}
			cur = nil
			crashes = s.crashed(crashes, err)
			if retry = s.backoff(crashes, err); retry == nil {
				stuck = want
			}
		}
	}
}

// checkHandlers asks the running plugin about its handlers, shows them in
// the status, and reports whether its abandoned handlers exceed
// MaxAbandoned.
func (s *supervisor) checkHandlers(ctx context.Context, in *instance) bool {
	ctx, cancel := context.WithTimeout(ctx, s.m.cfg.StatsInterval)
	defer cancel()
	st, err := in.rpc.Stats(ctx, &pluginv1.StatsRequest{})
	if err != nil {
		s.log.Debug("plugin stats", "error", err)
		return false
	}
	s.setStatus(func(ss *Status) { ss.Handlers, ss.Abandoned = int(st.Running), int(st.Abandoned) })
	if max := s.m.cfg.MaxAbandoned; max > 0 && st.Abandoned > int64(max) {
		s.m.cfg.Observer.PluginRefreshed(s.file)
		s.log.Warn("plugin has too many abandoned handlers; restarting it", "abandoned", st.Abandoned, "limit", max)
		return true
	}
	return false
}

// crashed records a crash or failed start and logs it.
func (s *supervisor) crashed(crashes []time.Time, err error) []time.Time {
	now := time.Now()
	recent := crashes[:0]
	for _, t := range crashes {
		if now.Sub(t) < s.m.cfg.CrashWindow {
			recent = append(recent, t)
		}
	}
	recent = append(recent, now)
	s.m.cfg.Observer.PluginCrashed(s.file)
	s.log.Error("plugin crashed or failed to start", "error", err, "recent_crashes", len(recent))
	return recent
}

// backoff returns when to restart after the recent crashes, the last of
// them err, or nil (never, until the file changes) once they quarantine
// the plugin. /status says err, so that a plugin that cannot start says
// why there; callers, who may be remote peers, get the reason without it
// (err may quote the plugin's standard error).
func (s *supervisor) backoff(crashes []time.Time, err error) <-chan time.Time {
	n := len(crashes)
	if n >= s.m.cfg.QuarantineAfter {
		msg := fmt.Sprintf("plugin %s is quarantined after %d crashes within %v; replace its file to try again", s.file, n, s.m.cfg.CrashWindow)
		s.log.Error("plugin quarantined", "crashes", n, "window", s.m.cfg.CrashWindow)
		s.m.cfg.Observer.PluginQuarantined(s.file)
		s.h.setUnavailable(msg)
		s.setStatus(func(st *Status) {
			st.State, st.PID, st.Error = StateQuarantined, 0, fmt.Sprintf("%s (last: %v)", msg, err)
		})
		return nil
	}
	d := s.m.cfg.MinRestart << (n - 1)
	if d > s.m.cfg.MaxRestart || d <= 0 {
		d = s.m.cfg.MaxRestart
	}
	msg := fmt.Sprintf("plugin %s is restarting after a crash", s.file)
	s.h.setUnavailable(msg)
	s.setStatus(func(st *Status) {
		st.State, st.PID, st.Error = StateRestarting, 0, fmt.Sprintf("%s (%v)", msg, err)
		st.Restarts++
	})
	return time.After(d)
}

// publish puts inst's routes in the table, if they changed.
func (s *supervisor) publish(inst *instance) error {
	if slices.Equal(s.published, inst.routes) {
		return nil
	}
	if err := s.m.cfg.Routes.Set(s.file, inst.routes, s.h); err != nil {
		return err
	}
	s.published = slices.Clone(inst.routes)
	return nil
}

// unpublish withdraws the plugin's routes, and lets plugins waiting for
// them try again.
func (s *supervisor) unpublish() {
	if s.published == nil {
		return
	}
	s.m.cfg.Routes.Remove(s.file)
	s.published = nil
	s.m.routesFreed(s)
}

// drainAndKill lets in's events in flight finish (within DrainTimeout, or
// until ctx ends), then stops the process.
func (s *supervisor) drainAndKill(ctx context.Context, in *instance) {
	t := time.NewTimer(s.m.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-in.drain():
	case <-t.C:
		s.log.Warn("killing a replaced plugin process with events still in flight", "pid", in.pid())
	case <-ctx.Done():
	}
	in.kill()
}

// isPermanent reports start failures that retrying the same file cannot
// fix.
func isPermanent(err error) bool {
	return errors.Is(err, errMisconfigured) || errors.Is(err, errPinned) || errors.Is(err, errBadPlugin)
}
