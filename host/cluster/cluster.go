package cluster

import (
	"errors"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/time/rate"
)

// ErrNotMember is returned for a peer whose certificate lacks the server
// role: only servers are members of a cluster.
var ErrNotMember = errors.New("cluster: not a member")

// Cluster is this server's membership of a cluster of servers.
type Cluster struct {
	cfg         Config
	log         hclog.Logger
	refuseLimit *rate.Limiter
}

// reclaimAll claims again every client this server holds.
func (c *Cluster) reclaimAll() {}
