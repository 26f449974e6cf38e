package harness

import (
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

func TestCheckRegister(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	w := func(v string, call, ret int) RegOp {
		return RegOp{Write: true, Value: v, Call: at(call), Return: at(ret)}
	}
	r := func(v string, call, ret int) RegOp { return RegOp{Value: v, Call: at(call), Return: at(ret)} }
	lost := func(v string, call int) RegOp { return RegOp{Write: true, Value: v, Call: at(call), Unknown: true} }
	cases := []struct {
		name string
		ops  []RegOp
		want porcupine.CheckResult
	}{
		{"sequential", []RegOp{r("", 0, 1), w("a", 2, 3), r("a", 4, 5), w("b", 6, 7), r("b", 8, 9)}, porcupine.Ok},
		{"concurrent read may see either", []RegOp{w("a", 0, 1), w("b", 2, 10), r("a", 3, 4), r("b", 5, 6)}, porcupine.Ok},
		{"stale read after a completed write", []RegOp{w("a", 0, 1), w("b", 2, 3), r("a", 4, 5)}, porcupine.Illegal},
		{"read goes back in time", []RegOp{w("a", 0, 1), w("b", 2, 10), r("b", 3, 4), r("a", 5, 6)}, porcupine.Illegal},
		{"rolled-back write never seen", []RegOp{w("a", 0, 1), lost("x", 2), r("a", 5, 6), w("b", 7, 8), r("b", 9, 10)}, porcupine.Ok},
		{"unknown write seen, then kept", []RegOp{w("a", 0, 1), lost("x", 2), r("x", 5, 6), r("x", 7, 8)}, porcupine.Ok},
		{"unknown write seen, then vanished", []RegOp{w("a", 0, 1), lost("x", 2), r("x", 5, 6), r("a", 7, 8)}, porcupine.Illegal},
		{"value never written", []RegOp{w("a", 0, 1), r("z", 2, 3)}, porcupine.Illegal},
	}
	for _, c := range cases {
		got, err := CheckRegister(c.ops, 10*time.Second)
		if err != nil || got != c.want {
			t.Errorf("%s: %v %v, want %v", c.name, got, err, c.want)
		}
	}
	if _, err := CheckRegister([]RegOp{{Value: "a", Call: at(0), Unknown: true}}, time.Second); err == nil {
		t.Error("an Unknown read was accepted")
	}
	if _, err := CheckRegister([]RegOp{{Write: true, Value: "a", Call: at(5), Return: at(1)}}, time.Second); err == nil {
		t.Error("an op returning before its call was accepted")
	}
}

func TestExplainRegister(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	w := func(v string, call, ret int) RegOp {
		return RegOp{Write: true, Value: v, Call: at(call), Return: at(ret), Site: 1}
	}
	r := func(v string, call, ret int, site uint16) RegOp {
		return RegOp{Value: v, Call: at(call), Return: at(ret), Site: site}
	}
	lost := RegOp{Write: true, Value: "x", Call: at(4), Unknown: true, Site: 1}
	clean := []RegOp{w("a", 0, 1), r("a", 2, 3, 1), w("b", 4, 5), r("b", 6, 7, 2)}
	if got := ExplainRegister(clean, 3); len(got) != 0 {
		t.Fatalf("clean history explained as %v", got)
	}
	cases := map[string][]RegOp{
		"stale":       {w("a", 0, 1), w("b", 2, 3), r("a", 4, 5, 2)},
		"never":       {w("a", 0, 1), r("z", 2, 3, 1)},
		"future":      {r("a", 0, 1, 1), w("a", 2, 3)},
		"rolled back": {w("a", 0, 1), lost, r("x", 5, 6, 1), r("a", 7, 8, 2)},
	}
	for name, ops := range cases {
		if got := ExplainRegister(ops, 3); len(got) == 0 {
			t.Errorf("%s: no explanation", name)
		}
		if res, err := CheckRegister(ops, 10*time.Second); err != nil || res != porcupine.Illegal {
			t.Errorf("%s: CheckRegister = %v %v, want Illegal", name, res, err)
		}
	}
}
