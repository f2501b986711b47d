// Package clusterv1 holds the messages restpipe servers of a cluster
// exchange through NATS, generated from cluster.proto. The subjects they
// travel on are described in host/cluster/doc.go.
package clusterv1
