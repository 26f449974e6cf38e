package main

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"
)

// FuzzRequest feeds arbitrary request lines to the server's decoder and
// dispatcher: every line gets a well-formed response, never a panic.
func FuzzRequest(f *testing.F) {
	f.Add([]byte(`{"op":"get","db":"kv","key":"aw=="}`))
	f.Add([]byte(`{"op":"put","db":"kv","key":"aw==","value":"dg=="}`))
	f.Add([]byte(`{"op":"scan","db":"kv","prefix":"aw==","limit":-5}`))
	f.Add([]byte(`{"op":"del","db":"","key":""}`))
	f.Add([]byte(`{"op":"stat","timeout_ms":-1}`))
	f.Add([]byte(`{not json`))
	f.Fuzz(func(t *testing.T, line []byte) {
		s := &server{be: newFake()}
		var req request
		var resp response
		if err := json.Unmarshal(line, &req); err != nil {
			resp = errResponse(err)
		} else if req.Op == "events" {
			return
		} else {
			resp = s.handle(req)
		}
		out, err := json.Marshal(resp)
		if err != nil {
			t.Fatalf("response does not encode: %v", err)
		}
		var back response
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("response does not decode: %v", err)
		}
	})
}

func TestReadLineBounded(t *testing.T) {
	long := strings.Repeat("x", maxLine+10) + "\n"
	if _, err := readLine(bufio.NewReaderSize(strings.NewReader(long), 16)); err == nil {
		t.Fatal("line above maxLine accepted")
	}
	got, err := readLine(bufio.NewReaderSize(strings.NewReader("abc\ndef\n"), 16))
	if err != nil || string(got) != "abc\n" {
		t.Fatalf("got %q, %v", got, err)
	}
}
