// Package ui is a node's status page for people: GET /ui/ on the gateway
// serves one self-contained HTML document (its style and script inlined,
// embedded in the binary; nothing loads from elsewhere, so it works on an
// offline host), which polls GET /ui/api/state for the node's state and
// draws it:
//
//   - the node: role, name, version, uptime, the policy in force, a
//     client's link to the server;
//   - the cluster's members and how many clients each holds, when the
//     node is in a cluster;
//   - the peers: a page of them at a time (filtered by name, sorted by any
//     column), with a summary of all of them;
//   - the plugins: state and why, restarts, routes, pid, version, last
//     error;
//   - the events: a chart per route of events/s and p50/p99 latency over
//     the last five minutes, and the latest failures with their request
//     ids, all from the node's own memory (metrics.Recent), not from a
//     Prometheus server.
//
// Every URL the page uses is relative (api/state, ../status), so it works
// behind a proxy that publishes the gateway under a path prefix, such as
// docs/nginx/restpipe.conf. GET /ui redirects to ui/ with a relative
// Location for the same reason.
//
// Bounds. A state holds at most MaxPageSize peers whatever their number
// (the summary is computed over all of them on the node), the busiest
// MaxRoutes routes, and only the failures the page has not seen yet
// (failures_after), so its size does not grow with the number of peers;
// the node's cost does, linearly (see docs/ui.md for the figures with
// 10,000 peers). The page polls every Config.Refresh (1 s by default, at
// most 2 s), pauses while its tab is hidden, and while the node does not
// answer it says so and retries every 2 s; it tells a restart of the node
// from a new start time.
//
// Safety. The page puts everything it receives into the document as text,
// never as markup, and its Content-Security-Policy lets only its own inline
// script and style run (by hash) and talk only to its own origin. It is
// read-only: only GET and HEAD are served. Whoever can reach the gateway can
// read it, as they can read /status.
//
// The package imports no sibling under host/: the node's parts reach it
// through the Source interface, which cmd/restpipe implements.
package ui
