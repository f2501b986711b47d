package gateway

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/internal/hopbench"
)

// benchReply is what both the gateway's handler and the floor answer.
const benchReply = `{"time_from_server": 1767225600.123456}`

// localTime answers every event with benchReply at once.
type localTime struct{}

func (localTime) Handle(context.Context, *host.Event) (*host.Reply, error) {
	return &host.Reply{ContentType: "application/json", Size: int64(len(benchReply)),
		Body: io.NopCloser(strings.NewReader(benchReply))}, nil
}

// BenchmarkGateway is one GET /local/time through the gateway (listener,
// net/http, path parsing, checks, the event, the reply written) on a
// keep-alive loopback connection, beside its floor: the same request to
// a bare net/http handler writing the same reply.
func BenchmarkGateway(b *testing.B) {
	g, err := New(Config{Node: host.Node{Role: host.RoleServer, Name: "srv"}, Local: localTime{}, Peers: noPeers{}})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := Listen("127.0.0.1:0", 0)
	if err != nil {
		b.Fatal(err)
	}
	hop := benchGet(b, g.HTTPServer(ln), ln, "/local/time")

	fln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	floor := benchGet(b, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", fmt.Sprint(len(benchReply)))
		io.WriteString(w, benchReply)
	})}, fln, "/time")
	hopbench.Run(b, hop, floor)
}

// benchGet serves srv on ln until the benchmark ends and returns a GET of
// path on one keep-alive connection, checking the reply.
func benchGet(b *testing.B, srv *http.Server, ln net.Listener, path string) func() error {
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	b.Cleanup(client.CloseIdleConnections)
	url := "http://" + ln.Addr().String() + path
	buf := make([]byte, 4096)
	return func() error {
		res, err := client.Get(url)
		if err != nil {
			return err
		}
		n, err := io.ReadFull(res.Body, buf[:len(benchReply)])
		res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK || string(buf[:n]) != benchReply {
			return fmt.Errorf("GET %s: %d %q %v", path, res.StatusCode, buf[:n], err)
		}
		return nil
	}
}
