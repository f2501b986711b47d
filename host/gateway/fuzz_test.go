package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/proto/rest"
)

// fuzzNode answers every event by echoing what it understood, reading the
// body; it stands for the local table and for the peer.
var fuzzNode = host.HandlerFunc(func(ctx context.Context, ev *host.Event) (*host.Reply, error) {
	if ev.Body != nil {
		if _, err := io.Copy(io.Discard, ev.Body); err != nil {
			return nil, err
		}
	}
	if ev.Noun == "fail" {
		return nil, host.Errorf(host.KindHandlerFailed, "asked to fail")
	}
	b := []byte(ev.Route())
	return &host.Reply{Status: 200, Code: 0, ContentType: "text/plain", Size: int64(len(b)), Body: io.NopCloser(bytes.NewReader(b))}, nil
})

type fuzzPeers struct{}

func (fuzzPeers) Peer(_ context.Context, name string) (host.Handler, error) {
	if name == "absent" {
		return nil, errors.New("not connected")
	}
	return fuzzNode, nil
}

// FuzzGatewayRequest feeds whole HTTP requests (request line, headers,
// body) to the gateway: it must never panic, and must always answer with a
// status and a return code from the error table or the handler.
func FuzzGatewayRequest(f *testing.F) {
	for _, s := range []string{
		"GET /server/time HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /server/cat//hello%20/world?x=1&x=2 HTTP/1.1\r\nHost: x\r\nX-Event-Timeout: 2s\r\n\r\n",
		"POST /server/echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\nhello",
		"PUT /local/files//a%2Fb HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"GET /server/x HTTP/1.1\r\nHost: x\r\nX-Event-Timeout: -5s\r\nX-Request-Id: \x01\r\n\r\n",
		"DELETE /client/absent/x HTTP/1.1\r\nHost: x\r\n\r\n",
		"BREW /server/fail HTTP/1.1\r\nHost: x\r\nContent-Type: ;;;\r\n\r\n",
		"GET /server/fail HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	g, err := New(Config{Node: host.Node{Role: host.RoleClient, Name: "c1"}, Local: fuzzNode, Peers: fuzzPeers{},
		PeerWait: time.Millisecond, DefaultTimeout: time.Second, MaxBody: 1 << 10})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return // net/http would have refused it before us
		}
		w := httptest.NewRecorder()
		g.ServeHTTP(w, req)
		code := w.Header().Get(rest.HeaderReturnCode)
		if _, err := strconv.Atoi(code); err != nil {
			t.Fatalf("no numeric %s in the answer to %q: %v", rest.HeaderReturnCode, raw, w.Header())
		}
		if kind := w.Header().Get(rest.HeaderErrorKind); kind != "" {
			k := host.Kind(kind)
			if !k.Known() || w.Code != k.Status() || code != strconv.Itoa(k.ReturnCode()) {
				t.Fatalf("error %s answered %d code %s, not its row of the table", kind, w.Code, code)
			}
		} else if w.Code != 200 {
			t.Fatalf("reply %d without an error kind for %q", w.Code, raw)
		}
	})
}
