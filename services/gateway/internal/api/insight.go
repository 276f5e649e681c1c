package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/gateway/internal/gitdiff"
)

// verification is a verification as the API shows it: the verifier's
// record (caravan-verifications bucket, key run.<project>.<stage>.<id>)
// without its lease bookkeeping. Result holds each metric's measurements.
type verification struct {
	ID         string          `json:"id"`
	Stage      string          `json:"stage"`
	Promotion  string          `json:"promotion,omitempty"`
	Freight    []string        `json:"freight"`
	Actor      string          `json:"actor,omitempty"`
	Phase      string          `json:"phase"`
	Message    string          `json:"message,omitempty"`
	Summary    string          `json:"summary,omitempty"`
	CreatedAt  time.Time       `json:"createdAt"`
	StartedAt  *time.Time      `json:"startedAt,omitempty"`
	FinishedAt *time.Time      `json:"finishedAt,omitempty"`
	Result     json.RawMessage `json:"result,omitempty"`
}

const verificationPrefix = "run"

func (s *server) listVerifications(w http.ResponseWriter, r *http.Request) {
	st, ok := s.stage(w, r)
	if !ok {
		return
	}
	items, _, err := state.List[verification](r.Context(), s.store.KV(state.Verifications), state.Prefix(verificationPrefix, st.Namespace, st.Name), 0, "")
	if err != nil {
		s.internal(w, r, err)
		return
	}
	out := make([]any, 0, len(items))
	vs := make([]verification, 0, len(items))
	for _, it := range items {
		vs = append(vs, it.Value)
	}
	slices.SortFunc(vs, func(a, b verification) int { return b.CreatedAt.Compare(a.CreatedAt) })
	for _, v := range vs {
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, list{APIVersion: "v1", Kind: "VerificationList", Items: out})
}

func (s *server) getVerification(w http.ResponseWriter, r *http.Request) {
	st, ok := s.stage(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	v, _, err := state.Get[verification](r.Context(), s.store.KV(state.Verifications), state.Key(verificationPrefix, st.Namespace, st.Name, id))
	if !s.loaded(w, r, err, "Verification", id) {
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// pushed is one commit a promotion's git-push step pushed, from its
// output (branch, commit and repoURL).
type pushed struct {
	Step    string `json:"step"`
	RepoURL string `json:"repoURL"`
	Branch  string `json:"branch,omitempty"`
	Commit  string `json:"commit"`
}

// pushes finds the commits a promotion pushed, in step order.
func pushes(p *model.Promotion) []pushed {
	var out []pushed
	seen := map[string]bool{}
	add := func(alias string) {
		o, ok := p.Status.State[alias].(map[string]any)
		if !ok || seen[alias] {
			return
		}
		repo, _ := o["repoURL"].(string)
		commit, _ := o["commit"].(string)
		if repo == "" || commit == "" {
			return
		}
		seen[alias] = true
		branch, _ := o["branch"].(string)
		out = append(out, pushed{Step: alias, RepoURL: repo, Branch: branch, Commit: commit})
	}
	for _, m := range p.Status.StepExecutionMetadata {
		add(m.Alias)
	}
	keys := make([]string, 0, len(p.Status.State))
	for k := range p.Status.State {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		add(k)
	}
	return out
}

// diffs answers what the promotion pushed: for every git-push step, the
// commit's diff against its parent, read from the repository with the
// project's git credentials.
func (s *server) promotionDiff(w http.ResponseWriter, r *http.Request) {
	project, name := r.PathValue("project"), r.PathValue("name")
	p, _, err := state.GetAs[*model.Promotion](r.Context(), s.store, project, model.KindPromotion, name)
	if !s.loaded(w, r, err, model.KindPromotion, name) {
		return
	}
	out := promotionDiff{Promotion: name, Pushes: []pushDiff{}}
	for _, ps := range pushes(p) {
		var d *gitdiff.Diff
		auth, err := s.creds.Find(r.Context(), project, model.CredTypeGit, ps.RepoURL)
		if err == nil {
			d, err = s.git.Diff(r.Context(), ps.RepoURL, ps.Commit, auth)
		}
		pd := pushDiff{pushed: ps, Diff: d}
		if err != nil {
			pd.Error = s.gitError(err)
		}
		out.Pushes = append(out.Pushes, pd)
	}
	writeJSON(w, http.StatusOK, out)
}

// promotionDiff is the answer of GET …/promotions/{name}/diff.
type promotionDiff struct {
	Promotion string     `json:"promotion"`
	Pushes    []pushDiff `json:"pushes"`
}

// pushDiff is one commit a promotion pushed, with its diff.
type pushDiff struct {
	pushed
	Diff  *gitdiff.Diff `json:"diff,omitempty"`
	Error string        `json:"error,omitempty"`
}

// gitError is what a client may see of a git read error: credentials are
// never part of it (go-git does not put them in errors; credential errors
// name the Secret and field, not values), and the detail goes to the log.
func (s *server) gitError(err error) string {
	if errors.Is(err, gitdiff.ErrNotFound) {
		return "the commit is not in the repository (force-pushed away?)"
	}
	s.logger.Warn("read git repository", "err", err)
	msg := err.Error()
	if len(msg) > 300 {
		msg = msg[:300]
	}
	return "cannot read the repository: " + msg
}

// artifactChange is one artifact that differs between two freight.
type artifactChange struct {
	Kind    string `json:"kind"` // image, git or chart
	RepoURL string `json:"repoURL"`
	Name    string `json:"name,omitempty"`
	From    string `json:"from,omitempty"`
	To      string `json:"to,omitempty"`
}

type commitRange struct {
	RepoURL string           `json:"repoURL"`
	From    string           `json:"from"`
	To      string           `json:"to"`
	Commits []gitdiff.Commit `json:"commits"`
	Error   string           `json:"error,omitempty"`
}

// freightComparison is the answer of GET …/freight/{name}/compare/{other}.
type freightComparison struct {
	From      string           `json:"from"`
	To        string           `json:"to"`
	Artifacts []artifactChange `json:"artifacts"`
	Commits   []commitRange    `json:"commits"`
}

// compareFreight answers which artifacts differ between two freight and,
// for git commits of the same repository, the commits between them
// (from the older freight's commit to the newer one's, at most 100).
func (s *server) compareFreight(w http.ResponseWriter, r *http.Request) {
	project := r.PathValue("project")
	a, _, err := s.findFreight(r.Context(), project, r.PathValue("name"))
	if !s.loaded(w, r, err, model.KindFreight, r.PathValue("name")) {
		return
	}
	b, _, err := s.findFreight(r.Context(), project, r.PathValue("other"))
	if !s.loaded(w, r, err, model.KindFreight, r.PathValue("other")) {
		return
	}
	out := freightComparison{From: a.Name, To: b.Name, Artifacts: compareArtifacts(a, b), Commits: []commitRange{}}
	for _, ch := range out.Artifacts {
		if ch.Kind != "git" || ch.From == "" || ch.To == "" {
			continue
		}
		cr := commitRange{RepoURL: ch.RepoURL, From: ch.From, To: ch.To}
		var cs []gitdiff.Commit
		auth, err := s.creds.Find(r.Context(), project, model.CredTypeGit, ch.RepoURL)
		if err == nil {
			cs, err = s.git.Log(r.Context(), ch.RepoURL, ch.From, ch.To, auth, 100)
		}
		if err == nil && len(cs) == 0 {
			// b is older than a: list what a has that b has not.
			cs, err = s.git.Log(r.Context(), ch.RepoURL, ch.To, ch.From, auth, 100)
		}
		cr.Commits = cs
		if err != nil {
			cr.Error = s.gitError(err)
		}
		if cr.Commits == nil {
			cr.Commits = []gitdiff.Commit{}
		}
		out.Commits = append(out.Commits, cr)
	}
	writeJSON(w, http.StatusOK, out)
}

func compareArtifacts(a, b *model.Freight) []artifactChange {
	out := []artifactChange{}
	type key struct{ kind, repo, name string }
	from, to := map[key]string{}, map[key]string{}
	orig := map[key]string{}
	var keys []key
	add := func(m map[key]string, k key, v string) {
		if _, ok := from[k]; !ok {
			if _, ok := to[k]; !ok {
				keys = append(keys, k)
			}
		}
		m[k] = v
	}
	for _, f := range []struct {
		fr *model.Freight
		m  map[key]string
	}{{a, from}, {b, to}} {
		for _, i := range f.fr.Images {
			v := i.Tag
			if v == "" {
				v = i.Digest
			}
			add(f.m, key{"image", i.RepoURL, ""}, v)
		}
		for _, c := range f.fr.Commits {
			k := key{"git", model.NormalizeGitURL(c.RepoURL), ""}
			if _, ok := orig[k]; !ok {
				orig[k] = c.RepoURL
			}
			add(f.m, k, c.ID)
		}
		for _, c := range f.fr.Charts {
			add(f.m, key{"chart", c.RepoURL, c.Name}, c.Version)
		}
	}
	for _, k := range keys {
		if from[k] != to[k] {
			repo := k.repo
			if o, ok := orig[k]; ok {
				repo = o
			}
			out = append(out, artifactChange{Kind: k.kind, RepoURL: repo, Name: k.name, From: from[k], To: to[k]})
		}
	}
	slices.SortStableFunc(out, func(x, y artifactChange) int {
		return strings.Compare(x.Kind+x.RepoURL+x.Name, y.Kind+y.RepoURL+y.Name)
	})
	return out
}
