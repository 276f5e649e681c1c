package promoter

import (
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
)

// Garbage collection runs on its interval with the configured policy.
func TestGarbageCollection(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	stage := h.stage("dev", nil)
	f := h.freight("v1", time.Now())
	for range 8 {
		p := h.newPromotion(stage, f, "alice")
		p.Status.Phase = model.PromotionPhaseSucceeded
		h.put(p)
	}
	gc := func(c *Config) {
		c.GCInterval, c.GCKeepPromotions, c.GCMinAge = 200*time.Millisecond, 3, time.Millisecond
	}
	h.start("a", newFakeRunner(1), gc)
	h.start("b", newFakeRunner(1), gc)
	eventually(t, 20*time.Second, func() bool { return len(h.promotions("dev")) == 3 },
		func() string { return "3 promotions kept" })
	if got := h.getFreight(f.Name); got.Name != f.Name {
		t.Fatal("freight collected") // the only freight of its warehouse
	}
}
