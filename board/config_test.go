package board

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func validUDP() Config {
	return Config{Site: 1, Group: "fib", Priority: 100,
		Peers:     map[uint16]string{1: "127.0.0.1:7001", 2: "127.0.0.1:7002"},
		Transport: UDPTransport("")}
}

func TestConfigDefaults(t *testing.T) {
	c, err := validUDP().validated()
	if err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	if c.AckPolicy != AckQuorum || c.HeartbeatSend != DefaultHeartbeatSend ||
		c.HeartbeatMonitor != DefaultHeartbeatMonitor || c.ElectionTimeout != DefaultElectionTimeout ||
		c.AckTimeout != DefaultAckTimeout || c.PoolSize != DefaultPoolSize || c.LogSize != DefaultLogSize ||
		c.CheckpointKiB != DefaultCheckpointKiB || c.PageSize != DefaultPageSize || c.EventBuffer != DefaultEventBuffer ||
		c.Pace != DefaultPace || c.ReaderHoldWarn != DefaultReaderHoldWarn {
		t.Fatalf("defaults not applied: %+v", c)
	}
	// A short monitor shortens the pace, and one too short for any rest
	// turns pacing off.
	for _, tc := range []struct{ send, monitor, pace time.Duration }{
		{time.Millisecond, 2 * time.Millisecond, 500 * time.Microsecond},
		{100 * time.Microsecond, 200 * time.Microsecond, -1},
	} {
		c3 := validUDP()
		c3.HeartbeatSend, c3.HeartbeatMonitor = tc.send, tc.monitor
		if c3, err = c3.validated(); err != nil || c3.Pace != tc.pace {
			t.Errorf("monitor %v: Pace %v, %v; want %v", tc.monitor, c3.Pace, err, tc.pace)
		}
	}
	// A small log gets a checkpoint interval that fits in it.
	c2 := validUDP()
	c2.LogSize = 1 << 20
	if c2, err = c2.validated(); err != nil || c2.CheckpointKiB > c2.LogSize/2048 {
		t.Fatalf("small log: CheckpointKiB=%d err=%v", c2.CheckpointKiB, err)
	}
}

func TestConfigRejects(t *testing.T) {
	cases := []struct {
		field string
		mod   func(*Config)
	}{
		{"Site", func(c *Config) { c.Site = 0 }},
		{"Site", func(c *Config) { c.Site = 0xFFFF }},
		{"Group", func(c *Config) { c.Group = "" }},
		{"Group", func(c *Config) { c.Group = "a/b" }},
		{"Group", func(c *Config) { c.Group = strings.Repeat("x", 65) }},
		{"Peers", func(c *Config) { c.Peers[0] = "127.0.0.1:1" }},
		{"Transport", func(c *Config) { c.Transport = Transport{} }},
		{"Transport", func(c *Config) { c.Transport = RawTransport("") }},
		{"Transport", func(c *Config) { c.Peers[2] = "nonsense" }},
		{"Transport", func(c *Config) { delete(c.Peers, 1) }},
		{"AckPolicy", func(c *Config) { c.AckPolicy = 99 }},
		{"AckTimeout", func(c *Config) { c.AckTimeout = -time.Second }},
		{"AckTimeout", func(c *Config) { c.AckTimeout = time.Hour }},
		{"HeartbeatSend", func(c *Config) { c.HeartbeatSend = time.Microsecond }},
		{"HeartbeatMonitor", func(c *Config) { c.HeartbeatSend = 5 * time.Millisecond; c.HeartbeatMonitor = 5 * time.Millisecond }},
		{"ElectionTimeout", func(c *Config) { c.ElectionTimeout = -1 }},
		{"ElectionBackoffMax", func(c *Config) { c.ElectionTimeout = time.Second; c.ElectionBackoffMax = time.Millisecond }},
		{"LeaseTimeout", func(c *Config) {
			c.Leases = true
			c.LeaseTimeout = time.Millisecond
			c.HeartbeatSend = 2 * time.Millisecond
		}},
		{"ClockSkew", func(c *Config) { c.ClockSkew = 0.5 }},
		{"Pace", func(c *Config) { c.Pace = 50 * time.Microsecond }},
		{"Pace", func(c *Config) { c.Pace = 5 * time.Millisecond }}, // above the default monitor's quarter
		{"ClockSkew", func(c *Config) { c.ClockSkew = 3 }},
		{"LogSize", func(c *Config) { c.LogSize = 1000 }},
		{"CheckpointKiB", func(c *Config) { c.LogSize = 1 << 20; c.CheckpointKiB = 1024 }},
		{"CheckpointKiB", func(c *Config) { c.CheckpointKiB = -1 }},
		{"PageSize", func(c *Config) { c.PageSize = 3000 }},
		{"PageSize", func(c *Config) { c.PageSize = 1 << 20 }},
		{"PoolSize", func(c *Config) { c.PoolSize = 4096 }},
		{"ShmName", func(c *Config) { c.ShmName = "../etc" }},
		{"EventBuffer", func(c *Config) { c.EventBuffer = -3 }},
		{"ReaderHoldWarn", func(c *Config) { c.ReaderHoldWarn = 500 * time.Millisecond }},
		{"ReaderHoldWarn", func(c *Config) { c.ReaderHoldWarn = 25 * time.Hour }},
		{"MaxMessageBytes", func(c *Config) { c.MaxMessageBytes = 100 }},
	}
	for _, tc := range cases {
		c := validUDP()
		tc.mod(&c)
		err := c.Validate()
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: want ErrInvalidConfig, got %v", tc.field, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.field+" ") || !strings.Contains(err.Error(), "allowed") && !strings.Contains(err.Error(), "must") && !strings.Contains(err.Error(), "use ") {
			t.Errorf("%s: message does not name the field and its range: %v", tc.field, err)
		}
	}
}

func TestParseAckPolicy(t *testing.T) {
	for p := AckNone; p <= AckAll; p++ {
		got, err := ParseAckPolicy(strings.ToUpper(p.String()))
		if err != nil || got != p {
			t.Fatalf("%v: got %v, %v", p, got, err)
		}
	}
	if _, err := ParseAckPolicy("most"); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("unknown policy accepted: %v", err)
	}
}

func TestEventQueueDropsOldest(t *testing.T) {
	q := newEventQueue(2)
	for i := 0; i < 5; i++ {
		q.push(Event{Type: EventNewMaster})
	}
	if d := q.dropped.Load(); d != 3 {
		t.Fatalf("dropped %d, want 3", d)
	}
	if e := <-q.ch; e.Seq != 4 {
		t.Fatalf("oldest kept seq %d, want 4", e.Seq)
	}
	if e := <-q.ch; e.Seq != 5 {
		t.Fatalf("newest seq %d, want 5", e.Seq)
	}
}
