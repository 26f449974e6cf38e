package board

import (
	"bytes"
	"testing"
)

func TestAppRequestRoundTrip(t *testing.T) {
	ops := []Op{Put("routes", []byte("10.0.0.0/8"), []byte("eth1")), Delete("arp", []byte("k")), Put("x", nil, nil)}
	b, err := encodeAppRequest(nil, 42, ops)
	if err != nil {
		t.Fatal(err)
	}
	id, got, err := decodeAppRequest(b)
	if err != nil || id != 42 || len(got) != len(ops) {
		t.Fatalf("decode: id=%d n=%d err=%v", id, len(got), err)
	}
	for i := range ops {
		if got[i].Kind != ops[i].Kind || got[i].DB != ops[i].DB || !bytes.Equal(got[i].Key, ops[i].Key) || !bytes.Equal(got[i].Value, ops[i].Value) {
			t.Fatalf("op %d: got %+v want %+v", i, got[i], ops[i])
		}
	}
	for n := 0; n < len(b); n++ {
		if _, _, err := decodeAppRequest(b[:n]); err == nil {
			t.Fatalf("truncated request of %d/%d bytes accepted", n, len(b))
		}
	}
	if _, err := encodeAppRequest(nil, 1, nil); err == nil {
		t.Fatal("empty op list accepted")
	}
	if _, err := encodeAppRequest(nil, 1, []Op{{Kind: 9, DB: "x"}}); err == nil {
		t.Fatal("unknown op kind accepted")
	}
	if _, err := encodeAppRequest(nil, 1, []Op{Put("", nil, nil)}); err == nil {
		t.Fatal("empty database name accepted")
	}
}

func TestAppReplyRoundTrip(t *testing.T) {
	r := appReplyMsg{id: 7, lsn: 1 << 40, perm: true, code: replyLockout, msg: "locked"}
	b := encodeAppReply(nil, r)
	got, err := decodeAppReply(b)
	if err != nil || got != r {
		t.Fatalf("got %+v, %v; want %+v", got, err, r)
	}
	if _, err := decodeAppReply(b[:len(b)-1]); err == nil {
		t.Fatal("truncated reply accepted")
	}
}

func FuzzDecodeAppRequest(f *testing.F) {
	seed, _ := encodeAppRequest(nil, 1, []Op{Put("db", []byte("k"), []byte("v")), Delete("db", []byte("k"))})
	f.Add(seed)
	f.Add([]byte{appRequest})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, ops, err := decodeAppRequest(b)
		if err != nil {
			return
		}
		re, err := encodeAppRequest(nil, id, ops)
		if err != nil {
			t.Fatalf("decoded request does not re-encode: %v", err)
		}
		if !bytes.Equal(re, b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func FuzzDecodeAppReply(f *testing.F) {
	f.Add(encodeAppReply(nil, appReplyMsg{id: 3, lsn: 99, perm: true, msg: "ok"}))
	f.Add([]byte{appReply, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeAppReply(b)
		if err != nil {
			return
		}
		if r.perm && b[17] != 1 {
			t.Fatalf("perm decoded from byte %d", b[17])
		}
		if len(r.msg) != len(b)-21 {
			t.Fatalf("message length %d from %d bytes", len(r.msg), len(b))
		}
	})
}
