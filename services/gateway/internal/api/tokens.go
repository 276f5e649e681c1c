package api

import (
	"errors"
	"net/http"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/gateway/internal/auth"
)

// createdToken is the answer to a token's creation: the only time its
// secret is shown.
type createdToken struct {
	auth.Token
	Secret string `json:"token"`
}

type tokenList struct {
	APIVersion string       `json:"apiVersion"`
	Kind       string       `json:"kind"`
	Items      []auth.Token `json:"items"`
}

func (s *server) createToken(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
		Role string `json:"role"`
	}
	if !s.actionBody(w, r, &req) {
		return
	}
	if !model.IsDNS1123Subdomain(req.Name) {
		invalid(w, "name", "must be a lower-case RFC 1123 name")
		return
	}
	role, err := auth.ParseRole(req.Role)
	if err != nil {
		invalid(w, "role", "must be viewer, promoter or admin")
		return
	}
	if _, ok := s.project(w, r); !ok {
		return
	}
	s.auditTarget(r, r.PathValue("project"), kindToken, req.Name)
	tok, secret, err := s.tokens.Create(r.Context(), r.PathValue("project"), req.Name, role, principalName(r), s.now())
	switch {
	case errors.Is(err, auth.ErrTokenExists):
		conflict(w, "a token named "+req.Name+" exists; revoke it first")
		return
	case errors.Is(err, auth.ErrNoProject):
		writeError(w, http.StatusNotFound, codeNotFound, "project "+r.PathValue("project")+" not found")
		return
	case err != nil:
		s.internal(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, createdToken{Token: tok, Secret: secret})
}

func (s *server) listTokens(w http.ResponseWriter, r *http.Request) {
	toks, err := s.tokens.List(r.Context(), r.PathValue("project"))
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if toks == nil {
		toks = []auth.Token{}
	}
	writeJSON(w, http.StatusOK, tokenList{APIVersion: "v1", Kind: "TokenList", Items: toks})
}

func (s *server) getToken(w http.ResponseWriter, r *http.Request) {
	toks, err := s.tokens.List(r.Context(), r.PathValue("project"))
	if err != nil {
		s.internal(w, r, err)
		return
	}
	for _, t := range toks {
		if t.Name == r.PathValue("name") {
			writeJSON(w, http.StatusOK, t)
			return
		}
	}
	writeError(w, http.StatusNotFound, codeNotFound, "token "+r.PathValue("name")+" not found")
}

func (s *server) deleteToken(w http.ResponseWriter, r *http.Request) {
	s.auditTarget(r, r.PathValue("project"), kindToken, r.PathValue("name"))
	err := s.tokens.Delete(r.Context(), r.PathValue("project"), r.PathValue("name"))
	switch {
	case errors.Is(err, auth.ErrTokenNotFound), errors.Is(err, state.ErrNotFound):
		writeError(w, http.StatusNotFound, codeNotFound, "token "+r.PathValue("name")+" not found")
	case err != nil:
		s.internal(w, r, err)
	default:
		writeJSON(w, http.StatusOK, map[string]string{"name": r.PathValue("name"), "status": "revoked"})
	}
}
