// Package policy decides which peers may call which of a node's routes, and
// how fast: the node's --policy file (SPEC §9), read, checked and enforced.
//
// A policy file is HCL made of two kinds of block:
//
//	allow {
//	  peers  = ["node1", "web-*"]     # verified peer names
//	  routes = ["get_time", "get_*"]  # route names: VERB_NOUN
//	}
//	limit {
//	  peers  = ["web-*"]
//	  routes = ["put_files"]          # optional: every route by default
//	  rate   = "200/s"                # N/UNIT: s, m, h or a duration
//	  burst  = 400                    # optional: N by default
//	}
//
// In a pattern '*' matches any run of characters (the empty run too) and
// every other character only itself: "web-*" matches web-1 and web-a.b,
// "*" everything, "get_*" every GET. Peer patterns are lower case, as node
// names are; route patterns are case-sensitive.
//
// An event is allowed when some allow block matches both its caller and its
// route; anything else is refused with forbidden. Of the allowed events,
// the first limit block in the file that matches the caller and the route
// applies (one only: put the specific blocks first); each peer then has its
// own token bucket of that block (golang.org/x/time/rate), shared by the
// block's routes. An event finding the bucket empty is refused with
// overloaded and a RetryAfter that is the time until the bucket has a
// token again; it takes no token, and neither does a forbidden event.
//
// [Policy] is one compiled file; [Enforcer] is the host.Handler a node puts
// in front of its route table for the events its peers send (never for its
// own /local/ callers), and swaps policies on Reload. Neither reads an
// event's body: a refused event is answered before anything of its body is
// consumed, and the link deals with what the peer sent of it.
//
// # Clusters
//
// The policy is checked against a caller name given explicitly
// ([Policy.Decide] and [Policy.Check] take it; the Enforcer gets it from
// Config.Caller). On a single server it is the event's Peer, the name the
// link verified in the peer's certificate. When servers forward events to
// one another, the node that runs the handler must check the name of the
// node whose gateway took the event, not that of the server that forwarded
// it: the forwarding hop carries that name in a field only a verified
// server-to-server link may set (a client's events never carry one, and a
// field of that kind from a client is refused), and the cluster's Caller
// returns it.
package policy
