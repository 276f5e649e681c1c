package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/gateway/internal/apply"
	"github.com/caravan-cd/caravan/services/gateway/internal/auth"
)

// mediaTypes are the Content-Types a resource body may have (or none).
var mediaTypes = map[string]bool{
	"application/yaml":   true,
	"application/x-yaml": true,
	"text/yaml":          true,
	"text/x-yaml":        true,
	"application/json":   true,
}

// body reads the request body, answering 415 or 413 itself (ok false).
func (s *server) body(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !mediaTypes[mt] {
			writeError(w, http.StatusUnsupportedMediaType, codeUnsupportedMedia,
				fmt.Sprintf("Content-Type %q is not supported: send application/yaml or application/json", ct))
			return nil, false
		}
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, codeTooLarge, fmt.Sprintf("the body is larger than %d bytes", tooLarge.Limit))
		return nil, false
	case err != nil:
		writeError(w, http.StatusBadRequest, codeInvalid, "cannot read the body")
		return nil, false
	}
	return b, true
}

func (s *server) apply(w http.ResponseWriter, r *http.Request) {
	s.resources(w, r, s.applier.Apply)
}

func (s *server) delete(w http.ResponseWriter, r *http.Request) {
	s.resources(w, r, s.applier.Delete)
}

func (s *server) resources(w http.ResponseWriter, r *http.Request, do func(context.Context, []byte) (*apply.Outcome, error)) {
	b, ok := s.body(w, r)
	if !ok {
		return
	}
	p, _ := auth.FromContext(r.Context())
	allowed, why, err := s.mayApply(r.Context(), p, b)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if !allowed {
		forbidden(w, why)
		return
	}
	out, err := do(r.Context(), b)
	var issues model.Issues
	switch {
	case errors.As(err, &issues):
		writeError(w, http.StatusBadRequest, codeInvalid, invalidMessage(issues), issues...)
	case errors.Is(err, apply.ErrEmpty):
		writeError(w, http.StatusBadRequest, codeInvalid, err.Error())
	case errors.Is(err, state.ErrConflict):
		writeError(w, http.StatusConflict, codeConflict, "the objects kept changing while they were applied; try again")
	case errors.Is(err, state.ErrAliasTaken):
		writeError(w, http.StatusConflict, codeConflict, err.Error())
	case err != nil:
		s.internal(w, r, err)
	default:
		writeJSON(w, http.StatusOK, out)
	}
}

// invalidMessage counts the documents the issues are about.
func invalidMessage(issues model.Issues) string {
	docs := map[int]bool{}
	for _, is := range issues {
		docs[is.Document] = true
	}
	if len(docs) == 1 {
		return "1 document is invalid; nothing was written"
	}
	return fmt.Sprintf("%d documents are invalid; nothing was written", len(docs))
}
