package elect

// Quorum is the number of electable votes a site needs to win in a group of
// electable electable sites: more than half, so two winners in one egen would
// need a site that voted twice. Two-site groups are the exception BDB makes:
// one vote suffices so the survivor of a pair can take over, at the price
// that a partitioned pair elects two masters; TwoSiteStrict refuses that
// price and needs both votes. A group of zero or one electable sites needs
// one vote (its own, if it is electable).
func Quorum(electable int, twoSiteStrict bool) int {
	switch {
	case electable <= 1:
		return 1
	case electable == 2 && !twoSiteStrict:
		return 1
	default:
		return electable/2 + 1
	}
}
