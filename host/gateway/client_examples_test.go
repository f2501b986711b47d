package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/gateway/client"
)

// The client's examples (host/gateway/client/example_test.go), run here
// against a real gateway: the client's module does not contain one.

// TestClientExamples runs the flows of the client's documented examples
// and checks what they print, as go test checks an example's Output.
func TestClientExamples(t *testing.T) {
	for _, tt := range []struct {
		name string
		run  func(io.Writer)
		want string
	}{
		{"Client.JSON", exampleClientJSON, "\"hello world\"\n"},
		{"Client.Do", exampleClientDo, "200 0 application/json {\"sum\":42}\n"},
		{"Error", exampleError, "no_route 404 255 true\n" +
			"handler_failed 500 251 TypeError: cat takes exactly 2 arguments\n" +
			"overloaded 503 249 retry after 3s\n" +
			"restpipe overloaded: too many events in flight\n"},
	} {
		var out strings.Builder
		tt.run(&out)
		if out.String() != tt.want {
			t.Errorf("example %s printed\n%s\nwant\n%s", tt.name, out.String(), tt.want)
		}
	}
}

// exampleGateway serves client node c1's gateway in the process, with
// RestPipe's cat handler (and the test handlers) on the server side, on
// 127.0.0.1 or on a Unix socket, and returns its address and a function
// that stops it. A real caller would use the address of its node's --http.
func exampleGateway(network string) (addr string, stop func()) {
	dir, err := os.MkdirTemp("", "restpipe-example-")
	if err != nil {
		panic(err)
	}
	addr, stopServe, err := serve(network, dir, clientNode())
	if err != nil {
		panic(err)
	}
	return addr, func() {
		if err := stopServe(); err != nil {
			panic(err)
		}
		os.RemoveAll(dir)
	}
}

func exampleClientJSON(out io.Writer) {
	addr, stop := exampleGateway("tcp")
	defer stop()

	c, err := client.New(addr) // such as "127.0.0.1:8081"
	if err != nil {
		fmt.Fprintln(out, err)
		return
	}
	var reply struct {
		Result string `json:"result_from_server"`
	}
	// GET /server/cat//hello%20/world
	if err := c.JSON(context.Background(), "GET", client.ServerPath("cat", "hello ", "world"), nil, &reply); err != nil {
		fmt.Fprintln(out, err)
		return
	}
	fmt.Fprintf(out, "%q\n", reply.Result)
}

func exampleClientDo(out io.Writer) {
	addr, stop := exampleGateway("unix")
	defer stop()

	c, err := client.New(addr) // such as "unix:/run/restpipe/gateway.sock"
	if err != nil {
		fmt.Fprintln(out, err)
		return
	}
	resp, err := c.Do(context.Background(), client.Request{
		Method:      "POST",
		Path:        client.ServerPath("sum"),
		Body:        strings.NewReader(`{"a": 2, "b": 40}`), // streamed
		ContentType: "application/json",
		Timeout:     5 * time.Second, // X-Event-Timeout
	})
	if err != nil {
		fmt.Fprintln(out, err)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		fmt.Fprintln(out, err)
		return
	}
	fmt.Fprintln(out, resp.Status, resp.ReturnCode, resp.ContentType, string(body))
}

func exampleError(out io.Writer) {
	addr, stop := exampleGateway("tcp")
	defer stop()
	c, err := client.New(addr)
	if err != nil {
		fmt.Fprintln(out, err)
		return
	}
	ctx := context.Background()

	// A route nobody serves.
	err = c.JSON(ctx, "GET", client.ServerPath("nothing"), nil, nil)
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Fprintln(out, e.Kind, e.Status, e.ReturnCode, e.Kind == host.KindNoRoute)
	}

	// A handler that failed: RestPipe's exception object comes along.
	err = c.JSON(ctx, "GET", client.ServerPath("cat", "only one"), nil, nil)
	if errors.As(err, &e) && e.Exception != nil {
		fmt.Fprintln(out, e.Kind, e.Status, e.ReturnCode, e.Exception.Class+":", e.Exception.Message)
	}

	// A peer that is too busy says when to come back.
	err = c.JSON(ctx, "GET", client.ServerPath("busy"), nil, nil)
	if errors.As(err, &e) && e.Kind == host.KindOverloaded {
		fmt.Fprintln(out, e.Kind, e.Status, e.ReturnCode, "retry after", e.RetryAfter)
	}
	fmt.Fprintln(out, err)
}
