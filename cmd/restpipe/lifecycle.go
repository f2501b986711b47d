package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// A node's long-lived parts come in three shapes: Run(ctx) (plugins.Manager,
// link.Client), Serve(ln) with Close (link.Server, http.Server), and
// something to close (the cluster). node.run sees them in one: a service
// runs until its context ends, then stops what it started and returns.
// Services start in layers, bottom first, and stop top first, each layer
// returned before the next is told to stop: the gateway and the link stop
// before the plugins their events reach.

// service is one long-lived part of a node.
type service struct {
	name string
	// run serves until ctx ends, then stops and returns; an error before
	// ctx ends means the part failed on its own.
	run func(ctx context.Context) error
}

// serveService adapts a Serve/Close pair: serve blocks until stop is
// called (by the end of the context) and then returns closed, which is
// not a failure.
func serveService(name string, serve func() error, stop func(), closed error) service {
	return service{name: name, run: func(ctx context.Context) error {
		defer context.AfterFunc(ctx, stop)()
		if err := serve(); !errors.Is(err, closed) {
			return err
		}
		return nil
	}}
}

// closeService adapts something that is only closed: at the end of the
// context, close it.
func closeService(name string, close func()) service {
	return service{name: name, run: func(ctx context.Context) error {
		<-ctx.Done()
		close()
		return nil
	}}
}

// layers runs services in layers; see the top of this file.
type layers struct {
	parent context.Context
	failed chan error // one slot: the first failure of any service
	stack  []*layer
}

// layer is services started together and stopped together.
type layer struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	errs   []error
}

// newLayers returns an empty stack of layers whose services run under
// parent (which should not end before stop: a node's is detached from its
// caller's).
func newLayers(parent context.Context) *layers {
	return &layers{parent: parent, failed: make(chan error, 1)}
}

// start starts a layer of services above those already started.
func (l *layers) start(svcs ...service) {
	ctx, cancel := context.WithCancel(l.parent)
	ly := &layer{cancel: cancel}
	l.stack = append(l.stack, ly)
	for _, s := range svcs {
		ly.wg.Add(1)
		go func() {
			defer ly.wg.Done()
			err := s.run(ctx)
			if err == nil {
				return
			}
			err = fmt.Errorf("%s: %w", s.name, err)
			if ctx.Err() == nil {
				select {
				case l.failed <- err:
				default:
				}
			}
			ly.mu.Lock()
			ly.errs = append(ly.errs, err)
			ly.mu.Unlock()
		}()
	}
}

// failure reports the first service that failed on its own.
func (l *layers) failure() <-chan error { return l.failed }

// stop stops the layers top first, waiting for each, and returns every
// service's error joined.
func (l *layers) stop() error {
	var errs []error
	for i := len(l.stack) - 1; i >= 0; i-- {
		ly := l.stack[i]
		ly.cancel()
		ly.wg.Wait()
		errs = append(errs, ly.errs...)
	}
	l.stack = nil
	return errors.Join(errs...)
}
