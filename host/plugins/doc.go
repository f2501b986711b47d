// Package plugins runs a node's handler plugins: separate executables that
// speak the restpipe plugin protocol (proto/plugin/v1) over hashicorp/go-plugin
// in gRPC mode, written with plugin-sdk.
//
// Every executable regular file in the plugins directory is a plugin,
// identified by its file name (names starting with '.' or ending in ".tmp",
// ".swp" or "~" are skipped, so "write .x.tmp, then rename to x" installs
// one atomically). The Manager starts each, asks it to describe itself, and
// publishes its routes in the node's route table (Routes, implemented by
// host/dispatch); two plugins claiming one route is an error that names
// both, and the one that claimed it first keeps it.
//
// Supervision. Each plugin file has a supervisor goroutine. A crashed
// plugin is restarted after a backoff that doubles from MinRestart to
// MaxRestart; after QuarantineAfter crashes (or failed starts) within
// CrashWindow it is quarantined: it stays down, its routes answer
// plugin_unavailable, and /status says why, until its file changes. Events
// for a plugin that is down fail at once with plugin_unavailable; events in
// flight in a process that dies fail with plugin_unavailable too.
//
// Hot reload. The directory is watched (fsnotify, plus a full rescan every
// Rescan). A new or changed file is started once it has stayed unchanged for
// Settle, so a copy in progress is never launched half-written. A file's
// version is its inode, size, mode and modification time (its sha256 when
// pinned), so nothing reads a whole binary before starting it; a new
// version is started and described before it replaces the old one, events
// arriving during the swap go to whichever process is current, and the old
// process finishes its events in flight before it is stopped. A new version
// that fails to start leaves the old one serving. A removed file's routes
// are withdrawn and its process stopped after its events finish.
//
// Isolation. A plugin runs in its own process group (killed with it) and,
// on Linux, is killed by the kernel if the daemon dies. Whatever it writes
// to its stdout and stderr lands in the daemon's log under its file name;
// its hclog lines keep their level. A plugin that hangs in its handshake is
// killed after StartTimeout; one that hangs in a handler costs only that
// event, which its deadline ends. Nothing a plugin does can stop the daemon
// or the other plugins.
//
// Configuration. Each plugin receives its settings (Config.PluginConfig,
// by file name) in the describe call, before its first event.
//
// Pinning. With Config.Checksums set, only files listed there with a
// matching sha256 are started (the check go-plugin's SecureConfig makes,
// done on the file before every exec, restarts included); any other is
// refused with a log line.
//
// Transport. Each plugin listens on a Unix socket in a directory of its own,
// mode 0700, made by go-plugin and removed when the plugin stops; only the
// node's user and root can connect. Config.AutoMTLS adds go-plugin's
// one-time certificates on top, at about 25 ms per start.
package plugins
