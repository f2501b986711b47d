package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/restpipe/restpipe/host/gateway/client"
	"github.com/restpipe/restpipe/proto/rest"
)

// The examples below that call a gateway are compiled, not run: this
// module holds no gateway. host/gateway's TestClientExamples runs the same
// flows against a real one and checks what they print. gatewayAddr stands
// for the address of a node's --http.
var gatewayAddr = "127.0.0.1:8081"

func ExampleClient_JSON() {
	c, err := client.New(gatewayAddr) // such as "127.0.0.1:8081"
	if err != nil {
		fmt.Println(err)
		return
	}
	var out struct {
		Result string `json:"result_from_server"`
	}
	// GET /server/cat//hello%20/world
	if err := c.JSON(context.Background(), "GET", client.ServerPath("cat", "hello ", "world"), nil, &out); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%q\n", out.Result)
	// Prints: "hello world"
}

func ExampleClient_Do() {
	c, err := client.New("unix:/run/restpipe/gateway.sock") // a node's --http unix:PATH
	if err != nil {
		fmt.Println(err)
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
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.Status, resp.ReturnCode, resp.ContentType, string(body))
	// Prints: 200 0 application/json {"sum":42}
}

func ExampleServerPath() {
	fmt.Println(client.ServerPath("time"))
	fmt.Println(client.ServerPath("time/utc"))
	fmt.Println(client.ServerPath("cat", "hello ", "world"))
	fmt.Println(client.ServerPath("files", "reports/2024 Q1.pdf"))
	fmt.Println(client.ClientPath("web1", "cat", "100%", "naïve"))
	fmt.Println(client.LocalPath("echo"))
	// Output:
	// /server/time
	// /server/time/utc
	// /server/cat//hello%20/world
	// /server/files//reports%2F2024%20Q1.pdf
	// /client/web1/cat//100%25/na%C3%AFve
	// /local/echo
}

func ExampleError() {
	c, err := client.New(gatewayAddr)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()

	// A route nobody serves.
	err = c.JSON(ctx, "GET", client.ServerPath("nothing"), nil, nil)
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Println(e.Kind, e.Status, e.ReturnCode, e.Kind == rest.KindNoRoute)
	}

	// A handler that failed: RestPipe's exception object comes along.
	err = c.JSON(ctx, "GET", client.ServerPath("cat", "only one"), nil, nil)
	if errors.As(err, &e) && e.Exception != nil {
		fmt.Println(e.Kind, e.Status, e.ReturnCode, e.Exception.Class+":", e.Exception.Message)
	}

	// A peer that is too busy says when to come back.
	err = c.JSON(ctx, "GET", client.ServerPath("busy"), nil, nil)
	if errors.As(err, &e) && e.Kind == rest.KindOverloaded {
		fmt.Println(e.Kind, e.Status, e.ReturnCode, "retry after", e.RetryAfter)
	}
	fmt.Println(err)
	// Prints:
	// no_route 404 255 true
	// handler_failed 500 251 TypeError: cat takes exactly 2 arguments
	// overloaded 503 249 retry after 3s
	// restpipe overloaded: too many events in flight
}
