// Package link keeps the durable, mutually authenticated connection between
// client nodes and the server node, and carries events over it: one yamux
// stream per event.
//
// A Server accepts links and records each live Session by the name in its
// peer's certificate, in a Registry (newest link wins). A Client dials the
// server and keeps one link up forever, with backoff. Both hand the events
// their peer sends to a host.Handler, and send events with Session.Handle.
//
// # The link protocol
//
// Connection. The client opens TCP to the server and runs TLS 1.3 (nothing
// older is accepted). The server requires a client certificate signed by its
// CA; the client verifies the server's chain and name. Each side takes the
// other's name from the certificate: its first DNS SAN, else its subject CN
// (host.CertName); no name a peer declares is ever trusted.
//
// Frames. Everything on the link after TLS is made of frames:
//
//	frame   = type:uint8  length:uvarint  payload:length bytes
//	type 1  HEADER  payload: one protobuf message of restpipe.link.v1
//	type 2  DATA    payload: body bytes, 1 to 16 MiB (we write 32 KiB)
//	type 3  END     payload: empty, or a Trailer message
//
// A HEADER or END payload is limited to Config.MaxHeaderSize (64 KiB by
// default); a longer one is refused from its length alone, before anything
// is allocated for it. DATA payloads are read straight into the reader's
// buffer and never allocated.
//
// Hello. Before anything else the client sends a HEADER frame with Hello
// (the newest and oldest protocol versions it speaks, and its build); the
// server answers with Welcome (the version both will speak) or with
// Welcome.refusal and closes the connection. Old and new nodes thus refuse
// each other with a sentence instead of misreading frames. This build
// speaks versions 2 and 3 (ProtocolVersion, MinProtocolVersion): version 2
// reuses streams (Request.seq, Cancel.seq, Ready); version 3 adds the
// forward links of a cluster (Hello.forward, Request.target, caller and
// hops, Error.not_delivered; see Several servers below), which a version 2
// node ignores, so a forward link needs version 3 at both ends. The hello must
// complete within Config.HandshakeTimeout of the TCP connect.
//
// Multiplexing. Then yamux runs on the TLS connection, the client as yamux
// client. Each side pings the other every Config.KeepAliveInterval and
// closes the link when an answer takes longer than KeepAliveTimeout, so a
// dead or silent link is detected within about their sum (6 s by default;
// a little more on a loaded machine). The round trips are kept for /status. yamux's own StreamOpenTimeout is off:
// it would close the whole session for one stuck stream; each event has
// its own deadline instead.
//
// Streams. Either side opens a stream per event and writes, in order:
//
//	HEADER StreamHeader{request}                the event, with the time left
//	                                            before its deadline
//	DATA* END                                   the request body, unless
//	                                            request.body_size is 0
//
// and the other side answers on the same stream:
//
//	HEADER Reply                                status, return code, type,
//	                                            or an Error of a stable kind
//	DATA* END                                   the reply body, unless
//	                                            Reply.body_size is 0 or the
//	                                            Reply carries an error
//
// Request and reply bodies flow at the same time, each under yamux's
// per-stream flow control (Config.StreamWindow), so a slow reader at either
// end slows the writer and nothing is buffered beyond one window. A body of
// known size must match it exactly. A sender that cannot finish a body ends
// it with an END frame carrying a Trailer with the error; a stream that
// ends without END is a lost event, never a short success.
//
// Deadlines travel as a relative timeout (Request.timeout_ms), so the
// receiver's deadline does not depend on synchronised clocks. The receiver
// runs the handler under that deadline.
//
// Cancellation. When the caller goes away before the reply is complete,
// the sender opens a new stream carrying only StreamHeader{cancel} with the
// abandoned stream's id, and closes both streams. The receiver cancels that
// event's context at once, even when its request body is still unread.
// (yamux has no stream reset, and a FIN queued behind unread data would not
// be seen.) A receiver records each stream when it accepts it, in order,
// before reading anything, so a cancel can never overtake its event.
//
// Limits. Each side answers at most Config.MaxInFlight events from its peer
// at once; beyond that it replies overloaded at once. A stream whose
// header does not arrive within Config.HeaderTimeout is closed. A peer
// holding far more streams than it may have events in flight
// (8*MaxInFlight+64) is misbehaving: its link is closed.
//
// Sessions. When a link ends, every event in flight on it fails at once with
// link_lost and the handlers of the events it carried are canceled. When a
// second link arrives for a name, the older session is closed (its events
// fail with link_lost) and the newer one serves the name.
//
// Several servers (SPEC §8). A server of a cluster hands an event for a
// client another server holds to that server on a forward link: the same
// protocol, dialled on demand by a Pool and kept, whose Hello says
// forward. The accepting server takes it only when it is a member of a
// cluster (ServerConfig.Forward) and the dialling certificate carries the
// server role (host.ServerRoleURI); the dialling server checks the other's
// name and role in turn. A refused forward link gets Welcome.refusal and a
// log line. Forward links are never in the Registry.
//
// On a forward link every Request names its target client, and caller,
// the node whose gateway took the event (the dialling server when unset);
// hops counts the forward links it crossed before. The receiving server
// hands it to its client's link with caller set, so the client's policy
// and handlers see the node the event came from, not the server that
// relayed it (host.Event Peer and Via). Only a peer whose certificate
// has the server role may state a caller; an event from any other peer
// whose caller is not the peer's own name, or that carries a target on a
// link that is not a forward link, is refused with forbidden and logged.
// A forward link's error reply may say not_delivered: nothing of the
// event reached a handler or was read, so the forwarding server may send
// it again elsewhere (host.ErrNotDelivered).
//
// A client may be given several servers' addresses (ClientConfig.Addrs;
// a host name counts as each of its addresses): each connection attempt
// tries them in a random order, the last one used last.
//
// Known limit: yamux numbers a session's streams with 32-bit ids, two
// apart, so one session can carry about two billion events (a cancel uses
// one too); then the link is closed and the client dials a new one (events
// in flight on it at that moment fail with link_lost).
package link
