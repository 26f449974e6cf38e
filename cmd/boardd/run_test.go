package main

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/board"
)

func TestRunConfigFileAndFlags(t *testing.T) {
	path := filepath.Join(t.TempDir(), "board.json")
	file := `{"site": 2, "group": "fib", "peers": {"1": "127.0.0.1:7001", "2": "127.0.0.1:7002"},
		"priority": 50, "ack": "all", "heartbeat_send": "4ms", "log_size": "2M", "shm": "private"}`
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	fc, err := loadRunConfig([]string{"-config", path, "-priority", "7", "-heartbeat-monitor", "40ms"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c, err := fc.boardConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Site != 2 || c.Group != "fib" || len(c.Peers) != 2 || c.Peers[1] != "127.0.0.1:7001" {
		t.Fatalf("file values lost: %+v", c)
	}
	if c.Priority != 7 || c.HeartbeatMonitor != 40*time.Millisecond {
		t.Fatalf("flags did not override: priority %d monitor %v", c.Priority, c.HeartbeatMonitor)
	}
	if c.AckPolicy != board.AckAll || c.HeartbeatSend != 4*time.Millisecond || c.LogSize != 2<<20 || c.ShmName != "" {
		t.Fatalf("file settings not applied: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	// Unknown fields are mistakes, not silently ignored.
	os.WriteFile(path, []byte(`{"sight": 2}`), 0o600)
	if _, err := loadRunConfig([]string{"-config", path}, io.Discard); err == nil {
		t.Fatal("unknown config field accepted")
	}
	// The default region name follows group and site.
	fc.Shm = ""
	if c, _ = fc.boardConfig(nil); c.ShmName != "boardha-fib-2" {
		t.Fatalf("default ShmName %q", c.ShmName)
	}
}

// TestRunRxThread: a raw board receives on a thread of its own unless told
// not to, by flag or by file.
func TestRunRxThread(t *testing.T) {
	transport := func(args ...string) string {
		t.Helper()
		fc, err := loadRunConfig(append([]string{"-site", "1", "-peers", "1,2", "-transport", "raw", "-iface", "bp0"}, args...), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		c, err := fc.boardConfig(nil)
		if err != nil {
			t.Fatal(err)
		}
		return c.Transport.String()
	}
	if got, want := transport(), board.RawTransport("bp0").ReceiveInThread().String(); got != want {
		t.Fatalf("default transport %s, want %s", got, want)
	}
	if got, want := transport("-rx-thread=false"), board.RawTransport("bp0").String(); got != want {
		t.Fatalf("-rx-thread=false: transport %s, want %s", got, want)
	}
	path := filepath.Join(t.TempDir(), "board.json")
	if err := os.WriteFile(path, []byte(`{"rx_thread": false}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, want := transport("-config", path), board.RawTransport("bp0").String(); got != want {
		t.Fatalf(`"rx_thread": false: transport %s, want %s`, got, want)
	}
}

// TestRunDurationsOrOff: -pace and -reader-hold-warn take a duration or
// off (the board's negative setting), and refuse a negative one.
func TestRunDurationsOrOff(t *testing.T) {
	for _, f := range []struct {
		flag string
		get  func(board.Config) time.Duration
	}{
		{"-pace", func(c board.Config) time.Duration { return c.Pace }},
		{"-reader-hold-warn", func(c board.Config) time.Duration { return c.ReaderHoldWarn }},
	} {
		parse := func(args ...string) (time.Duration, error) {
			t.Helper()
			fc, err := loadRunConfig(append([]string{"-site", "1", "-peers", "1,2", "-transport", "raw", "-iface", "bp0"}, args...), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			c, err := fc.boardConfig(nil)
			return f.get(c), err
		}
		for _, tc := range []struct {
			args []string
			want time.Duration
		}{{nil, 0}, {[]string{f.flag, "1500ms"}, 1500 * time.Millisecond}, {[]string{f.flag, "off"}, -1}} {
			if got, err := parse(tc.args...); err != nil || got != tc.want {
				t.Errorf("%v: %v, %v; want %v", tc.args, got, err, tc.want)
			}
		}
		if _, err := parse(f.flag, "-1ms"); err == nil {
			t.Errorf("%s -1ms accepted", f.flag)
		}
	}
}
