package promoter

import (
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
)

// The step engine wired in by default runs a promotion end to end.
func TestRealEngine(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	stage := h.stage("dev", func(s *model.Stage) {
		s.Spec.PromotionTemplate.Spec.Steps = []model.PromotionStep{
			{Uses: "compose-output", As: "first", Config: map[string]any{"freight": "${{ ctx.targetFreight.name }}"}},
			{Uses: "compose-output", As: "second", Config: map[string]any{"from": "${{ outputs.first.freight }}"}},
		}
	})
	f := h.freight("v1", time.Now())
	h.start("a", nil, nil)
	p := h.promote(stage, f, "alice")
	got := h.waitPhase(p.Name, model.PromotionPhaseSucceeded)
	if len(got.Status.StepExecutionMetadata) != 2 {
		t.Fatalf("step metadata %+v", got.Status.StepExecutionMetadata)
	}
	eventually(t, 10*time.Second, func() bool { return len(h.events.of(events.TypePromotionStepFinished, p.Name)) == 2 },
		func() string { return "2 PromotionStepFinished events" })
}
