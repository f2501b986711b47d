// Package cluster makes several restpipe servers one cluster (SPEC §8):
// which server holds which client (presence) and the members list live in
// NATS, embedded in every server by default, and an event for a client
// another server holds is forwarded to that server.
//
// # NATS
//
// By default each server embeds a NATS server (nats-server/v2) whose
// route listener is Config.Listen and which dials Config.Join; the servers
// it learns of from them it dials too. Every route is mutual TLS 1.3 with
// the node's certificate, and a peer is a member only when its
// certificate chains to the CA and carries the server role
// (host.ServerRoleURI); any other is refused in the handshake with a log
// line. The embedded server also listens for NATS clients, on loopback at
// a free port, with the same mutual TLS; this server's own connection is
// in-process. Config.NATS instead connects to an external NATS cluster,
// with the same TLS, and embeds nothing. Routes and connections ping every
// PingInterval and are closed after MaxPingsOut pings unanswered (about
// 6 s by default, the link's own dead-peer detection).
//
// # Subjects
//
// Under Config.Subjects (default "restpipe"):
//
//	restpipe.presence.<client>   the client's presence subject
//	restpipe.members             the members poll
//
// A server subscribes to the presence subject of each client linked to it
// for as long as the link lives (Claim, Release). Presence is that
// subscription: NATS propagates the interest to every server over the
// routes, and drops it when the subscriber's connection, or the route to
// its server, closes, so a dead server's clients vanish with it, without
// anything to expire.
//
// A lookup (Lookup) is a NATS request with an empty body on the presence
// subject; the holder answers with a restpipe.cluster.v1 Holder (its name,
// its forward-link address, the link's epoch and start). When nobody
// holds the client, NATS answers at once "no responders" from the
// interest it knows. Holders learnt are cached for CacheTTL; an event the
// holder refuses as not delivered (it no longer holds the client, or it
// is leaving) drops the entry, and that holder is not used for the client
// for a second, so that the gateway's retry looks again.
//
// A claim is a Holder published, without a reply subject, on the presence
// subject when a client links here, after a lookup that learns the epoch
// of the current holder, if any: the claim takes one more. A server
// holding an older link for the client (a lower epoch; equal epochs fall
// back to the start time, then to the server name) ends it at once (its
// events in flight fail with link_lost) and stops answering; one holding
// a newer link publishes its own claim back, which ends the other. So the
// newest link for a name wins cluster-wide, within a round trip of NATS.
// Servers publish every claim again when NATS reconnects or a member
// appears (a healed partition), so duplicates made meanwhile end.
//
// The members poll is a request on the members subject, answered by every
// member with a Member (name, link address, state up or draining, clients
// held), collected for 300 ms every MemberPoll. A member that misses two
// polls in a row is listed as down for five minutes, and its holders are
// dropped from the cache.
//
// # Forwarding
//
// Peer returns the handler reaching a client: its link, when it is linked
// here; else a forwarder that hands each event, with its Target set, to
// Config.Forwarder (a link.Pool's forward links, in cmd/restpipe) for the
// holder. While nobody holds the client, Peer waits, looking up again
// every WaitPoll, until its context ends. Incoming answers the events other
// servers forward here: each goes to its target's link, or is refused as
// not delivered, unread, when the target is not linked here or this server
// is leaving.
//
// # Leaving
//
// Leave unsubscribes every presence subject (lookups find this server's
// clients absent until they relink elsewhere), refuses forwarded events
// and answers the members poll as draining. The caller then ends its
// clients' links as their events finish, and closes the Cluster.
package cluster
