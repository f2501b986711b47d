// Package linkv1 holds the messages of the restpipe link protocol, version
// 1, generated from link.proto. The framing around them is described in
// host/link/doc.go.
package linkv1
