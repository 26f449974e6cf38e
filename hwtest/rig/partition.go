package rig

import (
	"fmt"
	"slices"
	"strings"
)

// groupBridge names the bridge of partition group g.
func (c *Chassis) groupBridge(g int) string { return fmt.Sprintf("%s-p%d", c.id, g) }

// bridgeSpec is the ip batch line creating a bridge that floods from the
// first instant (no STP, no forward delay, no multicast snooping).
func bridgeSpec(name string, mtu int) string {
	return fmt.Sprintf("link add name %s mtu %d type bridge stp_state 0 forward_delay 0 mcast_snooping 0\nlink set %s up\n", name, mtu, name)
}

// Partition splits the backplane at layer 2: boards in the same group reach
// each other, boards in different groups do not (no frame of any kind
// crosses, ARP included). Boards in no group (and boards added later) stay
// together on the main bridge. It replaces any earlier partition; Heal
// undoes it. Each group gets a bridge of its own in the backplane namespace
// ("<id>-p<g>") and its boards' bridge-side veths move to it; links,
// carriers, addresses and injectors of the boards are untouched.
func (c *Chassis) Partition(groups ...[]*Board) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	c.mu.Lock()
	closed, boards, have := c.closed, c.Boards, c.partitionGroups
	c.mu.Unlock()
	if closed {
		return fmt.Errorf("partition chassis %s: %w", c.id, ErrClosed)
	}
	target := map[*Board]string{}
	for g, group := range groups {
		for _, b := range group {
			if !slices.Contains(boards, b) {
				return fmt.Errorf("partition chassis %s: group %d: %w", c.id, g, ErrUnknownBoard)
			}
			if _, dup := target[b]; dup {
				return fmt.Errorf("%w: board %d is in two partition groups", ErrBadOptions, b.Site)
			}
			target[b] = c.groupBridge(g)
		}
	}
	return c.movePorts(boards, target, have, len(groups))
}

// Heal undoes Partition: every board is on the main bridge again.
func (c *Chassis) Heal() error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	c.mu.Lock()
	closed, boards, have := c.closed, c.Boards, c.partitionGroups
	c.mu.Unlock()
	if closed {
		return fmt.Errorf("heal chassis %s: %w", c.id, ErrClosed)
	}
	return c.movePorts(boards, nil, have, 0)
}

// movePorts, in one ip run, creates group bridges have..want-1, enslaves
// each board's bridge-side veth to target[b] (the main bridge if absent) and
// deletes group bridges want..have-1.
func (c *Chassis) movePorts(boards []*Board, target map[*Board]string, have, want int) error {
	var batch strings.Builder
	for g := have; g < want; g++ {
		batch.WriteString(bridgeSpec(c.groupBridge(g), c.mtu))
	}
	for _, b := range boards {
		br, ok := target[b]
		if !ok {
			br = c.Bridge
		}
		fmt.Fprintf(&batch, "link set %s master %s\n", b.bridgeside, br)
	}
	for g := want; g < have; g++ {
		fmt.Fprintf(&batch, "link delete %s\n", c.groupBridge(g))
	}
	// -force: after a failed line (a bridge an earlier failure left
	// missing) go on, so that as much as possible is done and reported.
	err := runIP(c.ipPath, batch.String(), "-n", c.BackplaneNS, "-force", "-batch", "-")
	// Record the bridges that exist whatever happened, so that the next
	// call or Close's namespace deletion accounts for them.
	c.mu.Lock()
	if err == nil {
		c.partitionGroups = want
	} else {
		c.partitionGroups = max(have, want)
	}
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("rig: move ports of chassis %s to %d partition groups: %w", c.id, want, err)
	}
	return nil
}
