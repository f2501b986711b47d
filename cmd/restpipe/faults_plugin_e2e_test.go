package main

// Fault injection on the plugin side: crash storms (faults_e2e_test.go
// says what every fault test asserts).

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/plugins"
)

// TestFaultPluginCrashStorm crashes the misbehave plugin over and over (its
// crash route exits mid-event) while events flow to it, to the time plugin
// and to the echo plugin. Each caller gets its reply, or plugin_unavailable
// (or overloaded) for misbehave's routes; the time and echo plugins never
// fail; the node restarts misbehave with backoff and then quarantines it,
// as /status shows, and the link never drops.
func TestFaultPluginCrashStorm(t *testing.T) {
	t.Parallel()
	c := startCluster(t, clusterOpts{plugins: []string{"time", "echo", "misbehave"}}, "c1")
	cl := c.clients["c1"]
	srvHTTP := c.server.httpAddr()
	call := newCaller(t, 5*time.Second, true)
	pu, ov := string(host.KindPluginUnavailable), string(host.KindOverloaded)
	flows := []struct {
		name    string
		workers int
		send    func() outcome
		allowed []string
	}{
		{"crash", 1, func() outcome { return call.send("crash", "GET", cl.url("/server/misbehave/crash"), nil, neverOK) }, []string{pu, ov}},
		{"misbehave/ok", 2, func() outcome {
			return call.send("misbehave/ok", "GET", cl.url("/server/misbehave/ok"), nil, hasKey("pid"))
		}, []string{classOK, pu, ov}},
		{"time", 2, func() outcome {
			return call.send("time", "GET", cl.url("/server/time"), nil, hasKey("time_from_server"))
		}, []string{classOK}},
		{"echo", 2, func() outcome { return call.echo("echo", cl.url("/server"), "server", "") }, []string{classOK}},
	}
	var out tally
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for _, f := range flows {
		for range f.workers {
			untilStopped(&wg, stop, func() {
				out.add(f.send())
				time.Sleep(20 * time.Millisecond) // pacing: a storm, not a busy loop
			})
		}
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopLoad)

	waitFor(t, 60*time.Second, "misbehave to be quarantined", func() bool {
		return pluginStatus(t, srvHTTP, "misbehave").State == plugins.StateQuarantined
	})
	quarantined := time.Now()
	if soak() {
		time.Sleep(30 * time.Second) // the soak: flows go on against the quarantined plugin
	}
	waitFor(t, 30*time.Second, "events in every flow after the quarantine", func() bool {
		for _, f := range flows {
			if out.count(func(o outcome) bool { return o.flow == f.name && o.start.After(quarantined) }) < 10 {
				return false
			}
		}
		return true
	})
	stopLoad()

	outs := out.all()
	noSilentLoss(t, outs)
	for _, f := range flows {
		for _, o := range outs {
			if o.flow == f.name {
				allow(t, o, "flow "+f.name+" during a crash storm", f.allowed...)
			}
		}
	}
	for _, o := range outs {
		if (o.flow == "crash" || o.flow == "misbehave/ok") && o.start.After(quarantined) && !strings.Contains(o.detail, "quarantined") {
			t.Errorf("%v: after the quarantine, want plugin_unavailable saying so", o)
		}
	}
	st := pluginStatus(t, srvHTTP, "misbehave")
	if st.State != plugins.StateQuarantined || st.Restarts < 1 || !strings.Contains(st.Error, "quarantined") {
		t.Errorf("misbehave status = %+v, want quarantined after restarts, saying why", st)
	}
	for _, name := range []string{"time", "echo"} {
		if s := pluginStatus(t, srvHTTP, name); s.State != plugins.StateRunning || s.Restarts != 0 {
			t.Errorf("%s status = %+v, want running without restarts", name, s)
		}
	}
	if logHas(cl.logs.String(), "link down") {
		t.Error("the link dropped during the plugin crash storm")
	}
	t.Logf("misbehave quarantined %v after the storm began, after %d restarts; outcomes: %s", ms(quarantined.Sub(start)), st.Restarts, summary(outs))
}
