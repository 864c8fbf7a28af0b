package session

import "slices"

// Regroup is how a verified token refresh changes a connection's groups. An engine applies it
// in one step on the connection's shard: the connection leaves Removed and joins Added in the
// registry, its Identity's groups become Groups, Hooks.Leave releases Removed, and Reply (the
// auth_ok) is queued behind everything already queued to the connection. So no message of a
// removed group reaches the client after the auth_ok, and every message of an added group
// published after the client has read it does (docs/DESIGN.md, "Token refresh").
//
// When Added is not empty, the engine first calls Hooks.Join(Added) and applies the Regroup
// once it is done, unless a later refresh or the end of the connection came first: then it
// gives the references back with Hooks.Leave(Added). Its Removed and Added lists are what a
// protocol that announces stream changes to the client would announce, in the same step.
type Regroup struct {
	Groups  []string // the connection's groups once applied
	Added   []string // in Groups, not yet the connection's
	Removed []string // the connection's, not in Groups
	Reply   []byte   // sent once applied
}

// NewRegroup is the change from the groups a connection has (current) to those of a verified
// refresh. Both lists come from tokens, at most auth.MaxGroups long and without duplicates.
func NewRegroup(current []string, act Action) Regroup {
	r := Regroup{Groups: act.Groups, Reply: act.Reply}
	for _, g := range act.Groups {
		if !slices.Contains(current, g) {
			r.Added = append(r.Added, g)
		}
	}
	for _, g := range current {
		if !slices.Contains(act.Groups, g) {
			r.Removed = append(r.Removed, g)
		}
	}
	return r
}

// Changes reports whether the groups change at all; a refresh with the same groups needs
// nothing but its Reply.
func (r *Regroup) Changes() bool { return len(r.Added) > 0 || len(r.Removed) > 0 }
