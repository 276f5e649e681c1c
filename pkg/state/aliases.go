package state

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
)

// ErrAliasTaken is wrapped by ReserveAlias's error when another freight
// holds the alias.
var ErrAliasTaken = errors.New("alias taken")

// AliasGrace is how long a reservation whose freight does not (yet) show
// its alias still holds it: its writer reserves first and writes the
// freight right after, and a reservation left by a writer that stopped in
// between, or by a rename whose release failed, frees itself after it.
const AliasGrace = time.Minute

// aliasHold is an entry of the Aliases bucket: which freight holds the
// alias, since when.
type aliasHold struct {
	Freight string    `json:"freight"`
	Since   time.Time `json:"since"`
}

// ReserveAlias makes freight the holder of alias in project, before the
// freight is written with it. Two writers reserving one alias at once
// (two replicas of discovery, the gateway, a set-freight-alias step) never
// both succeed: the reservation is a compare-and-set on the alias's key.
// A reservation of another freight is taken over only when that freight
// no longer shows the alias (deleted, or renamed since) and the
// reservation is older than AliasGrace; otherwise the error wraps
// ErrAliasTaken and names the holder.
//
// Freight aliased before reservations existed hold theirs unreserved:
// callers check the freight first (an index, or KV), as before.
func (s *Store) ReserveAlias(ctx context.Context, project, alias, freight string) error {
	var holder string
	_, _, err := UpdateRev(ctx, s.KV(Aliases), Key(project, alias), func(cur aliasHold, rev uint64) (aliasHold, error) {
		if rev == 0 {
			return aliasHold{Freight: freight, Since: time.Now().UTC()}, nil
		}
		if cur.Freight == freight {
			return cur, ErrNoChange
		}
		if time.Since(cur.Since) < AliasGrace {
			holder = cur.Freight
			return cur, ErrAliasTaken
		}
		held, err := s.shows(ctx, project, cur.Freight, alias)
		if err != nil {
			return cur, err
		}
		if held {
			holder = cur.Freight
			return cur, ErrAliasTaken
		}
		return aliasHold{Freight: freight, Since: time.Now().UTC()}, nil
	})
	if errors.Is(err, ErrAliasTaken) {
		return fmt.Errorf("alias %q is taken by freight %s: %w", alias, holder, ErrAliasTaken)
	}
	if err != nil {
		return fmt.Errorf("reserve alias %q: %w", alias, err)
	}
	return nil
}

// ReleaseAlias ends freight's reservation of alias (after a rename), so
// another freight may take it at once. A reservation of another freight,
// or none, is left alone.
func (s *Store) ReleaseAlias(ctx context.Context, project, alias, freight string) error {
	kv := s.KV(Aliases)
	key := Key(project, alias)
	cur, rev, err := Get[aliasHold](ctx, kv, key)
	if errors.Is(err, ErrNotFound) || (err == nil && cur.Freight != freight) {
		return nil
	}
	if err == nil {
		err = Delete(ctx, kv, key, rev)
	}
	if err != nil && !errors.Is(err, ErrConflict) {
		return fmt.Errorf("release alias %q: %w", alias, err)
	}
	return nil
}

// shows reports whether freight of project exists and has alias.
func (s *Store) shows(ctx context.Context, project, freight, alias string) (bool, error) {
	f, _, err := Get[model.Freight](ctx, s.KV(Freight), ObjectKey(project, model.KindFreight, freight))
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return f.Alias == alias, nil
}

// ReserveUniqueAlias picks a generated alias (model.UniqueAlias) that
// taken reports free and reserves it for freight, picking again when
// another writer reserved it first.
func (s *Store) ReserveUniqueAlias(ctx context.Context, project, freight string, taken func(string) bool) (string, error) {
	for attempt := 1; ; attempt++ {
		alias := model.UniqueAlias(rand.IntN, taken)
		err := s.ReserveAlias(ctx, project, alias, freight)
		if err == nil || !errors.Is(err, ErrAliasTaken) || attempt == 10 {
			return alias, err
		}
	}
}

// SetFreightAlias gives freight of project alias, as every rename does:
// it reserves the alias (ReserveAlias: the error wraps ErrAliasTaken when
// another freight holds it), writes it to the freight (its alias and its
// kargo.akuity.io/alias label; a freight that has it already is left as
// it is) and releases the alias the freight had. A release that fails
// leaves that alias reserved until AliasGrace has passed, no longer, so
// it is not an error. It returns the freight as stored and its revision.
func (s *Store) SetFreightAlias(ctx context.Context, project, freight, alias string) (*model.Freight, uint64, error) {
	if err := s.ReserveAlias(ctx, project, alias, freight); err != nil {
		return nil, 0, err
	}
	old := ""
	f, rev, err := Update(ctx, s.KV(Freight), ObjectKey(project, model.KindFreight, freight), func(cur *model.Freight, exists bool) (*model.Freight, error) {
		if !exists || cur == nil {
			return nil, fmt.Errorf("freight %s: %w", freight, ErrNotFound)
		}
		if cur.Alias == alias {
			return cur, ErrNoChange
		}
		old = cur.Alias
		cur.Alias = alias
		if cur.Labels == nil {
			cur.Labels = map[string]string{}
		}
		cur.Labels[model.LabelAlias] = alias
		return cur, nil
	})
	if err != nil {
		return nil, 0, err
	}
	if old != "" {
		_ = s.ReleaseAlias(ctx, project, old, freight)
	}
	return f, rev, nil
}
