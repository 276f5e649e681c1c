package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/gateway"
	"github.com/caravan-cd/caravan/services/gateway/internal/ui/layout"
)

// bigPipeline writes a project of 5 warehouses, 1,000 stages (fan-out and
// fan-in, as layout.Generate shapes them) and 10,000 freight straight to
// the store; every stage holds one freight, verified, with a healthy
// status. It returns the stages and the freight in use, as stored.
func bigPipeline(tb testing.TB, h *harness) ([]*model.Stage, []*model.Freight) {
	tb.Helper()
	ctx := context.Background()
	kargo := func(kind string) model.TypeMeta { return model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: kind} }
	h.mustApply([]byte("apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata: {name: demo}\n"))
	nodes, edges := layout.Generate(1000, 5)
	ups := map[string][]string{}
	for _, e := range edges {
		ups[e.To] = append(ups[e.To], e.From)
	}
	for i := range 5 {
		w := &model.Warehouse{TypeMeta: kargo(model.KindWarehouse), ObjectMeta: model.ObjectMeta{Name: fmt.Sprintf("wh-%d", i), Namespace: "demo"},
			Spec: model.WarehouseSpec{Interval: model.Duration{Duration: 5 * time.Minute}, Subscriptions: []model.RepoSubscription{{Image: &model.ImageSubscription{RepoURL: fmt.Sprintf("ghcr.io/example/app%d", i)}}}}}
		if _, err := h.env.Store.PutObject(ctx, w, 0); err != nil {
			tb.Fatal(err)
		}
	}
	now := time.Now().UTC()
	var freight []*model.Freight
	for i := range 10000 {
		f := &model.Freight{TypeMeta: kargo(model.KindFreight), ObjectMeta: model.ObjectMeta{Namespace: "demo", CreationTimestamp: model.NewTime(now.Add(-time.Duration(i) * time.Minute))},
			Origin: model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: fmt.Sprintf("wh-%d", i%5)}, Alias: fmt.Sprintf("f-%05d", i),
			Images: []model.Image{{RepoURL: fmt.Sprintf("ghcr.io/example/app%d", i%5), Tag: fmt.Sprintf("1.0.%d", i), Digest: fmt.Sprintf("sha256:%064d", i)}}}
		f.Name = f.GenerateID()
		freight = append(freight, f)
	}
	var stages []*model.Stage
	var inUse []*model.Freight
	for i, n := range nodes[5:] {
		origin := model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: fmt.Sprintf("wh-%d", i%5)}
		req := model.FreightRequest{Origin: origin}
		for _, up := range ups[n.ID] {
			if strings.HasPrefix(up, "wh-") {
				req.Sources.Direct = true
				req.Origin.Name = up
			} else {
				req.Sources.Stages = append(req.Sources.Stages, up)
			}
		}
		st := &model.Stage{TypeMeta: kargo(model.KindStage), ObjectMeta: model.ObjectMeta{Name: n.ID, Namespace: "demo"},
			Spec: model.StageSpec{RequestedFreight: []model.FreightRequest{req},
				PromotionTemplate: &model.PromotionTemplate{Spec: model.PromotionTemplateSpec{Steps: []model.PromotionStep{{Uses: "git-clone"}, {Uses: "git-push"}}}},
				Verification:      &model.Verification{AnalysisTemplates: []model.AnalysisTemplateReference{{Name: "smoke"}}}}}
		if _, err := h.env.Store.PutObject(ctx, st, 0); err != nil {
			tb.Fatal(err)
		}
		f := freight[i]
		f.Origin = st.Spec.RequestedFreight[0].Origin
		f.Status.CurrentlyIn = map[string]model.CurrentStage{st.Name: {Since: model.NewTime(now.Add(-time.Hour))}}
		f.Status.VerifiedIn = map[string]model.VerifiedStage{st.Name: {VerifiedAt: model.NewTime(now.Add(-50 * time.Minute))}}
		ref := model.FreightReference{Name: f.Name, Origin: f.Origin, Images: f.Images}
		status := model.StageStatus{Phase: model.StagePhaseSteady, Health: &model.Health{Status: model.HealthStateHealthy}, AutoPromotionEnabled: i%2 == 0,
			FreightHistory: []model.FreightCollection{{ID: "c" + f.Name[:8], Freight: map[string]model.FreightReference{f.Origin.String(): ref},
				VerificationHistory: []model.VerificationInfo{{ID: "v-" + st.Name, Phase: model.VerificationPhaseSuccessful, StartTime: model.NewTime(now.Add(-55 * time.Minute))}}}},
			LastPromotion: &model.PromotionReference{Name: st.Name + ".p1", Freight: &ref, Status: &model.PromotionStatus{Phase: model.PromotionPhaseSucceeded}, FinishedAt: model.NewTime(now.Add(-time.Hour))}}
		if _, err := state.Put(ctx, h.env.Store.KV(state.Stages), state.Key("demo", st.Name), status); err != nil {
			tb.Fatal(err)
		}
		st.Status = status
		stages = append(stages, st)
		inUse = append(inUse, f)
	}
	for _, f := range freight {
		if _, err := h.env.Store.PutObject(ctx, f, 0); err != nil {
			tb.Fatal(err)
		}
	}
	return stages, inUse
}

// sessionCookie signs the admin in and returns the session cookie.
func sessionCookie(tb testing.TB, h *harness) string {
	tb.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(h.srv.URL + "/login")
	if err != nil {
		tb.Fatal(err)
	}
	var page bytes.Buffer
	_, _ = page.ReadFrom(resp.Body)
	_ = resp.Body.Close()
	nonce := nonceForm.FindStringSubmatch(page.String())[1]
	var login string
	for _, ck := range resp.Cookies() {
		login = ck.Name + "=" + ck.Value
	}
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/login", strings.NewReader(url.Values{"token": {token}, "nonce": {nonce}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Cookie", login)
	resp, err = c.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	_ = resp.Body.Close()
	for _, ck := range resp.Cookies() {
		if ck.Name == "caravan_session" {
			return ck.Name + "=" + ck.Value
		}
	}
	tb.Fatalf("no session cookie (%d)", resp.StatusCode)
	return ""
}

// BenchmarkUIRender measures the p50 and p99 of server-rendering the
// pipeline page of a project with 1,000 stages and 10,000 freight (and of
// one card, and of a timeline page), beside a baseline measured in the same
// run: the raw JSON encoding of the same stages and the freight they hold
// (metrics *-p50-ms, *-p99-ms and *-ratio-to-json-p99). "changed-page" is
// the page right after one stage's status changed (a different stage each
// time), as when a page is opened on a busy project. Each is measured
// twice: as the gateway serves it (the UI keeps each project current with
// a feed of KV changes) and, as a second baseline, by a gateway on the
// same store whose UI reads the project anew on every request (metrics
// anew-*).
func BenchmarkUIRender(b *testing.B) {
	var deps gateway.Deps
	h := newHarness(b, func(d *gateway.Deps) { d.Config.ExternalURL = "http://127.0.0.1"; deps = *d })
	stages, inUse := bigPipeline(b, h)
	cookie := sessionCookie(b, h)
	deps.UIReadsAnew = true
	anew, err := gateway.NewHandler(b.Context(), deps)
	if err != nil {
		b.Fatal(err)
	}
	handlers := map[string]http.Handler{"": h.srv.Config.Handler, "anew-": anew}
	paths := map[string]string{
		"page":     "/projects/demo",
		"card":     "/projects/demo?fragment=card&stage=stage-500",
		"timeline": "/projects/demo?fragment=timeline",
	}
	serve := func(handler http.Handler, p string) (int, int) {
		r := httptest.NewRequest(http.MethodGet, p, nil)
		r.Header.Set("Cookie", cookie)
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, r)
		return w.Code, w.Body.Len()
	}
	for prefix, handler := range handlers {
		for name, p := range paths { // warm up: the index, the layout cache
			if st, n := serve(handler, p); st != http.StatusOK {
				b.Fatalf("%s%s: %d", prefix, name, st)
			} else {
				b.Logf("%s%s: %d bytes", prefix, name, n)
			}
		}
	}
	ctx := context.Background()
	times := map[string][]time.Duration{}
	var base []time.Duration
	i := 0
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		if _, err := json.Marshal(struct {
			Stages  []*model.Stage
			Freight []*model.Freight
		}{stages, inUse}); err != nil {
			b.Fatal(err)
		}
		base = append(base, time.Since(t0))
		for prefix, handler := range handlers {
			for name, p := range paths {
				t0 := time.Now()
				serve(handler, p)
				times[prefix+name] = append(times[prefix+name], time.Since(t0))
			}
			b.StopTimer()
			st := stages[(i*37)%len(stages)]
			i++
			st.Status.Message = fmt.Sprintf("changed %d", i)
			if _, err := state.Put(ctx, h.env.Store.KV(state.Stages), state.Key("demo", st.Name), st.Status); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			t0 = time.Now()
			serve(handler, paths["page"])
			times[prefix+"changed-page"] = append(times[prefix+"changed-page"], time.Since(t0))
		}
	}
	b.StopTimer()
	bp := p99(base)
	b.ReportMetric(float64(bp.Microseconds())/1000, "json-p99-ms")
	for name, ts := range times {
		b.ReportMetric(float64(quantile(ts, 50).Microseconds())/1000, name+"-p50-ms")
		q := p99(ts)
		b.ReportMetric(float64(q.Microseconds())/1000, name+"-p99-ms")
		b.ReportMetric(float64(q)/float64(bp), name+"-ratio-to-json-p99")
	}
}
