package imrest

import (
	"context"
	"errors"
	"fmt"
	"sort"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// Check is one friend_check call of a plan: from, and the accounts to
// check from's relation with.
type Check struct {
	From string
	To   []string
}

// Plan groups the pairs whose relation is still unknown (relations[i] is
// RelationUnknown) into friend_check calls of at most MaxPerRequest
// accounts each. With CheckResult_Type_Both one check of a and b answers
// both pairs a->b and b->a, so each unordered pair is checked once, from
// the account that appears in the most pairs: a two-way delete of one user
// with 1000 friends (2000 pairs) takes one call.
func Plan(pairs []snsv1alpha1.FriendPair, relations []byte) []Check {
	degree := map[string]int{}
	seen := map[[2]string]bool{}
	for i, p := range pairs {
		if relations[i] != snsv1alpha1.RelationUnknown {
			continue
		}
		k := unordered(p)
		if seen[k] {
			continue
		}
		seen[k] = true
		degree[k[0]]++
		if k[1] != k[0] {
			degree[k[1]]++
		}
	}
	groups := map[string][]string{}
	var froms []string
	for k := range seen {
		from, to := k[0], k[1]
		if degree[to] > degree[from] || (degree[to] == degree[from] && to < from) {
			from, to = to, from
		}
		if groups[from] == nil {
			froms = append(froms, from)
		}
		groups[from] = append(groups[from], to)
	}
	// Most accounts first, then by name: a deterministic plan.
	sort.Slice(froms, func(i, j int) bool {
		if len(groups[froms[i]]) != len(groups[froms[j]]) {
			return len(groups[froms[i]]) > len(groups[froms[j]])
		}
		return froms[i] < froms[j]
	})
	var checks []Check
	for _, from := range froms {
		to := groups[from]
		sort.Strings(to)
		for len(to) > 0 {
			n := min(len(to), MaxPerRequest)
			checks = append(checks, Check{From: from, To: to[:n:n]})
			to = to[n:]
		}
	}
	return checks
}

// unordered is a pair's accounts in order, the same for a->b and b->a.
func unordered(p snsv1alpha1.FriendPair) [2]string {
	if p.To < p.From {
		return [2]string{p.To, p.From}
	}
	return [2]string{p.From, p.To}
}

// relationLetter is the letter for a pair from->to, given friend_check's
// answer for checkFrom and its To_Account.
func relationLetter(relation string, pairFrom, checkFrom string) (byte, bool) {
	inverted := pairFrom != checkFrom
	switch relation {
	case "CheckResult_Type_NoRelation":
		return snsv1alpha1.RelationNone, true
	case "CheckResult_Type_BothWay":
		return snsv1alpha1.RelationBoth, true
	case "CheckResult_Type_AWithB":
		if inverted {
			return snsv1alpha1.RelationToHasFrom, true
		}
		return snsv1alpha1.RelationFromHasTo, true
	case "CheckResult_Type_BWithA":
		if inverted {
			return snsv1alpha1.RelationFromHasTo, true
		}
		return snsv1alpha1.RelationToHasFrom, true
	}
	return 0, false
}

// ItemsFailedError says how many accounts of a friend_check answer were
// failed checks (a non-zero ResultCode, or missing from the answer).
type ItemsFailedError struct {
	Failed     int
	Code       int
	Info       string
	FirstCheck string
}

func (e *ItemsFailedError) Error() string {
	return fmt.Sprintf("friend_check failed for %d accounts (first: ResultCode %d, %s, checking %s)", e.Failed, e.Code, e.Info, e.FirstCheck)
}

// Verify asks the IM backend about every pair whose relation is unknown
// and writes the answers into relations (one letter per pair, see the
// snsv1alpha1.Relation constants). It stops at the first failed call;
// what was answered before stays in relations, so that the next try asks
// only about the rest. It returns how many calls it made, and the error of
// the failed call, or an *ItemsFailedError when every call went through
// but some accounts got no answer.
func Verify(ctx context.Context, c *Client, pairs []snsv1alpha1.FriendPair, relations []byte) (int, error) {
	if len(relations) != len(pairs) {
		return 0, fmt.Errorf("%d relations for %d pairs", len(relations), len(pairs))
	}
	byKey := map[[2]string][]int{}
	for i, p := range pairs {
		if relations[i] == snsv1alpha1.RelationUnknown {
			k := unordered(p)
			byKey[k] = append(byKey[k], i)
		}
	}
	calls := 0
	var itemErr *ItemsFailedError
	for _, chk := range Plan(pairs, relations) {
		items, err := c.FriendCheck(ctx, chk.From, chk.To)
		if err != nil {
			return calls, err
		}
		calls++
		asked := make(map[string]bool, len(chk.To))
		for _, to := range chk.To {
			asked[to] = true
		}
		answered := make(map[string]bool, len(items))
		var first *CheckItem
		for _, it := range items {
			if !asked[it.To] || answered[it.To] {
				continue // not asked for in this call, or answered twice
			}
			if _, known := relationLetter(it.Relation, chk.From, chk.From); it.ResultCode != 0 || !known {
				if first == nil {
					first = &it
				}
				continue
			}
			answered[it.To] = true
			for _, i := range byKey[unordered(snsv1alpha1.FriendPair{From: chk.From, To: it.To})] {
				relations[i], _ = relationLetter(it.Relation, pairs[i].From, chk.From)
			}
		}
		if missing := len(chk.To) - len(answered); missing > 0 {
			if itemErr == nil {
				itemErr = &ItemsFailedError{FirstCheck: "From_Account " + chk.From, Info: "no InfoItem in the answer"}
				if first != nil {
					itemErr.Code, itemErr.Info = first.ResultCode, truncate(first.ResultInfo, 200)
					if first.ResultCode == 0 {
						itemErr.Info = "unknown Relation " + truncate(first.Relation, 64)
					}
				}
			}
			itemErr.Failed += missing
		}
	}
	if itemErr != nil {
		return calls, itemErr
	}
	return calls, nil
}

// IsItemsFailed reports whether err is an *ItemsFailedError.
func IsItemsFailed(err error) bool {
	var e *ItemsFailedError
	return errors.As(err, &e)
}
