package promoter

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
)

// Health checks registered by a promotion are evaluated after it and then
// every health interval; a change publishes StageHealthChanged.
func TestStageHealth(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	stage := h.stage("dev", nil)
	f := h.freight("v1", time.Now())
	var healthy atomic.Bool
	runner := newFakeRunner(1)
	runner.Checks = []model.HealthCheckStep{{Uses: "argocd-update", Config: map[string]any{"apps": []any{"app"}}}}
	runner.HealthOf = func(checks []model.HealthCheckStep) model.Health {
		if len(checks) != 1 {
			return model.Health{Status: model.HealthStateUnknown, Issues: []string{"checks lost"}}
		}
		if healthy.Load() {
			return model.Health{Status: model.HealthStateHealthy}
		}
		return model.Health{Status: model.HealthStateUnhealthy, Issues: []string{"app degraded"}}
	}
	h.start("a", runner, func(c *Config) { c.HealthInterval = 300 * time.Millisecond })
	h.start("b", runner, func(c *Config) { c.HealthInterval = 300 * time.Millisecond })
	p := h.promote(stage, f, "alice")
	h.waitPhase(p.Name, model.PromotionPhaseSucceeded)
	eventually(t, 10*time.Second, func() bool {
		st := h.stageStatus("dev")
		return st.Health != nil && st.Health.Status == model.HealthStateUnhealthy
	}, func() string { return "stage Unhealthy after the promotion" })
	healthy.Store(true)
	eventually(t, 10*time.Second, func() bool {
		st := h.stageStatus("dev")
		return st.Health != nil && st.Health.Status == model.HealthStateHealthy
	}, func() string { return "stage Healthy after the periodic check" })
	eventually(t, 10*time.Second, func() bool {
		evs := h.events.of(events.TypeStageHealthChanged, "dev")
		return len(evs) == 2
	}, func() string {
		return "two StageHealthChanged events (Unhealthy, Healthy)"
	})
	time.Sleep(700 * time.Millisecond)
	if n := len(h.events.of(events.TypeStageHealthChanged, "dev")); n != 2 {
		t.Fatalf("%d StageHealthChanged events without a change, want 2", n)
	}
	// A new promotion gives a first verdict on its freight, announced even
	// though it is the same (the verifier waits for it).
	p2 := h.promote(stage, f, "alice")
	h.waitPhase(p2.Name, model.PromotionPhaseSucceeded)
	eventually(t, 10*time.Second, func() bool {
		return len(h.events.of(events.TypeStageHealthChanged, "dev")) == 3 && len(h.events.of(events.TypePromotionSucceeded, p2.Name)) == 1
	}, func() string { return "StageHealthChanged and PromotionSucceeded after the second promotion" })
	// It comes before PromotionSucceeded.
	h.events.mu.Lock()
	var order []events.Type
	for _, e := range h.events.envs {
		if e.Type == events.TypeStageHealthChanged || (e.Type == events.TypePromotionSucceeded && e.Subject.Name == p2.Name) {
			order = append(order, e.Type)
		}
	}
	h.events.mu.Unlock()
	if len(order) < 4 || order[2] != events.TypeStageHealthChanged || order[3] != events.TypePromotionSucceeded {
		t.Fatalf("event order %v", order)
	}
}
