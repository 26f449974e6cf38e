package harness

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

// RegOp is one operation on a single key used as a register: a write, or a
// successful authoritative read.
type RegOp struct {
	Write  bool
	Value  string // written, or read ("" = key absent)
	Call   time.Time
	Return time.Time
	// Unknown marks a write whose effect is not known (it failed, or it
	// returned without Perm and may have been rolled back): it may take
	// effect at any point after Call, or never.
	Unknown bool
	Site    uint16 // where it was served, for messages
}

// registerModel is a single register; the state is its value.
var registerModel = porcupine.Model{
	Init: func() interface{} { return "" },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		in := input.(regInput)
		if in.write {
			return true, in.value
		}
		return output.(string) == state.(string), state
	},
	DescribeOperation: func(input, output interface{}) string {
		in := input.(regInput)
		if in.write {
			return fmt.Sprintf("write(%q)", in.value)
		}
		return fmt.Sprintf("read() -> %q", output)
	},
}

type regInput struct {
	write bool
	value string
}

// CheckRegister reports whether the operations are linearizable as a
// single register: every read returns the latest write that a single
// total order consistent with real time allows (guarantee 3 for leased
// reads). An Unknown write may be ordered anywhere after its call, which
// includes "after everything", i.e. never. The result is porcupine.Unknown
// if the check ran out of time.
func CheckRegister(ops []RegOp, timeout time.Duration) (porcupine.CheckResult, error) {
	if len(ops) == 0 {
		return porcupine.Ok, nil
	}
	origin := ops[0].Call
	for _, op := range ops {
		if op.Call.Before(origin) {
			origin = op.Call
		}
	}
	hist := make([]porcupine.Operation, 0, len(ops))
	for i, op := range ops {
		if !op.Write && op.Unknown {
			return "", fmt.Errorf("harness: register op %d: a read cannot be Unknown; leave failed reads out", i)
		}
		ret := int64(op.Return.Sub(origin))
		if op.Unknown {
			ret = math.MaxInt64
		}
		if ret < int64(op.Call.Sub(origin)) {
			return "", fmt.Errorf("harness: register op %d returns before its call", i)
		}
		o := porcupine.Operation{ClientId: i, Input: regInput{write: op.Write, value: op.Value},
			Call: int64(op.Call.Sub(origin)), Return: ret}
		if !op.Write {
			o.Output = op.Value
		}
		hist = append(hist, o)
	}
	sort.SliceStable(hist, func(i, j int) bool { return hist[i].Call < hist[j].Call })
	return porcupine.CheckOperationsTimeout(registerModel, hist, timeout), nil
}

// ExplainRegister names up to n reads that a simple rule shows stale: the
// read returned a value although a later write (one that started after the
// value's write had returned) had completed, known, before the read began;
// or the value was never written. It explains an Illegal CheckRegister
// result in terms a person can check against the logs; it does not find
// every kind of violation.
func ExplainRegister(ops []RegOp, n int) []string {
	writes := map[string]RegOp{}
	for _, op := range ops {
		if op.Write {
			writes[op.Value] = op
		}
	}
	var out []string
	for _, r := range ops {
		if r.Write || len(out) >= n {
			continue
		}
		src, ok := writes[r.Value]
		if !ok && r.Value != "" {
			out = append(out, fmt.Sprintf("read on site %d at %s returned %q, never written", r.Site, r.Call.Format("15:04:05.000000"), r.Value))
			continue
		}
		if ok && src.Call.After(r.Return) {
			out = append(out, fmt.Sprintf("read on site %d [%s, %s] returned %q, whose write only started at %s",
				r.Site, r.Call.Format("15:04:05.000000"), r.Return.Format("15:04:05.000000"), r.Value, src.Call.Format("15:04:05.000000")))
			continue
		}
		// A read after this one that returns an older value (one whose
		// write returned before this value's write began).
		for _, r2 := range ops {
			if r2.Write || !r2.Call.After(r.Return) || r2.Value == r.Value || len(out) >= n {
				continue
			}
			old, ok2 := writes[r2.Value]
			if ok && (r2.Value == "" || ok2 && !old.Unknown && old.Return.Before(src.Call)) {
				out = append(out, fmt.Sprintf("read on site %d [%s, %s] returned %q (its write via site %d %s), then a later read on site %d [%s, %s] returned the older %q (its write via site %d %s)",
					r.Site, r.Call.Format("15:04:05.000000"), r.Return.Format("15:04:05.000000"), r.Value, src.Site, describeWrite(src),
					r2.Site, r2.Call.Format("15:04:05.000000"), r2.Return.Format("15:04:05.000000"), r2.Value, old.Site, describeWrite(old)))
				break
			}
		}
		for _, w := range ops {
			if !w.Write || w.Unknown || w.Value == r.Value || !w.Return.Before(r.Call) {
				continue
			}
			if !ok || w.Call.After(src.Return) {
				out = append(out, fmt.Sprintf("read on site %d [%s, %s] returned %q (written via %d [%s, %s]) after write %q via %d [%s, %s] had completed with Perm",
					r.Site, r.Call.Format("15:04:05.000000"), r.Return.Format("15:04:05.000000"), r.Value,
					src.Site, src.Call.Format("15:04:05.000000"), src.Return.Format("15:04:05.000000"),
					w.Value, w.Site, w.Call.Format("15:04:05.000000"), w.Return.Format("15:04:05.000000")))
				break
			}
		}
	}
	return out
}

func describeWrite(w RegOp) string {
	if w.Unknown {
		return fmt.Sprintf("called %s, not Perm", w.Call.Format("15:04:05.000000"))
	}
	return fmt.Sprintf("[%s, %s] Perm", w.Call.Format("15:04:05.000000"), w.Return.Format("15:04:05.000000"))
}
