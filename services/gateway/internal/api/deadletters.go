package api

import (
	"encoding/base64"
	"errors"
	"net/http"

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
	project := r.URL.Query().Get("project")
	out := deadLetterList{APIVersion: "v1", Kind: "DeadLetterList", Items: []events.DeadLetter{}}
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
