package main

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLargeUploadMemoryPerProcess streams a chunked upload through real
// processes (client node, server node, the server's echo plugin) and back,
// and reports each process's peak RSS: none may grow with the body.
func TestLargeUploadMemoryPerProcess(t *testing.T) {
	t.Parallel()
	size := largeSize()
	dir := testPKI(t, "c1")
	pluginsDir := t.TempDir()
	installPlugin(t, pluginBin("echo"), filepath.Join(pluginsDir, "echo"))
	srv, addr := startServerProc(t, dir, "127.0.0.1:0", "--plugins", pluginsDir)
	cl := startProc(t, "client", nil, append([]string{"client", "--server", addr}, identityFlags(dir, "c1")...)...)
	http := cl.waitLog(0, 10*time.Second, "listening", nil).str("http")
	cl.waitLog(0, 10*time.Second, "link up", nil)
	srvHTTP := srv.waitLog(0, 10*time.Second, "listening", nil).str("http")

	sum, back := sha256.New(), sha256.New()
	pr, pw := io.Pipe()
	go func() {
		buf := make([]byte, 256<<10)
		for i := range buf {
			buf[i] = byte(i * 13)
		}
		for sent := int64(0); sent < size; {
			n := min(int64(len(buf)), size-sent)
			sum.Write(buf[:n])
			if _, err := pw.Write(buf[:n]); err != nil {
				return
			}
			sent += n
		}
		pw.Close()
	}()
	start := time.Now()
	resp, err := httpPost("http://"+http+"/server/echo", pr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(back, resp.Body)
	resp.Body.Close()
	elapsed := time.Since(start)
	if err != nil || n != size || string(sum.Sum(nil)) != string(back.Sum(nil)) {
		t.Fatalf("echoed %d of %d bytes, err %v", n, size, err)
	}

	pluginPID := echoPID(t, srvHTTP)
	peaks := map[string]int64{
		"client node":                 peakRSS(t, cl.cmd.Process.Pid),
		"server node":                 peakRSS(t, srv.cmd.Process.Pid),
		"echo plugin (on the server)": peakRSS(t, pluginPID),
	}
	var report []string
	for name, b := range peaks {
		report = append(report, fmt.Sprintf("%s %.1f MiB", name, float64(b)/(1<<20)))
		if b > 100<<20 {
			t.Errorf("%s peak RSS %d MiB while streaming %d MiB: it grows with the body", name, b>>20, size>>20)
		}
	}
	t.Logf("%d MiB chunked upload echoed in %v; peak RSS: %s", size>>20, elapsed.Round(time.Millisecond), strings.Join(report, ", "))
}

// httpPost posts a body of unknown length (chunked).
func httpPost(url string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequest("POST", url, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	return http.DefaultClient.Do(req)
}

// echoPID reads the echo plugin's process id from a node's /status.
func echoPID(t testing.TB, httpAddr string) int {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st nodeStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Plugins {
		if p.File == "echo" && p.PID > 0 {
			return p.PID
		}
	}
	t.Fatalf("no running echo plugin in /status: %+v", st.Plugins)
	return 0
}

// peakRSS returns a process's peak resident set size (VmHWM).
func peakRSS(t testing.TB, pid int) int64 {
	t.Helper()
	v, err := procBytes(pid, "VmHWM")
	if err != nil {
		t.Fatalf("peak RSS of process %d: %v", pid, err)
	}
	return v
}
