//go:build e2e

package gateway_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/caravan-cd/caravan/services/gateway"
)

// BenchmarkUIChromiumE2E measures, in headless Chromium, how long the
// pipeline page of a project with 1,000 stages and 10,000 freight takes to
// be usable: from the navigation's start until the script has laid the
// graph out, bound its handlers and the first frame after that is painted
// (window.caravanReady, read from the page's own clock). The baseline,
// measured in the same run, is what a client-rendered UI must do before it
// can draw anything: load the raw JSON of the same 1,000 stages from the
// API (to its load event). Metrics: page-p50-ms, page-p99-ms, json-p50-ms
// and the ratio of the medians. Run with
// `go test -tags e2e -run '^$' -bench UIChromium ./` (make bench-ui).
func BenchmarkUIChromiumE2E(b *testing.B) {
	if _, err := exec.LookPath("chromium"); err != nil {
		b.Fatal("chromium is not installed: apt-get install chromium")
	}
	h := newHarness(b, func(d *gateway.Deps) { d.Config.ExternalURL = "http://127.0.0.1" })
	bigPipeline(b, h)
	cookie := sessionCookie(b, h)
	name, value, _ := strings.Cut(cookie, "=")

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath("/usr/bin/chromium"),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(b.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	actx, cancelA := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelA()
	bctx, cancelB := chromedp.NewContext(actx)
	defer cancelB()
	setCookie := func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Call(ctx, network.SetCookie, network.SetCookieParams{Name: name, Value: value, URL: h.srv.URL, HTTPOnly: new(true), SameSite: network.CookieSameSiteStrict})
		return chromedp.Void{}, err
	}
	if err := chromedp.Do(bctx, chromedp.Navigate(h.srv.URL+"/healthz"), setCookie); err != nil {
		b.Fatal(err)
	}
	page := func() time.Duration {
		if err := chromedp.Do(bctx, chromedp.Navigate(h.srv.URL+"/projects/demo")); err != nil {
			b.Fatal(err)
		}
		var ms float64
		for {
			v, err := chromedp.Run(bctx, chromedp.Evaluate[float64](`window.caravanReady || 0`))
			if err == nil && v > 0 {
				ms = v
				break
			}
			if ctx.Err() != nil {
				b.Fatal("the page never became usable")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if os.Getenv("CARAVAN_UI_TIMING") != "" {
			tm, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`JSON.stringify((({requestStart, responseStart, responseEnd, domInteractive, domContentLoadedEventEnd, loadEventEnd}) => ({requestStart, responseStart, responseEnd, domInteractive, domContentLoadedEventEnd, loadEventEnd}))(performance.getEntriesByType('navigation')[0]))`))
			b.Logf("timing: %s ready %.0f", tm, ms)
		}
		if n, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll('.card').length`)); err != nil || n != 1000 {
			b.Fatalf("cards: %d %v", n, err)
		}
		return time.Duration(ms * float64(time.Millisecond))
	}
	raw := func() time.Duration {
		if err := chromedp.Do(bctx, chromedp.Navigate(h.srv.URL+"/v1/projects/demo/stages?limit=1000")); err != nil {
			b.Fatal(err)
		}
		for {
			v, err := chromedp.Run(bctx, chromedp.Evaluate[float64](`(performance.getEntriesByType('navigation')[0] || {}).loadEventEnd || 0`))
			if err == nil && v > 0 {
				return time.Duration(v * float64(time.Millisecond))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if st, _, _ := h.do("GET", "/v1/projects/demo/stages?limit=1000", token, "", nil); st != http.StatusOK {
		b.Fatalf("stages: %d", st)
	}
	page() // warm up: the index, the layout cache, the browser's cache of the assets
	raw()
	var pages, raws []time.Duration
	b.ResetTimer()
	for b.Loop() {
		pages = append(pages, page())
		raws = append(raws, raw())
	}
	b.StopTimer()
	// Cards out of the first view came as placeholders: zooming out fills
	// in those that come into view, and focusing one by keyboard fills it.
	lazy := func() int {
		n, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll('.card.lazy').length`))
		if err != nil {
			b.Fatal(err)
		}
		return n
	}
	page()
	before := lazy()
	if before == 0 || before >= 1000 {
		b.Fatalf("%d of 1,000 cards are placeholders at first", before)
	}
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`document.querySelector('.viewport').graph.zoom(0.3), true`)); err != nil {
		b.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); lazy() >= before; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("zooming out filled in no placeholder")
		}
	}
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`(() => { const ls = document.querySelectorAll('.card.lazy'); const c = ls[ls.length - 1]; window.lazyID = c.id; c.querySelector('a').focus(); return true })()`)); err != nil {
		b.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		v, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`!document.getElementById(window.lazyID).classList.contains('lazy') && document.activeElement.closest('.card')?.id === window.lazyID`))
		if err == nil && v {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("a focused placeholder was not filled in, or lost the focus")
		}
	}
	med := func(ds []time.Duration) time.Duration { slices.Sort(ds); return ds[len(ds)/2] }
	pm, rm := med(pages), med(raws)
	b.ReportMetric(float64(pm.Microseconds())/1000, "page-p50-ms")
	b.ReportMetric(float64(pages[(len(pages)*99)/100].Microseconds())/1000, "page-p99-ms")
	b.ReportMetric(float64(rm.Microseconds())/1000, "json-p50-ms")
	b.ReportMetric(float64(pm)/float64(rm), "ratio-to-json-p50")
}
