package pluginsdk_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	pluginsdk "github.com/restpipe/restpipe/plugin-sdk"
)

// A whole plugin: register a handler per route, then Serve. This one is
// RestPipe's time example; main would end with p.Serve().
func Example() {
	p := pluginsdk.New("time", "1.0.0")
	p.Handle("get", "time", func(ctx context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		now := float64(time.Now().UnixNano()) / 1e9
		return pluginsdk.JSON(map[string]float64{"time_from_" + ev.Node.Role: now}), nil
	})
	if err := p.Err(); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(p.Routes())
	// p.Serve()

	// Output: [get_time]
}

func ExamplePlugin_Handle() {
	p := pluginsdk.New("clock", "1.0.0")
	hello := func(ctx context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		return pluginsdk.Text("hello " + ev.Arg(0)), nil
	}
	p.Handle("get", "hello", hello)       // GET /server/hello//world
	p.Handle("put", "clock/alarm", hello) // PUT /server/clock/alarm
	p.Handle("get", "clock alarm", hello) // a mistake: no spaces in a noun
	p.Handle("get", "hello", hello)       // a mistake: registered twice
	fmt.Println(p.Routes())
	fmt.Println(p.Err())
	// Output:
	// [get_hello put_clock_alarm]
	// route get "clock alarm": noun "clock alarm": segment "clock alarm" may hold only letters, digits, '-' and '_'
	// route get_hello registered twice (get hello and get hello)
}

func ExampleRouteName() {
	fmt.Println(pluginsdk.RouteName("get", "time/utc"))
	// Output: get_time_utc
}

func ExampleJSON() {
	rep := pluginsdk.JSON(map[string]string{"result_from_client": "hello world"})
	b, _ := io.ReadAll(rep.Body)
	fmt.Println(rep.ContentType, rep.Size)
	fmt.Println(string(b))
	// Output:
	// application/json 37
	// {"result_from_client":"hello world"}
}

func ExampleReply_WithStatus() {
	// A reply is not only for success: the caller gets the status, the
	// return code and the body as they are.
	rep := pluginsdk.JSON(map[string]string{"error": "docs/a.txt does not exist"}).WithStatus(404).WithCode(2)
	fmt.Println(rep.Status, rep.Code)
	// Output: 404 2
}

// Stream sends a body of any size as it is read, here a file. The SDK
// closes the file once it is sent.
func ExampleStream() {
	getLog := func(ctx context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		f, err := os.Open("/var/log/app.log")
		if err != nil {
			return nil, err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, err
		}
		return pluginsdk.Stream("text/plain", f, fi.Size()), nil
	}
	p := pluginsdk.New("logs", "1.0.0")
	p.Handle("get", "log", getLog)
	fmt.Println(p.Routes())
	// Output: [get_log]
}

// A handler that streams the request body back, whatever its size, in
// constant memory: the reply reads the request as it goes.
func ExampleStream_echo() {
	echo := func(ctx context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		return pluginsdk.Stream(ev.ContentType, ev.Body, ev.Size), nil
	}
	rep, _ := echo(context.Background(), &pluginsdk.Event{ContentType: "text/plain", Body: strings.NewReader("ping"), Size: 4})
	b, _ := io.ReadAll(rep.Body)
	fmt.Println(rep.ContentType, string(b))
	// Output: text/plain ping
}

// An Exception chooses the class the caller sees in RestPipe's exception
// object; any other error gets its Go type as class.
func ExampleException() {
	cat := func(ctx context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		if len(ev.Args) != 2 {
			return nil, &pluginsdk.Exception{Class: "TypeError",
				Message: fmt.Sprintf("cat takes exactly 2 arguments (%d given)", len(ev.Args))}
		}
		return pluginsdk.JSON(map[string]string{"result_from_" + ev.Node.Role: ev.Args[0] + ev.Args[1]}), nil
	}
	_, err := cat(context.Background(), &pluginsdk.Event{Args: []string{"a"}})
	fmt.Println(err)
	// Output: TypeError: cat takes exactly 2 arguments (1 given)
}

// Configure receives the plugin's settings from the node (for example
// --plugin-config greeter.greeting=hi) before any event. An error keeps the
// plugin from serving, and the node reports it.
func ExamplePlugin_Configure() {
	greeting := ""
	p := pluginsdk.New("greeter", "1.0.0")
	p.Configure(func(c pluginsdk.Config) error {
		greeting = c.Get("greeting", "hello")
		if strings.TrimSpace(greeting) == "" {
			return errors.New("greeting is blank")
		}
		return nil
	})
	p.Handle("get", "greet", func(ctx context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		return pluginsdk.Text(greeting + " " + ev.Peer), nil
	})
	fmt.Println(p.Routes())
	// Output: [get_greet]
}

func ExampleConfig_Get() {
	c := pluginsdk.Config{"root": "/srv/files"}
	fmt.Println(c.Get("root", "/"), c.Get("read_only", "false"))
	// Output: /srv/files false
}

func ExampleEvent_DecodeJSON() {
	sum := func(ctx context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		var xs []float64
		if err := ev.DecodeJSON(&xs); err != nil {
			return nil, err
		}
		total := 0.0
		for _, x := range xs {
			total += x
		}
		return pluginsdk.JSON(map[string]float64{"sum": total}), nil
	}
	rep, _ := sum(context.Background(), &pluginsdk.Event{Body: strings.NewReader("[1, 2, 39]"), Size: -1})
	b, _ := io.ReadAll(rep.Body)
	fmt.Println(string(b))
	// Output: {"sum":42}
}

func ExampleEvent_ReadBody() {
	ev := &pluginsdk.Event{Body: strings.NewReader("a body of 26 bytes or more"), Size: -1}
	_, err := ev.ReadBody(10)
	fmt.Println(errors.Is(err, pluginsdk.ErrBodyTooLarge), err)
	// Output: true request body too large: over 10 bytes
}
