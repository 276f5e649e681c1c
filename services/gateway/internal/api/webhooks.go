package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"golang.org/x/time/rate"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/gateway/internal/webhook"
)

// receiver is one configured webhook receiver with its secret.
type receiver struct {
	name, provider, secret string
	virtualRepo            string
	actions                []map[string]any
}

// providerOf returns the receiver's provider and secret name.
func providerOf(rc *model.WebhookReceiverConfig) (provider, secretName string) {
	set := []struct {
		name string
		ref  *model.WebhookReceiverSecret
	}{
		{webhook.GitHub, rc.GitHub}, {webhook.GitLab, rc.GitLab}, {webhook.Gitea, rc.Gitea},
		{webhook.Bitbucket, rc.Bitbucket}, {webhook.Quay, rc.Quay}, {webhook.DockerHub, rc.DockerHub},
		{webhook.Harbor, rc.Harbor}, {webhook.Registry, rc.Registry}, {webhook.Azure, rc.Azure},
	}
	for _, p := range set {
		if p.ref != nil {
			return p.name, p.ref.SecretRef.Name
		}
	}
	if rc.Artifactory != nil {
		return webhook.Artifactory, rc.Artifactory.SecretRef.Name
	}
	if rc.Generic != nil {
		return webhook.Generic, rc.Generic.SecretRef.Name
	}
	return "", ""
}

// secrets caches the Secrets read while resolving one request's receivers
// (several receivers often share one Secret); nil values are absent ones.
type secrets map[string]*model.Secret

// loadReceiver resolves a receiver's secret; ok is false when the Secret or
// its key is missing (the receiver then has no path).
func (s *server) loadReceiver(ctx context.Context, project string, rc *model.WebhookReceiverConfig, cache secrets) (receiver, bool, error) {
	provider, secretName := providerOf(rc)
	if provider == "" || secretName == "" {
		return receiver{}, false, nil
	}
	sec, cached := cache[secretName]
	if !cached {
		var err error
		sec, _, err = state.GetAs[*model.Secret](ctx, s.store, project, model.KindSecret, secretName)
		if errors.Is(err, state.ErrNotFound) {
			sec = nil
		} else if err != nil {
			return receiver{}, false, err
		}
		cache[secretName] = sec
	}
	if sec == nil {
		return receiver{}, false, nil
	}
	for _, key := range webhook.SecretKeys[provider] {
		if v, ok := sec.Value(key); ok && len(v) > 0 {
			r := receiver{name: rc.Name, provider: provider, secret: string(v)}
			if rc.Artifactory != nil {
				r.virtualRepo = rc.Artifactory.VirtualRepoName
			}
			if rc.Generic != nil {
				r.actions = rc.Generic.Actions
			}
			return r, true, nil
		}
	}
	return receiver{}, false, nil
}

// receiverDetails computes status.webhookReceivers[] of a ProjectConfig.
func (s *server) receiverDetails(ctx context.Context, pc *model.ProjectConfig) ([]model.WebhookReceiverDetails, error) {
	var out []model.WebhookReceiverDetails
	cache := secrets{}
	for i := range pc.Spec.WebhookReceivers {
		rc := &pc.Spec.WebhookReceivers[i]
		d := model.WebhookReceiverDetails{Name: rc.Name}
		r, ok, err := s.loadReceiver(ctx, pc.Namespace, rc, cache)
		if err != nil {
			return nil, err
		}
		if ok {
			d.Path = webhook.Path(pc.Namespace, r.name, r.secret)
			if s.external != "" {
				d.URL = s.external + d.Path
			}
		}
		out = append(out, d)
	}
	return out, nil
}

// findReceiver returns the project's receiver whose path is path.
func (s *server) findReceiver(ctx context.Context, project, path string) (receiver, bool, error) {
	obj, _, err := s.store.GetObject(ctx, project, model.KindProjectConfig, project)
	if errors.Is(err, state.ErrNotFound) {
		return receiver{}, false, nil
	}
	if err != nil {
		return receiver{}, false, err
	}
	pc, ok := obj.(*model.ProjectConfig)
	if !ok {
		return receiver{}, false, nil
	}
	cache := secrets{}
	for i := range pc.Spec.WebhookReceivers {
		r, ok, err := s.loadReceiver(ctx, project, &pc.Spec.WebhookReceivers[i], cache)
		if err != nil {
			return receiver{}, false, err
		}
		if ok && webhook.Path(project, r.name, r.secret) == path {
			return r, true, nil
		}
	}
	return receiver{}, false, nil
}

// limiter is one receiver's rate limiter.
type limiter struct {
	*rate.Limiter
	used time.Time
}

// unknownScale is how many times a receiver's budget all unknown paths
// share across projects.
const unknownScale = 50

// knownFor is how long a path that matched a receiver keeps its own budget
// without deliveries.
const knownFor = 24 * time.Hour

// admit decides, before anything is read from KV or decrypted, whether a
// delivery to path is looked at. A path that matched a receiver before
// spends that receiver's budget (Rate, Burst). Any other path spends the
// budget of unknown paths of its project and a larger one of all unknown
// paths, so made-up paths cost a bounded number of KV reads and decrypts,
// and a flood of them in one project leaves the other projects' and the
// known receivers' deliveries alone.
func (s *server) admit(project, path string) bool {
	s.limitersMu.Lock()
	defer s.limitersMu.Unlock()
	now := s.now()
	if seen, ok := s.known[path]; ok && now.Sub(seen) < knownFor {
		return s.take(path, 1, now)
	}
	return s.take(unknownAll, unknownScale, now) && s.take(unknownPrefix+project, 1, now)
}

// Keys of the unknown-path budgets.
const (
	unknownAll    = "\x00unknown"
	unknownPrefix = "\x00unknown:"
)

// matched records that path is a receiver's and takes the delivery from
// that receiver's budget when it was not known yet.
func (s *server) matched(path string, wasKnown bool) bool {
	s.limitersMu.Lock()
	defer s.limitersMu.Unlock()
	now := s.now()
	if len(s.known) > 10000 {
		for p, seen := range s.known {
			if now.Sub(seen) > knownFor {
				delete(s.known, p)
			}
		}
	}
	s.known[path] = now
	if wasKnown {
		return true
	}
	return s.take(path, 1, now)
}

// take takes one delivery from the budget key (scale times a receiver's).
// The caller holds limitersMu.
func (s *server) take(key string, scale int, now time.Time) bool {
	l, ok := s.limiters[key]
	if !ok {
		if len(s.limiters) > 10000 { // forget idle budgets
			for k, v := range s.limiters {
				if now.Sub(v.used) > time.Hour {
					delete(s.limiters, k)
				}
			}
		}
		l = &limiter{Limiter: rate.NewLimiter(rate.Limit(s.hooks.Rate*float64(scale)), s.hooks.Burst*scale)}
		s.limiters[key] = l
	}
	l.used = now
	return l.AllowN(now, 1)
}

func (s *server) isKnown(path string) bool {
	s.limitersMu.Lock()
	defer s.limitersMu.Unlock()
	seen, ok := s.known[path]
	return ok && s.now().Sub(seen) < knownFor
}

// hookAnswer is the body of a webhook answer.
type hookAnswer struct {
	Status    string   `json:"status"`
	Reason    string   `json:"reason,omitempty"`
	Delivery  string   `json:"delivery,omitempty"`
	Refreshed []string `json:"refreshed,omitempty"`
	// Promoted names the Promotions a generic receiver's Promote actions
	// created.
	Promoted []string `json:"promoted,omitempty"`
}

func (s *server) webhook(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	project := r.PathValue("project")
	path := "/webhooks/" + project + "/" + r.PathValue("receiver")
	limited := func() {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(1/s.hooks.Rate))))
		writeError(w, http.StatusTooManyRequests, codeRateLimited, "too many deliveries to this receiver; retry later")
	}
	known := s.isKnown(path)
	if !s.admit(project, path) {
		limited()
		return
	}
	rcv, ok, err := s.findReceiver(ctx, project, path)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if !ok {
		writeError(w, http.StatusNotFound, codeNotFound, "no webhook receiver at this path")
		return
	}
	if !s.matched(path, known) {
		limited()
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.hooks.MaxBodyBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, codeTooLarge, fmt.Sprintf("the body is larger than %d bytes", tooLarge.Limit))
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, codeInvalid, "cannot read the body")
		return
	}
	if err := webhook.Verify(rcv.provider, rcv.secret, r.Header, body); err != nil {
		w.Header().Set("WWW-Authenticate", `Signature realm="caravan-webhook"`)
		writeError(w, http.StatusUnauthorized, codeUnauthorized, "the delivery's signature or token is missing or wrong")
		return
	}
	var (
		id        string
		pr        *webhook.PullRequest
		artifacts []webhook.Artifact
		targets   []webhook.Target
		promotes  []webhook.Promote
		ignored   string
		problems  []string
		ping      bool
	)
	switch rcv.provider {
	case webhook.Generic:
		res, err := webhook.ParseGeneric(rcv.actions, r.Method, r.URL.String(), r.Header, body)
		if err != nil {
			writeError(w, http.StatusBadRequest, codeInvalid, err.Error())
			return
		}
		id, targets, promotes, ignored, problems = res.ID, res.Targets, res.Promotions, res.Ignored, res.Problems
	default:
		var d webhook.Delivery
		if rcv.provider == webhook.Artifactory {
			d, err = webhook.ParseArtifactory(body, rcv.virtualRepo)
		} else {
			d, err = webhook.Parse(rcv.provider, r.Header, body)
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, codeInvalid, err.Error())
			return
		}
		id, artifacts, ignored, ping, pr = d.ID, d.Artifacts, d.Ignored, d.Ping, d.PullRequest
	}
	if ping {
		writeJSON(w, http.StatusOK, hookAnswer{Status: "pong", Delivery: id})
		return
	}
	if ignored != "" {
		writeJSON(w, http.StatusOK, hookAnswer{Status: "ignored", Reason: ignored, Delivery: id})
		return
	}
	key := path + "\n" + id
	if strings.HasPrefix(id, "sha256:") {
		// No delivery ID from the sender: an identical body is a replay
		// only within the same minute (a tag pushed again later counts).
		key += "\n" + strconv.FormatInt(s.now().Unix()/60, 10)
	}
	sum := sha256.Sum256([]byte(key))
	dedupe := hex.EncodeToString(sum[:])
	kv := s.store.KV(state.WebhookDeliveries)
	if _, err := state.Create(ctx, kv, dedupe, s.now().Unix()); err != nil {
		if errors.Is(err, state.ErrExists) {
			writeJSON(w, http.StatusOK, hookAnswer{Status: "duplicate", Reason: "this delivery was handled already", Delivery: id})
			return
		}
		s.internal(w, r, err)
		return
	}
	refreshed, err := s.refreshMatching(ctx, project, rcv, id, artifacts, targets)
	var promoted []string
	if err == nil && len(promotes) > 0 {
		var unpromoted []string
		promoted, unpromoted, err = s.promoteMatching(ctx, project, rcv, id, promotes)
		problems = append(problems, unpromoted...)
	}
	if err == nil && pr != nil {
		ev := events.PullRequestClosed{RepoURL: pr.RepoURL, Number: pr.Number, Merged: pr.Merged, MergeCommit: pr.MergeCommit, Branch: pr.Branch, Provider: rcv.provider}
		evID := fmt.Sprintf("PullRequestClosed.%s.%x", project, sha256.Sum256([]byte(key)))
		_, err = s.bus.PublishWithID(ctx, evID, project, events.Ref{Kind: "Repository", Name: pr.RepoURL}, ev)
	}
	if err != nil {
		_ = kv.Delete(context.WithoutCancel(ctx), dedupe) // let the sender's retry through
		s.internal(w, r, err)
		return
	}
	if len(promoted) > 0 {
		noteAudit(r, "", "Promotion/"+strings.Join(promoted, ",Promotion/"), "")
	}
	writeJSON(w, http.StatusAccepted, hookAnswer{Status: "accepted", Reason: strings.Join(problems, "; "), Delivery: id, Refreshed: refreshed, Promoted: promoted})
}

// promoteMatching creates one Promotion into each Stage a generic
// receiver's Promote action selects (the first action selecting a Stage
// wins), of the freight the action names or else of the newest freight
// available to the Stage. What cannot be promoted (a control-flow Stage,
// freight unknown or not available, closed promotion windows) is returned
// as a problem; only a store or bus failure is an error. A promotion's
// name is derived from the delivery, the receiver and the Stage, so the
// sender's retry of a failed delivery finds the promotions the first try
// stored.
func (s *server) promoteMatching(ctx context.Context, project string, rcv receiver, id string, promotes []webhook.Promote) (promoted, problems []string, err error) {
	objs, _, err := s.collect(ctx, project, model.KindStage, 0, "", nil)
	if err != nil {
		return nil, nil, err
	}
	pol, err := state.LoadPolicies(ctx, s.store, project)
	if err != nil {
		return nil, nil, err
	}
	now := s.now()
	by := "webhook:" + rcv.name
	for _, o := range objs {
		st, ok := o.(*model.Stage)
		if !ok {
			continue
		}
		i := slices.IndexFunc(promotes, func(p webhook.Promote) bool { return p.Selects(st.Name, st.Labels, nil) })
		if i < 0 {
			continue
		}
		want := promotes[i]
		if st.IsControlFlow() {
			problems = append(problems, fmt.Sprintf("stage %q is a control-flow stage: nothing is promoted into it", st.Name))
			continue
		}
		if ws := model.WindowStatus(pol.Windows(st), now); ws != nil && ws.Closed {
			problems = append(problems, fmt.Sprintf("promotion windows do not let stage %q promote now: %s", st.Name, ws.Reason))
			continue
		}
		var f *model.Freight
		if want.Freight != "" {
			f, _, err = s.findFreight(ctx, project, want.Freight)
			switch {
			case errors.Is(err, state.ErrNotFound):
				problems = append(problems, fmt.Sprintf("stage %q: freight %q not found", st.Name, want.Freight))
				continue
			case err != nil:
				return nil, nil, err
			}
			if ok, why := model.FreightAvailable(f, st, now); !ok {
				problems = append(problems, fmt.Sprintf("freight %s is not available to stage %q: %s", f.Name, st.Name, why))
				continue
			}
		} else {
			if f, err = s.newestAvailable(ctx, st, want.Warehouse, now); err != nil {
				return nil, nil, err
			}
			if f == nil {
				problems = append(problems, fmt.Sprintf("no freight is available to stage %q", st.Name))
				continue
			}
		}
		seed := sha256.Sum256([]byte(rcv.name + "\n" + id + "\n" + st.Name))
		pid, err := ulid.New(ulid.Timestamp(now.Truncate(time.Minute)), bytes.NewReader(seed[:]))
		if err != nil {
			return nil, nil, err
		}
		p := model.NewPromotion(st, f, pid.String(), by, now)
		p.Annotations[model.AnnotationCreateActor] = by
		if p, err = s.storePromotion(ctx, p); err != nil {
			return nil, nil, err
		}
		ev := events.PromotionRequested{Promotion: p.Name, Stage: st.Name, Freight: p.Spec.Freight}
		if _, err := s.bus.PublishWithID(ctx, "PromotionRequested."+project+"."+p.Name, project, events.Ref{Kind: model.KindPromotion, Name: p.Name}, ev); err != nil {
			return nil, nil, err
		}
		promoted = append(promoted, p.Name)
	}
	return promoted, problems, nil
}

// refreshMatching publishes WarehouseRefreshRequested for every Warehouse
// of the project subscribed to an artifact (with the artifact as hint) or
// selected by a generic target.
func (s *server) refreshMatching(ctx context.Context, project string, rcv receiver, id string, artifacts []webhook.Artifact, targets []webhook.Target) ([]string, error) {
	objs, _, err := s.collect(ctx, project, model.KindWarehouse, 0, "", nil)
	if err != nil {
		return nil, err
	}
	var refreshed []string
	reason := fmt.Sprintf("webhook receiver %q (%s)", rcv.name, rcv.provider)
	for _, o := range objs {
		wh, ok := o.(*model.Warehouse)
		if !ok {
			continue
		}
		var hints []*events.ArtifactHint
		for i := range artifacts {
			if subscribed(wh, artifacts[i]) {
				h := artifacts[i].Hint
				hints = append(hints, &h)
			}
		}
		for _, t := range targets {
			if selects(t, wh) {
				hints = append(hints, nil)
				break
			}
		}
		for i, h := range hints {
			evID := fmt.Sprintf("WarehouseRefreshRequested.%s.%s.%x.%d", project, wh.Name, sha256.Sum256([]byte(rcv.name+"\n"+id)), i)
			ev := events.WarehouseRefreshRequested{Warehouse: wh.Name, Hint: h, Reason: reason}
			if _, err := s.bus.PublishWithID(ctx, evID, project, events.Ref{Kind: model.KindWarehouse, Name: wh.Name}, ev); err != nil {
				return nil, err
			}
		}
		if len(hints) > 0 {
			refreshed = append(refreshed, wh.Name)
		}
	}
	return refreshed, nil
}

// subscribed reports whether the Warehouse subscribes to the artifact's
// repository, comparing normalized URLs.
func subscribed(wh *model.Warehouse, a webhook.Artifact) bool {
	for _, sub := range wh.Spec.Subscriptions {
		switch {
		case a.Kind == webhook.KindGit && sub.Git != nil:
			want := model.NormalizeGitURL(sub.Git.RepoURL)
			for _, u := range a.RepoURLs {
				if model.NormalizeGitURL(u) == want {
					return true
				}
			}
		case a.Kind == webhook.KindImage && sub.Image != nil:
			for _, u := range a.RepoURLs {
				if model.NormalizeImageURL(u) == model.NormalizeImageURL(sub.Image.RepoURL) {
					return true
				}
			}
		case a.Kind == webhook.KindImage && sub.Chart != nil:
			for _, u := range a.RepoURLs {
				if model.NormalizeChartURL(sub.Chart.RepoURL) == model.NormalizeImageURL(u) {
					return true
				}
			}
		}
	}
	return false
}

// selects reports whether a generic receiver's target selects wh; its
// subscribedURLs index is the normalized URL of each subscription.
func selects(t webhook.Target, wh *model.Warehouse) bool {
	var urls []string
	if len(t.Indices) > 0 {
		for _, sub := range wh.Spec.Subscriptions {
			switch {
			case sub.Git != nil:
				urls = append(urls, model.NormalizeGitURL(sub.Git.RepoURL))
			case sub.Image != nil:
				urls = append(urls, model.NormalizeImageURL(sub.Image.RepoURL))
			case sub.Chart != nil:
				urls = append(urls, model.NormalizeChartURL(sub.Chart.RepoURL))
			}
		}
	}
	return t.Selects(wh.Name, wh.Labels, urls)
}
