package drain

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestCounterDrainsWhenTheLastLeaves(t *testing.T) {
	var c Counter
	for want := 1; want <= 2; want++ {
		if n, ok := c.Enter(); !ok || n != want {
			t.Fatalf("Enter = %d, %v; want %d, true", n, ok, want)
		}
	}
	c.Drain()
	if _, ok := c.Enter(); ok {
		t.Fatal("Enter on a draining counter succeeded")
	}
	if c.InFlight() != 2 {
		t.Fatalf("InFlight = %d after a refused Enter, want 2", c.InFlight())
	}
	idle := c.Idle()
	c.Leave()
	if closed(idle) {
		t.Fatal("idle with one piece of work in flight")
	}
	c.Leave()
	if !closed(idle) {
		t.Fatal("not idle once the last piece of work left")
	}
	if !closed(c.Idle()) {
		t.Fatal("a second Idle is not closed")
	}
}

func TestCounterIdleAtOnceWhenNothingIsInFlight(t *testing.T) {
	var c Counter
	if closed(c.Idle()) {
		t.Fatal("idle before the drain began")
	}
	c.Drain()
	if !closed(c.Idle()) {
		t.Fatal("a drained counter with nothing in flight is not idle")
	}
}

// TestCountersFollowAGate: counters made before and after a gate closes
// refuse work, and each goes idle on its own.
func TestCountersFollowAGate(t *testing.T) {
	var g Gate
	a := &Counter{Gate: &g}
	if _, ok := a.Enter(); !ok {
		t.Fatal("Enter refused before the gate closed")
	}
	g.Close()
	b := &Counter{Gate: &g}
	if _, ok := b.Enter(); ok {
		t.Fatal("a counter following a closed gate took work")
	}
	if !a.Draining() || !b.Draining() {
		t.Fatal("counters following a closed gate do not say they drain")
	}
	if !closed(b.Idle()) {
		t.Fatal("b is not idle")
	}
	ia := a.Idle()
	if closed(ia) {
		t.Fatal("a is idle with work in flight")
	}
	a.Leave()
	if !closed(ia) {
		t.Fatal("a is not idle once its work left")
	}
}

// TestCounterRace drains a counter while goroutines enter and leave: when
// Idle is closed no piece of work is running, and none enters after.
func TestCounterRace(t *testing.T) {
	for range 20 {
		var c Counter
		var running, entered, late atomic.Int64
		var idle atomic.Bool
		warm := make(chan struct{})
		var once sync.Once
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, ok := c.Enter(); !ok {
						continue
					}
					if idle.Load() {
						late.Add(1)
					}
					running.Add(1)
					if entered.Add(1) == 1000 {
						once.Do(func() { close(warm) })
					}
					running.Add(-1)
					c.Leave()
				}
			}()
		}
		<-warm // the workers are entering and leaving
		c.Drain()
		select {
		case <-c.Idle():
			idle.Store(true)
		case <-time.After(10 * time.Second):
			t.Fatalf("not idle 10s after the drain, %d in flight", c.InFlight())
		}
		n := running.Load()
		close(stop)
		wg.Wait()
		if n != 0 || late.Load() != 0 {
			t.Fatalf("when the counter said idle: %d pieces of work running; %d entered after", n, late.Load())
		}
	}
}
