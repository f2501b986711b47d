// Package cluster makes several restpipe servers one cluster (SPEC §8):
// presence of clients and the members list live in NATS, embedded by
// default, and events for a client another server holds are forwarded to
// it.
package cluster
