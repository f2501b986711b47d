package plugins

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/plugin-sdk/eventpath"
)

// This file sends events to a plugin process over its event socket
// (plugin-sdk/eventpath), and turns what comes back into host's
// vocabulary.

// handle sends ev to the plugin. The caller has acquired the instance;
// handle releases it when the event ends (on error, or when the reply body
// is closed).
func (in *instance) handle(ctx context.Context, ev *host.Event) (*host.Reply, error) {
	rep, err := in.events.Do(ctx, headerFromEvent(ev), ev.Body, ev.Size)
	if err != nil {
		in.release()
		return nil, in.eventError(ctx, err)
	}
	h := rep.Header
	if f := h.Failure; f != nil {
		rep.Close()
		in.release()
		switch h.Refused {
		case eventpath.RefusedNoRoute:
			return nil, host.Errorf(host.KindNoRoute, "%s", f.Message)
		case "":
			return nil, failureError(f, in.debug)
		default:
			return nil, host.Errorf(host.KindPluginUnavailable, "%s", f.Message)
		}
	}
	if err := host.CheckStatus(int(h.Status)); err != nil {
		rep.Close()
		in.release()
		in.observer.BadReply(in.file)
		return nil, host.Errorf(host.KindHandlerFailed, "plugin %s answered with a bad reply: %v", in.file, err)
	}
	r := &host.Reply{Status: int(h.Status), Code: int(h.ReturnCode), ContentType: h.ContentType, Size: max(h.BodySize, -1)}
	if h.BodySize == 0 {
		rep.Close()
		in.release()
		return r, nil
	}
	r.Body = &replyBody{in: in, ctx: ctx, rep: rep}
	return r, nil
}

// replyBody is a plugin's reply body; closing it ends the event.
type replyBody struct {
	in   *instance
	ctx  context.Context
	rep  *eventpath.Reply
	done bool
}

func (b *replyBody) Read(p []byte) (int, error) {
	n, err := b.rep.Read(p)
	if err != nil && err != io.EOF {
		err = b.in.eventError(b.ctx, err)
	}
	return n, err
}

func (b *replyBody) Close() error {
	if !b.done {
		b.done = true
		b.rep.Close()
		b.in.release()
	}
	return nil
}

// eventError turns a failure of the event path into an *host.Error.
func (in *instance) eventError(ctx context.Context, err error) error {
	var he *host.Error
	if errors.As(err, &he) {
		return he
	}
	if ctx.Err() != nil {
		return host.AsError(context.Cause(ctx))
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return host.AsError(err) // the deadline passed, its timer not fired yet
	}
	var be *eventpath.BodyError
	if errors.As(err, &be) {
		return host.Errorf(host.KindHandlerFailed, "plugin %s could not finish its reply: %s", in.file, be.Message)
	}
	return &host.Error{Kind: host.KindPluginUnavailable, Err: err,
		Message: fmt.Sprintf("plugin %s failed during the event (it crashed or closed the connection): %v", in.file, err)}
}
