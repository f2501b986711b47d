package ui

import (
	"cmp"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The sort keys of the peers, as the page names them.
var peerSorts = map[string]func(a, b *Peer) int{
	"name":      func(a, b *Peer) int { return strings.Compare(a.Name, b.Name) },
	"server":    func(a, b *Peer) int { return strings.Compare(a.Server, b.Server) },
	"since":     func(a, b *Peer) int { return a.ConnectedSince.Compare(b.ConnectedSince) },
	"rtt":       func(a, b *Peer) int { return cmp.Compare(a.RTTMillis, b.RTTMillis) },
	"bytes_in":  func(a, b *Peer) int { return cmp.Compare(a.BytesIn, b.BytesIn) },
	"bytes_out": func(a, b *Peer) int { return cmp.Compare(a.BytesOut, b.BytesOut) },
	"in_flight": func(a, b *Peer) int { return cmp.Compare(a.EventsIn+a.EventsOut, b.EventsIn+b.EventsOut) },
	"changes":   func(a, b *Peer) int { return cmp.Compare(a.LinkChanges, b.LinkChanges) },
}

// maxQuery bounds the peer filter's length.
const maxQuery = 128

// peerView is what the page asks to see of the peers.
type peerView struct {
	offset, limit int
	sort          string
	desc          bool
	query         string // lower case
}

// parsePeerView reads the view from a request's query, clamping what is out
// of range to the nearest that is not and ignoring what it does not know:
// the page only sends valid views, and a hand-made URL still gets an answer.
func (h *Handler) parsePeerView(q url.Values) peerView {
	v := peerView{limit: h.cfg.PageSize, sort: "name"}
	if n, err := strconv.Atoi(q.Get("peers_offset")); err == nil && n > 0 {
		v.offset = n
	}
	if n, err := strconv.Atoi(q.Get("peers_limit")); err == nil {
		v.limit = min(max(n, 1), h.cfg.MaxPageSize)
	}
	if _, ok := peerSorts[q.Get("peers_sort")]; ok {
		v.sort = q.Get("peers_sort")
	}
	v.desc = q.Get("peers_order") == "desc"
	query := strings.TrimSpace(q.Get("peers_q"))
	if len(query) > maxQuery {
		query = query[:maxQuery]
	}
	v.query = strings.ToLower(query)
	return v
}

// pagePeers summarises all peers and returns the page v asks for. It sorts
// peers in place.
func pagePeers(peers []Peer, v peerView, now time.Time) PeerPage {
	p := PeerPage{Total: len(peers), Limit: v.limit, Sort: v.sort, Order: "asc", Query: v.query, Rows: []Peer{}}
	if v.desc {
		p.Order = "desc"
	}
	p.Summary = summarise(peers, now)

	matched := peers
	if v.query != "" {
		matched = make([]Peer, 0, len(peers)/8)
		for i := range peers {
			if containsFold(peers[i].Name, v.query) || containsFold(peers[i].Server, v.query) {
				matched = append(matched, peers[i])
			}
		}
	}
	p.Matched = len(matched)
	// Sort pointers, not the structs: fewer bytes move.
	ptrs := make([]*Peer, len(matched))
	for i := range matched {
		ptrs[i] = &matched[i]
	}
	by := peerSorts[v.sort]
	slices.SortFunc(ptrs, func(a, b *Peer) int {
		c := by(a, b)
		if v.desc {
			c = -c
		}
		if c == 0 { // ties in name order, either way
			c = strings.Compare(a.Name, b.Name)
		}
		return c
	})
	p.Offset = v.offset
	if p.Offset >= len(ptrs) {
		// Past the end (the list shrank, or a hand-made URL): the last page.
		p.Offset = max(0, (len(ptrs)-1)/v.limit*v.limit)
	}
	for _, pp := range ptrs[p.Offset:min(p.Offset+v.limit, len(ptrs))] {
		p.Rows = append(p.Rows, *pp)
	}
	return p
}

// summarise sums up every peer.
func summarise(peers []Peer, now time.Time) PeerSummary {
	var s PeerSummary
	if len(peers) == 0 {
		return s
	}
	rtts := make([]float64, len(peers))
	for i := range peers {
		pr := &peers[i]
		if pr.EventsIn+pr.EventsOut > 0 {
			s.Busy++
		}
		s.EventsIn += pr.EventsIn
		s.EventsOut += pr.EventsOut
		s.BytesIn += pr.BytesIn
		s.BytesOut += pr.BytesOut
		rtts[i] = pr.RTTMillis
		if pr.LinkChanges > 1 {
			s.Relinked++
		}
		if now.Sub(pr.ConnectedSince) < FreshWindow {
			s.Fresh++
		}
		if pr.Server != "" {
			if s.ByServer == nil {
				s.ByServer = map[string]int{}
			}
			s.ByServer[pr.Server]++
		}
	}
	slices.Sort(rtts)
	s.RTTMedianMillis = rtts[len(rtts)/2]
	s.RTTMaxMillis = rtts[len(rtts)-1]
	return s
}

// containsFold reports whether s contains lower, which is lower case,
// ignoring ASCII case, without allocating (peer names are DNS names).
func containsFold(s, lower string) bool {
	if len(lower) == 0 {
		return true
	}
	for i := 0; i+len(lower) <= len(s); i++ {
		j := 0
		for j < len(lower) {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != lower[j] {
				break
			}
			j++
		}
		if j == len(lower) {
			return true
		}
	}
	return false
}
