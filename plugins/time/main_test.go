package main

import (
	"encoding/json"
	"math"
	"slices"
	"testing"
	"time"

	pluginsdk "github.com/restpipe/restpipe/plugin-sdk"
	"github.com/restpipe/restpipe/plugin-sdk/pluginsdktest"
)

// fixed is the time the tests' clock shows.
var fixed = time.Date(2026, 1, 1, 0, 0, 0, 123456789, time.UTC)

func TestRoutes(t *testing.T) {
	h := pluginsdktest.Start(t, newPlugin(time.Now), pluginsdktest.Options{})
	d := h.Describe()
	if want := []string{"get_time", "get_time_utc"}; d.Name != "time" || !slices.Equal(d.Routes, want) || d.Error != "" {
		t.Errorf("Describe() = %+v, want name time, routes %q, no error", d, want)
	}
}

func TestTime(t *testing.T) {
	for _, role := range []string{"server", "client"} {
		t.Run(role, func(t *testing.T) {
			h := pluginsdktest.Start(t, newPlugin(func() time.Time { return fixed }),
				pluginsdktest.Options{Node: pluginsdk.Node{Role: role, Name: "n1"}})
			got := decode[map[string]float64](t, h.Get(t, "time"))
			want := float64(fixed.UnixNano()) / 1e9
			if len(got) != 1 || math.Abs(got["time_from_"+role]-want) > 1e-6 {
				t.Errorf("get_time = %v, want {time_from_%s: %f}", got, role, want)
			}
		})
	}
}

func TestTimeIsNow(t *testing.T) {
	h := pluginsdktest.Start(t, newPlugin(time.Now), pluginsdktest.Options{})
	before := float64(time.Now().UnixNano()) / 1e9
	got := decode[map[string]float64](t, h.Get(t, "time"))["time_from_server"]
	after := float64(time.Now().UnixNano()) / 1e9
	if got < before-1e-6 || got > after+1e-6 {
		t.Errorf("get_time = %f, want between %f and %f", got, before, after)
	}
}

func TestTimeUTC(t *testing.T) {
	for _, role := range []string{"server", "client"} {
		t.Run(role, func(t *testing.T) {
			// A clock in another zone: the answer is still in UTC.
			now := fixed.In(time.FixedZone("UTC+2", 2*3600))
			h := pluginsdktest.Start(t, newPlugin(func() time.Time { return now }),
				pluginsdktest.Options{Node: pluginsdk.Node{Role: role, Name: "n1"}})
			got := decode[map[string]string](t, h.Get(t, "time/utc"))
			want := map[string]string{"utc_from_" + role: "2026-01-01T00:00:00.123456789Z"}
			if len(got) != 1 || got["utc_from_"+role] != want["utc_from_"+role] {
				t.Errorf("get_time_utc = %v, want %v", got, want)
			}
		})
	}
}

func TestTimeUTCParses(t *testing.T) {
	// Whole seconds keep their nine zeros, and the string is RFC 3339.
	h := pluginsdktest.Start(t, newPlugin(func() time.Time { return fixed.Truncate(time.Second) }), pluginsdktest.Options{})
	s := decode[map[string]string](t, h.Get(t, "time/utc"))["utc_from_server"]
	if s != "2026-01-01T00:00:00.000000000Z" {
		t.Errorf("get_time_utc = %q, want 2026-01-01T00:00:00.000000000Z", s)
	}
	if got, err := time.Parse(time.RFC3339Nano, s); err != nil || !got.Equal(fixed.Truncate(time.Second)) {
		t.Errorf("time.Parse(RFC3339Nano, %q) = %v, %v, want %v", s, got, err, fixed.Truncate(time.Second))
	}
}

// decode checks that resp is a JSON reply and decodes it.
func decode[T any](t testing.TB, resp *pluginsdktest.Response) T {
	t.Helper()
	var v T
	if resp.Exception != nil {
		t.Fatalf("handler failed: %v", resp.Exception)
	}
	if resp.ContentType != "application/json" {
		t.Errorf("content type = %q, want application/json", resp.ContentType)
	}
	if err := json.Unmarshal(resp.Body, &v); err != nil {
		t.Fatalf("json.Unmarshal(%s) = %v", resp.Body, err)
	}
	return v
}
