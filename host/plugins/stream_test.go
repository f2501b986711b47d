package plugins

import (
	"bufio"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
)

// streamSize is the body streamed by TestLargeBodyMemoryStaysFlat: 1 GiB
// (128 MiB under the race detector), or RESTPIPE_STREAM_BYTES.
func streamSize(t testing.TB) int64 {
	if s := os.Getenv("RESTPIPE_STREAM_BYTES"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("RESTPIPE_STREAM_BYTES: %v", err)
		}
		return n
	}
	if raceEnabled {
		return 128 << 20
	}
	return 1 << 30
}

// patternReader yields n bytes of a repeating, non-trivial pattern.
type patternReader struct{ left int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	for i := range p {
		p[i] = byte(r.left-int64(i)) ^ 0x5a
	}
	r.left -= int64(len(p))
	return len(p), nil
}

// TestLargeBodyMemoryStaysFlat streams a body through the echo plugin and
// back, and checks that neither this process (the node's side) nor the
// plugin process holds more than a few MiB of it at any time.
func TestLargeBodyMemoryStaysFlat(t *testing.T) {
	size := streamSize(t)
	e := newEnv(t, nil)
	e.install(bin("echo"), "echo")
	e.start()
	st := e.waitState("echo", StateRunning, 5*time.Second)

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peakHeap atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // sample this process's heap while the body streams
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peakHeap.Load() {
					peakHeap.Store(ms.HeapInuse)
				}
			}
		}
	}()

	in := sha256.New()
	body := io.TeeReader(&patternReader{left: size}, in)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := e.table.Handle(ctx, &host.Event{Verb: "post", Noun: "echo", Body: body, Size: -1, ContentType: "application/octet-stream"})
	if err != nil {
		t.Fatal(err)
	}
	out := sha256.New()
	n, err := io.Copy(out, rep.Body)
	rep.Close()
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil || n != size {
		t.Fatalf("echoed %d bytes, %v; want %d", n, err, size)
	}
	if string(in.Sum(nil)) != string(out.Sum(nil)) {
		t.Fatal("the echoed body differs")
	}
	pluginPeak := vmHWM(t, st.PID)
	growth := int64(peakHeap.Load()) - int64(base.HeapInuse)
	t.Logf("%d MiB echoed in %v (%.0f MB/s each way); node heap growth at peak %.1f MiB; plugin peak RSS %.1f MiB",
		size>>20, elapsed.Round(time.Millisecond), float64(size)/elapsed.Seconds()/1e6, float64(growth)/(1<<20), float64(pluginPeak)/(1<<20))
	if growth > 32<<20 {
		t.Errorf("node heap grew by %d MiB while streaming, want under 32 MiB", growth>>20)
	}
	if pluginPeak > 64<<20 {
		t.Errorf("plugin peak RSS %d MiB, want under 64 MiB", pluginPeak>>20)
	}
}

// vmHWM returns a process's peak resident set size, from /proc.
func vmHWM(t testing.TB, pid int) int64 {
	t.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Skipf("no /proc on this system: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM of process %d: %v", pid, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}
