package plugins

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/go-hclog"

	pluginv1 "github.com/restpipe/restpipe/proto/plugin/v1"
)

// Manager runs the plugins of one directory: every executable file in it is
// a plugin, started, described and routed; the directory is watched so that
// plugins added, replaced or removed take effect while the node runs.
type Manager struct {
	cfg Config
	log hclog.Logger

	mu      sync.Mutex
	sups    map[string]*supervisor // by file name
	files   map[string]*fileState  // what the last scans saw, by file name
	scanned chan struct{}          // closed after the first scan
	wg      sync.WaitGroup         // one per supervisor
}

// fileState tracks a candidate file until it settles.
type fileState struct {
	seen  fileObs   // the latest observation
	since time.Time // when seen was first observed
	done  fileObs   // the observation last handed to a supervisor
}

// fileObs is what a scan observes of a file without reading it.
type fileObs struct {
	size  int64
	mtime time.Time
	mode  os.FileMode
	ino   uint64
}

// New returns a Manager; call Run to start the plugins.
func New(cfg Config) (*Manager, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Manager{
		cfg:     cfg,
		log:     cfg.Logger,
		sups:    make(map[string]*supervisor),
		files:   make(map[string]*fileState),
		scanned: make(chan struct{}),
	}, nil
}

// Run starts every plugin in the directory and keeps them running,
// following changes to the directory, until ctx ends; then it withdraws
// their routes, stops the processes and returns once all are gone. Events
// still in flight when ctx ends fail with plugin_unavailable; stop taking
// events first to drain them.
func (m *Manager) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch plugins directory: %w", err)
	}
	defer w.Close()
	if err := w.Add(m.cfg.Dir); err != nil {
		return fmt.Errorf("watch plugins directory %s: %w", m.cfg.Dir, err)
	}
	supCtx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		m.wg.Wait()
	}()

	m.scan(supCtx, true)
	close(m.scanned)

	rescan := time.NewTicker(m.cfg.Rescan)
	defer rescan.Stop()
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			m.log.Trace("plugins directory changed", "event", ev)
			settle.Reset(m.cfg.Settle)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			m.log.Warn("watching plugins directory", "error", err)
			settle.Reset(m.cfg.Settle)
		case <-settle.C:
			if m.scan(supCtx, false) {
				settle.Reset(m.cfg.Settle)
			}
		case <-rescan.C:
			if m.scan(supCtx, false) {
				settle.Reset(m.cfg.Settle)
			}
		}
	}
}

// scan reads the directory and tells supervisors about files added,
// changed or removed. A new or changed file is acted on once it has stayed
// the same for Settle (at the first scan, at once). It reports whether some
// file is still settling.
func (m *Manager) scan(ctx context.Context, first bool) (settling bool) {
	entries, err := os.ReadDir(m.cfg.Dir)
	if err != nil {
		m.log.Error("read plugins directory", "error", err)
		return false
	}
	now := time.Now()
	present := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		if skipName(name) {
			continue
		}
		path := filepath.Join(m.cfg.Dir, name)
		obs, ok := observe(path)
		if !ok {
			continue
		}
		present[name] = true
		fs := m.files[name]
		if fs == nil {
			fs = &fileState{seen: obs, since: now}
			m.files[name] = fs
		}
		if obs == fs.done {
			continue
		}
		if obs != fs.seen {
			fs.seen, fs.since = obs, now
		}
		if !first && now.Sub(fs.since) < m.cfg.Settle {
			settling = true
			continue
		}
		version := obs.key()
		if m.cfg.Checksums != nil {
			// Pinned: the version is the content, checked against the
			// manifest before the plugin runs.
			sum, err := hashFile(path)
			if err != nil {
				m.log.Warn("cannot read plugin file", "file", name, "error", err)
				continue
			}
			if after, ok := observe(path); !ok || after != obs {
				settling = true // it changed while we read it
				continue
			}
			version = sum
		}
		fs.done = obs
		m.offer(ctx, name, path, version, obs)
	}
	for name := range m.files {
		if !present[name] {
			delete(m.files, name)
			m.withdraw(name)
		}
	}
	return settling
}

// skipName reports names that are never plugins: hidden files and the
// usual temporary and backup names, so that "write to .name.tmp, then
// rename" installs a plugin atomically.
func skipName(name string) bool {
	return strings.HasPrefix(name, ".") || strings.HasSuffix(name, "~") ||
		strings.HasSuffix(name, ".tmp") || strings.HasSuffix(name, ".swp")
}

// observe stats a candidate: a regular executable file (symlinks
// followed).
func observe(path string) (fileObs, bool) {
	st, err := os.Stat(path)
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return fileObs{}, false
	}
	return fileObs{size: st.Size(), mtime: st.ModTime(), mode: st.Mode(), ino: inode(st)}, true
}

// key is the version of an unpinned plugin file: any change of its inode,
// size, mode or modification time (a copy, a rename over it, a touch) is a
// new version to start. Reading the whole binary to hash it would add
// milliseconds per megabyte to every plugin start; its sha256, shown in
// Status, is computed while the plugin starts instead.
func (o fileObs) key() []byte {
	return fmt.Appendf(nil, "%d/%d/%d/%o", o.ino, o.size, o.mtime.UnixNano(), uint32(o.mode))
}

// offer gives a settled file version to its supervisor, starting one for a
// new plugin.
func (m *Manager) offer(ctx context.Context, name, path string, version []byte, obs fileObs) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.sups[name]; s != nil {
		if want, _, _ := s.peek(); !bytes.Equal(want, version) {
			m.log.Info("plugin file changed", "file", name, "size", obs.size, "mtime", obs.mtime.Format(time.RFC3339Nano))
			s.update(version)
		}
		return
	}
	m.log.Info("plugin found", "file", name, "size", obs.size, "mtime", obs.mtime.Format(time.RFC3339Nano))
	s := newSupervisor(m, name, path, version)
	m.sups[name] = s
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		s.run(ctx)
		m.mu.Lock()
		if m.sups[name] == s {
			delete(m.sups, name)
		}
		m.mu.Unlock()
	}()
}

// withdraw tells the supervisor of a removed file to stop.
func (m *Manager) withdraw(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.sups[name]; s != nil {
		delete(m.sups, name)
		s.remove()
	}
}

// routesFreed lets plugins whose routes were taken try again.
func (m *Manager) routesFreed(from *supervisor) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.sups {
		if s != from {
			s.retryConflict()
		}
	}
}

// PeerEvent tells every running plugin that asked for peer events about a
// change of the node's links (kind is one of RestPipe's hook names, see
// proto/plugin/v1). It never blocks: each plugin has its own ordered queue.
func (m *Manager) PeerEvent(kind, peer string, peers int, cause error) {
	ev := &pluginv1.PeerEventRequest{Kind: kind, Peer: peer, Peers: int32(peers), UnixNano: time.Now().UnixNano()}
	if cause != nil {
		ev.Error = cause.Error()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.sups {
		if in := s.h.cur.Load(); in != nil {
			in.peerEvent(ev)
		}
	}
}

// Status returns every plugin's status, sorted by file name.
func (m *Manager) Status() []Status {
	m.mu.Lock()
	sups := make([]*supervisor, 0, len(m.sups))
	for _, s := range m.sups {
		sups = append(sups, s)
	}
	m.mu.Unlock()
	out := make([]Status, 0, len(sups))
	for _, s := range sups {
		out = append(out, s.snapshot())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].File < out[j].File })
	return out
}

// WaitStarted waits until every plugin found by the first scan has been
// started once (successfully or not), or ctx ends.
func (m *Manager) WaitStarted(ctx context.Context) error {
	select {
	case <-m.scanned:
	case <-ctx.Done():
		return ctx.Err()
	}
	m.mu.Lock()
	var tried []chan struct{}
	for _, s := range m.sups {
		tried = append(tried, s.tried)
	}
	m.mu.Unlock()
	for _, t := range tried {
		select {
		case <-t:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
