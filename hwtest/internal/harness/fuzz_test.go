package harness

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// FuzzDecodeResponse feeds arbitrary daemon output to the response reader
// and the stat decoder: they must return an error or a value, never panic,
// and a decoded stat's optional-field lookups must not panic either.
func FuzzDecodeResponse(f *testing.F) {
	f.Add([]byte(`{"stat":{"site":1,"role":"master","content_hash":"0x1f","counters":{"drops":{"bad_crc":3}}}}` + "\n"))
	f.Add([]byte(`{"code":"unavail","error":"no master"}` + "\n"))
	f.Add([]byte(`{"commit":{"lsn":12,"perm":true}}` + "\n"))
	f.Add([]byte(`{"items":[{"key":"YQ==","value":"MQ=="}],"more":true}` + "\n"))
	f.Add([]byte(`{"event":{"type":"master","time":"2026-01-01T00:00:00Z","seq":1}}` + "\n"))
	f.Add([]byte(`{"stat":{"hash":-1,"counters":{"drops":[1,2]}}}` + "\n"))
	f.Add([]byte("not json\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(b), 16)
		resp, err := readResponse(r)
		if err != nil {
			return
		}
		if len(resp.Stat) > 0 {
			st, err := DecodeStat(resp.Stat)
			if err != nil {
				if !errors.Is(err, ErrProtocol) {
					t.Fatalf("stat decode error %v is not ErrProtocol", err)
				}
				return
			}
			st.ContentHash()
			st.DropsByReason()
		}
		if len(resp.Event) > 0 {
			var ev Event
			_ = json.Unmarshal(resp.Event, &ev)
		}
	})
}
