// Command echo is restpipe's example plugin for trying a pipe out: it tells
// the caller what the event looked like when it arrived, and sends request
// bodies back.
//
//	GET /server/echo//a/b?x=1&x=2 → {"verb": "get", "noun": "echo",
//	    "args": ["a", "b"], "query": {"x": ["1", "2"]}, "content_type": "",
//	    "peer": "c1", "node": {"role": "server", "name": "server"}}
//
// "peer" is the verified name of the node that sent the event ("" for a
// caller on the same node, through /local/echo). With ?sleep=<duration>
// (a Go duration such as 1.5s), GET first waits that long, or until the
// event is canceled or its deadline passes; a bad duration fails the event
// with class ValueError.
//
// POST /server/echo and PUT /server/echo stream the request body back
// unchanged, with its content type, whatever its size.
//
// Build it and drop the binary into the node's plugins directory (--plugins):
//
//	go build -o /path/to/plugins/echo ./plugins/echo
package main

import (
	"context"
	"time"

	pluginsdk "github.com/restpipe/restpipe/plugin-sdk"
)

func main() { newPlugin().Serve() }

// newPlugin returns the plugin.
func newPlugin() *pluginsdk.Plugin {
	p := pluginsdk.New("echo", "1.0.0")
	p.Handle("get", "echo", describe)
	p.Handle("post", "echo", echoBody)
	p.Handle("put", "echo", echoBody)
	return p
}

// description is what GET /echo answers.
type description struct {
	Verb        string              `json:"verb"`
	Noun        string              `json:"noun"`
	Args        []string            `json:"args"`
	Query       map[string][]string `json:"query"`
	ContentType string              `json:"content_type"`
	Peer        string              `json:"peer"`
	Node        node                `json:"node"`
}

type node struct {
	Role string `json:"role"`
	Name string `json:"name"`
}

// describe answers with the event, after the ?sleep the caller asked for.
func describe(ctx context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
	if s := ev.QueryValue("sleep"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, &pluginsdk.Exception{Class: "ValueError", Message: "sleep: " + err.Error()}
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	d := description{
		Verb: ev.Verb, Noun: ev.Noun, Args: ev.Args, Query: ev.Query,
		ContentType: ev.ContentType, Peer: ev.Peer,
		Node: node{Role: ev.Node.Role, Name: ev.Node.Name},
	}
	if d.Args == nil {
		d.Args = []string{}
	}
	if d.Query == nil {
		d.Query = map[string][]string{}
	}
	return pluginsdk.JSON(d), nil
}

// echoBody streams the request body back as it arrives.
func echoBody(_ context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
	return pluginsdk.Stream(ev.ContentType, ev.Body, ev.Size), nil
}
