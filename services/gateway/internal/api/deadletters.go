package api

import (
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/caravan-cd/caravan/pkg/events"
)

func (s *server) deadLetters(r *http.Request) (*events.DeadLetters, error) {
	s.deadOnce.Do(func() { s.dead, s.deadErr = events.NewDeadLetters(r.Context(), s.bus) })
	return s.dead, s.deadErr
}

type deadLetterList struct {
	APIVersion string              `json:"apiVersion"`
	Kind       string              `json:"kind"`
	Items      []events.DeadLetter `json:"items"`
	Metadata   listMeta            `json:"metadata"`
}

func (s *server) listDeadLetters(w http.ResponseWriter, r *http.Request) {
	limit, after, ok := paging(w, r)
	if !ok {
		return
	}
	dl, err := s.deadLetters(r)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	order, ok := ordering(w, r)
	if !ok {
		return
	}
	project := r.URL.Query().Get("project")
	out := deadLetterList{APIVersion: "v1", Kind: "DeadLetterList", Items: []events.DeadLetter{}}
	if order != sortName {
		all, _, err := dl.List(r.Context(), 0, "")
		if err != nil {
			s.internal(w, r, err)
			return
		}
		all = slices.DeleteFunc(all, func(d events.DeadLetter) bool { return project != "" && d.Project != project })
		page, next, ok := pageDeadLetters(all, order, limit, after)
		if !ok {
			invalid(w, "continue", "a token of another sort order")
			return
		}
		out.Items, out.Metadata.Continue = append(out.Items, page...), next
		writeJSON(w, http.StatusOK, out)
		return
	}
	if strings.HasPrefix(after, "@") {
		invalid(w, "continue", "a token of another sort order")
		return
	}
	for {
		items, next, err := dl.List(r.Context(), limit-len(out.Items), after)
		if err != nil {
			s.internal(w, r, err)
			return
		}
		for _, it := range items {
			if project == "" || it.Project == project {
				out.Items = append(out.Items, it)
			}
		}
		if next == "" {
			break
		}
		if len(out.Items) == limit {
			out.Metadata.Continue = base64.RawURLEncoding.EncodeToString([]byte(next))
			break
		}
		after = next
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) replayDeadLetter(w http.ResponseWriter, r *http.Request) {
	dl, err := s.deadLetters(r)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	id := r.PathValue("id")
	d, err := dl.Get(r.Context(), id)
	if errors.Is(err, events.ErrNotFound) {
		writeError(w, http.StatusNotFound, codeNotFound, "dead letter "+id+" not found")
		return
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if len(d.Data) == 0 {
		conflict(w, "dead letter "+id+" holds no event to replay")
		return
	}
	if err := dl.Replay(r.Context(), id); err != nil {
		if errors.Is(err, events.ErrNotFound) {
			writeError(w, http.StatusNotFound, codeNotFound, "dead letter "+id+" not found")
			return
		}
		s.internal(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"id": id, "status": "replayed", "type": d.Type, "subject": d.Subject})
}

// compareDeadLetters orders dead letters newest first (by time, then ID),
// or oldest first.
func compareDeadLetters(order string) func(a, b events.DeadLetter) int {
	newest := func(a, b events.DeadLetter) int {
		if c := b.Time.Compare(a.Time); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	}
	if order == sortOldest {
		return func(a, b events.DeadLetter) int { return newest(b, a) }
	}
	return newest
}

// pageDeadLetters is pageOrdered for dead letters.
func pageDeadLetters(all []events.DeadLetter, order string, limit int, after string) ([]events.DeadLetter, string, bool) {
	cmp := compareDeadLetters(order)
	if after != "" {
		c, ok := parseCursor(after)
		if !ok {
			return nil, "", false
		}
		mark := events.DeadLetter{ID: c.name, Time: c.created}
		all = slices.DeleteFunc(all, func(d events.DeadLetter) bool { return cmp(d, mark) <= 0 })
	}
	slices.SortStableFunc(all, cmp)
	if limit > 0 && len(all) > limit {
		last := all[limit-1]
		token := "@" + strconv.FormatInt(last.Time.UnixNano(), 10) + "/" + last.ID
		return all[:limit], base64.RawURLEncoding.EncodeToString([]byte(token)), true
	}
	return all, "", true
}
