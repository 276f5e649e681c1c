package ui

import (
	"net/http"
	"net/url"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
)

type projectRow struct {
	Name                                    string
	Stages, Healthy, Unhealthy, Progressing int
	Running                                 int
	LastActivity                            time.Time
	Warehouses                              int
}

type projectsData struct {
	base
	Projects []projectRow
}

func (u *UI) projects(req *request) error {
	ps, err := all[model.Project](req.ctx, req.api, "/v1/projects", nil)
	if err != nil {
		return err
	}
	data := projectsData{base: u.base(req, "Projects", "", crumb{"Projects", ""})}
	for _, p := range ps {
		row := projectRow{Name: p.Name}
		if p.CreationTimestamp != nil {
			row.LastActivity = p.CreationTimestamp.Time
		}
		stages, err := req.api.stages(req.ctx, p.Name)
		if err != nil {
			return err
		}
		row.Stages = len(stages)
		for _, st := range stages {
			if h := st.Status.Health; h != nil {
				switch h.Status {
				case model.HealthStateHealthy:
					row.Healthy++
				case model.HealthStateUnhealthy:
					row.Unhealthy++
				case model.HealthStateProgressing:
					row.Progressing++
				}
			}
			if lp := st.Status.LastPromotion; lp != nil && lp.FinishedAt != nil && lp.FinishedAt.After(row.LastActivity) {
				row.LastActivity = lp.FinishedAt.Time
			}
		}
		running, err := all[model.Promotion](req.ctx, req.api, projectPath(p.Name, "promotions"), url.Values{"phase": {string(model.PromotionPhaseRunning)}})
		if err != nil {
			return err
		}
		row.Running = len(running)
		data.Projects = append(data.Projects, row)
	}
	return u.render(req.w, http.StatusOK, "projects", "layout", data)
}
