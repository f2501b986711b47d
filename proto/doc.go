// Package proto holds restpipe's protocol buffer definitions and the Go code
// generated from them. The packages are versioned from the start:
//
//   - restpipe.link.v1 (link/v1, Go package linkv1): the messages that travel
//     on a link between two restpipe nodes.
//   - restpipe.plugin.v1 (plugin/v1, Go package pluginv1): the gRPC service
//     between the host and its plugins.
//   - restpipe.cluster.v1 (cluster/v1, Go package clusterv1): what the
//     servers of a cluster tell each other through NATS.
//
// proto is a Go module of its own (github.com/restpipe/restpipe/proto),
// with proto/frame, the framing of every restpipe stream: the plugin SDK
// needs these packages, and a plugin needs nothing else of the daemon's
// module. The code generators internal/gen runs are pinned by this
// module's tool directives.
//
// The generated *.pb.go files are committed next to their .proto sources.
// After editing a .proto file, regenerate them from the repository's root
// with
//
//	go tool -modfile=cmd/task.mod task proto
//
// or directly with
//
//	go -C proto run ./internal/gen
//
// which needs only the Go toolchain: no protoc and no installed plugins (see
// proto/internal/gen). The tests in this directory fail when a committed file
// differs from what the generator produces, is missing, or has no .proto
// source left.
package proto
