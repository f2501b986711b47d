package metrics

import (
	"fmt"
	"strings"
	"time"

	"github.com/cactus/go-statsd-client/v5/statsd"
)

// StatsD sends a node's events as StatsD lines over UDP, for RestPipe's
// users, with RestPipe-like names under a prefix (default "restpipe"):
//
//	<prefix>.event.<route>.<outcome>    counter (outcome: ok or an error kind)
//	<prefix>.event.<route>.duration     timer, milliseconds
//	<prefix>.connection_added           counter (server: a client linked)
//	<prefix>.connection_removed         counter (server: a client left; not
//	                                    when a newer link replaced it)
//	<prefix>.connection_success         counter (client: linked to the server)
//	<prefix>.connection_lost            counter (client: the link dropped)
//	<prefix>.connection_fail            counter (client: a dial failed)
//	<prefix>.plugin.<file>.crash        counter
//
// Sending never blocks an event: lines are buffered and flushed every
// 300ms; a StatsD server that is down loses them.
type StatsD struct {
	c statsd.Statter
}

// NewStatsD returns a StatsD sink for addr (host:port).
func NewStatsD(addr, prefix string) (*StatsD, error) {
	if prefix == "" {
		prefix = "restpipe"
	}
	c, err := statsd.NewClientWithConfig(&statsd.ClientConfig{
		Address:       addr,
		Prefix:        prefix,
		UseBuffered:   true,
		FlushInterval: 300 * time.Millisecond,
	})
	if err != nil {
		return nil, fmt.Errorf("statsd %s: %w", addr, err)
	}
	return &StatsD{c: c}, nil
}

// Close flushes and closes the sink.
func (s *StatsD) Close() error { return s.c.Close() }

// bucket makes a route usable as a StatsD name segment.
func bucket(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '.', ':', '|', '@', ' ', '/':
			return '_'
		}
		return r
	}, s)
}

func (s *StatsD) event(route, outcome string, d time.Duration) {
	r := bucket(route)
	_ = s.c.Inc("event."+r+"."+outcome, 1, 1)
	_ = s.c.TimingDuration("event."+r+".duration", d, 1)
}

// count increments a counter whose dynamic parts the caller has passed
// through bucket.
func (s *StatsD) count(name string) { _ = s.c.Inc(name, 1, 1) }
