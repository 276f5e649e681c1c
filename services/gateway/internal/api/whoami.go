package api

import (
	"net/http"

	"github.com/caravan-cd/caravan/services/gateway/internal/auth"
)

// whoami is who the caller is and, with ?project=, the role it has there:
// what the web UI reads to show only the actions the caller may take.
type whoami struct {
	Name    string    `json:"name"`
	Admin   bool      `json:"admin"`
	Project string    `json:"project,omitempty"`
	Role    auth.Role `json:"role,omitempty"`
}

func (s *server) whoami(w http.ResponseWriter, r *http.Request) {
	p, _ := auth.FromContext(r.Context())
	out := whoami{Name: p.Name, Admin: p.Admin}
	if project := r.URL.Query().Get("project"); project != "" {
		role, err := s.roleIn(r.Context(), p, project)
		if err != nil {
			s.internal(w, r, err)
			return
		}
		out.Project, out.Role = project, role
	}
	writeJSON(w, http.StatusOK, out)
}
