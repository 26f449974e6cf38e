package sim

import (
	"fmt"

	"github.com/anishathalye/porcupine"
)

// kvInput and kvOutput are porcupine's view of one operation.
type kvInput struct {
	kind  OpKind
	key   string
	value string
}

type kvOutput struct {
	found bool
	value string
}

// kvState is the state of one key (histories are partitioned by key).
type kvState struct {
	present bool
	value   string
}

// kvModel is a register per key: puts set it, deletes clear it, gets must
// observe it. A write's own output carries no information, so writes whose
// answer never came are handled by giving them an open-ended return time.
func kvModel() porcupine.Model {
	return porcupine.Model{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			var keys []string
			byKey := make(map[string][]porcupine.Operation)
			for _, op := range history {
				k := op.Input.(kvInput).key
				if _, ok := byKey[k]; !ok {
					keys = append(keys, k)
				}
				byKey[k] = append(byKey[k], op)
			}
			out := make([][]porcupine.Operation, 0, len(keys))
			for _, k := range keys {
				out = append(out, byKey[k])
			}
			return out
		},
		Init: func() any { return kvState{} },
		Step: func(state, input, output any) (bool, any) {
			s := state.(kvState)
			in := input.(kvInput)
			switch in.kind {
			case OpPut:
				return true, kvState{present: true, value: in.value}
			case OpDelete:
				return true, kvState{}
			default:
				out := output.(kvOutput)
				if out.found != s.present {
					return false, s
				}
				return !s.present || out.value == s.value, s
			}
		},
		DescribeOperation: func(input, output any) string {
			in := input.(kvInput)
			switch in.kind {
			case OpPut:
				return fmt.Sprintf("put(%s,%s)", in.key, in.value)
			case OpDelete:
				return fmt.Sprintf("del(%s)", in.key)
			default:
				out := output.(kvOutput)
				if !out.found {
					return fmt.Sprintf("get(%s) -> absent", in.key)
				}
				return fmt.Sprintf("get(%s) -> %s", in.key, out.value)
			}
		},
	}
}
