package webhook

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/caravan-cd/caravan/pkg/events"
)

// Artifact kinds.
const (
	KindGit   = "git"
	KindImage = "image"
)

// Artifact is one repository a delivery announces a change of.
type Artifact struct {
	// Kind is KindGit or KindImage (an image repository may also hold
	// OCI Helm charts).
	Kind string
	// RepoURLs are the repository's URLs as the payload gives them
	// (clone, SSH, web); a subscription matching any of them is refreshed.
	RepoURLs []string
	// Hint is what changed; its RepoURL is the first of RepoURLs.
	Hint events.ArtifactHint
}

// Delivery is what one webhook request says.
type Delivery struct {
	// ID identifies the delivery (the sender's delivery ID, or the SHA-256
	// of the body when the sender gives none), to ignore replays.
	ID string
	// Event is the sender's event name.
	Event string
	// Ping is a connectivity check (GitHub's ping).
	Ping bool
	// Ignored says why the delivery announces nothing ("" when it counts).
	Ignored string
	// Artifacts are the repositories that changed.
	Artifacts []Artifact
	// PullRequest is set when a pull (merge) request was closed, merged
	// or not.
	PullRequest *PullRequest
}

// PullRequest is a closed pull (merge) request.
type PullRequest struct {
	RepoURL     string
	Number      int64
	Merged      bool
	MergeCommit string
	Branch      string
}

// Parse reads a delivery of provider (any but Generic, see ParseGeneric).
// It returns ErrBadPayload for a body the provider would not send; an
// event it does not act on comes back with Ignored set.
func Parse(provider string, h http.Header, body []byte) (Delivery, error) {
	var (
		d   Delivery
		err error
	)
	switch provider {
	case GitHub:
		d, err = parseGitHub(h, body)
	case GitLab:
		d, err = parseGitLab(h, body)
	case Gitea:
		d, err = parseGitea(h, body)
	case Bitbucket:
		d, err = parseBitbucket(h, body)
	case Quay:
		d, err = parseQuay(body)
	case DockerHub:
		d, err = parseDockerHub(body)
	case Harbor:
		d, err = parseHarbor(body)
	case Artifactory:
		d, err = parseArtifactory(body, "")
	case Registry:
		d, err = parseRegistry(body)
	case Azure:
		d, err = parseAzure(h, body)
	default:
		return Delivery{}, ErrUnknownProvider
	}
	if err != nil {
		return Delivery{}, err
	}
	if d.ID == "" {
		sum := sha256.Sum256(body)
		d.ID = "sha256:" + hex.EncodeToString(sum[:])
	}
	if d.Ignored == "" && !d.Ping && len(d.Artifacts) == 0 && d.PullRequest == nil {
		d.Ignored = "the delivery names no artifact"
	}
	return d, nil
}

// ParseArtifactory is Parse for Artifactory with the receiver's
// virtualRepoName, which replaces the repository key in image URLs.
func ParseArtifactory(body []byte, virtualRepo string) (Delivery, error) {
	d, err := parseArtifactory(body, virtualRepo)
	if err != nil {
		return Delivery{}, err
	}
	if d.ID == "" {
		sum := sha256.Sum256(body)
		d.ID = "sha256:" + hex.EncodeToString(sum[:])
	}
	return d, nil
}

func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%w: %w", ErrBadPayload, err)
	}
	return nil
}

// gitArtifact builds a Git artifact from a ref ("refs/heads/main",
// "refs/tags/v1"), a commit and changed paths.
func gitArtifact(urls []string, ref, commit string, paths []string) Artifact {
	urls = compact(urls)
	a := Artifact{Kind: KindGit, RepoURLs: urls, Hint: events.ArtifactHint{Commit: commit}}
	if len(urls) > 0 {
		a.Hint.RepoURL = urls[0]
	}
	switch {
	case strings.HasPrefix(ref, "refs/tags/"):
		a.Hint.Tag = strings.TrimPrefix(ref, "refs/tags/")
	case strings.HasPrefix(ref, "refs/heads/"):
		a.Hint.Branch = strings.TrimPrefix(ref, "refs/heads/")
	case ref != "":
		a.Hint.Branch = ref
	}
	if len(paths) > 0 {
		slices.Sort(paths)
		a.Hint.Paths = slices.Compact(paths)
	}
	return a
}

// imageArtifact builds an image artifact from a repository reference
// ("host/ns/name", possibly with ":tag" or "@digest").
func imageArtifact(repo, tag, digest string) Artifact {
	repo = stripReference(strings.TrimSpace(repo))
	return Artifact{Kind: KindImage, RepoURLs: []string{repo}, Hint: events.ArtifactHint{RepoURL: repo, Tag: tag, Digest: digest}}
}

// stripReference drops a ":tag" and an "@digest" from an image reference.
func stripReference(ref string) string {
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndex(ref, ":"); i >= 0 && !strings.Contains(ref[i:], "/") {
		ref = ref[:i]
	}
	return ref
}

func compact(ss []string) []string {
	out := ss[:0:0]
	for _, s := range ss {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// commitPaths are the files a list of commits touched.
type commitPaths struct {
	Added    []string `json:"added"`
	Removed  []string `json:"removed"`
	Modified []string `json:"modified"`
}

func allPaths(cs []commitPaths) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Added...)
		out = append(out, c.Removed...)
		out = append(out, c.Modified...)
	}
	return out
}

// hubRepository is the repository object of GitHub and Gitea payloads.
type hubRepository struct {
	CloneURL string `json:"clone_url"`
	SSHURL   string `json:"ssh_url"`
	HTMLURL  string `json:"html_url"`
	FullName string `json:"full_name"`
}

func (r hubRepository) urls() []string { return []string{r.CloneURL, r.SSHURL, r.HTMLURL} }

type hubPush struct {
	Ref        string        `json:"ref"`
	After      string        `json:"after"`
	Deleted    bool          `json:"deleted"`
	Repository hubRepository `json:"repository"`
	Commits    []commitPaths `json:"commits"`
	HeadCommit *commitPaths  `json:"head_commit"`
}

func (p hubPush) delivery(event string) (Delivery, error) {
	d := Delivery{Event: event}
	if p.Repository.CloneURL == "" && p.Repository.HTMLURL == "" && p.Repository.SSHURL == "" {
		return d, fmt.Errorf("%w: push without repository", ErrBadPayload)
	}
	if p.Deleted || strings.Trim(p.After, "0") == "" {
		d.Ignored = "a deleted ref"
		return d, nil
	}
	cs := p.Commits
	if p.HeadCommit != nil {
		cs = append(cs, *p.HeadCommit)
	}
	d.Artifacts = []Artifact{gitArtifact(p.Repository.urls(), p.Ref, p.After, allPaths(cs))}
	return d, nil
}

type hubPullRequest struct {
	Action      string `json:"action"`
	Number      int64  `json:"number"`
	PullRequest struct {
		Number         int64  `json:"number"`
		Merged         bool   `json:"merged"`
		MergeCommitSHA string `json:"merge_commit_sha"`
		Base           struct {
			Ref string `json:"ref"`
		} `json:"base"`
	} `json:"pull_request"`
	Repository hubRepository `json:"repository"`
}

// delivery: a closed pull request is announced; a merged one is also a
// new commit on its base branch.
func (p hubPullRequest) delivery(event string) Delivery {
	d := Delivery{Event: event}
	if p.Action != "closed" {
		d.Ignored = "only closed pull requests count"
		return d
	}
	pr := p.PullRequest
	number := pr.Number
	if number == 0 {
		number = p.Number
	}
	urls := compact(p.Repository.urls())
	if len(urls) == 0 {
		d.Ignored = "a pull request without repository"
		return d
	}
	d.PullRequest = &PullRequest{RepoURL: urls[0], Number: number, Merged: pr.Merged, MergeCommit: pr.MergeCommitSHA, Branch: pr.Base.Ref}
	if pr.Merged {
		d.Artifacts = []Artifact{gitArtifact(urls, "refs/heads/"+pr.Base.Ref, pr.MergeCommitSHA, nil)}
	}
	return d
}

func parseGitHub(h http.Header, body []byte) (Delivery, error) {
	event := h.Get("X-GitHub-Event")
	id := h.Get("X-GitHub-Delivery")
	var (
		d   Delivery
		err error
	)
	switch event {
	case "ping":
		var p struct {
			Zen string `json:"zen"`
		}
		err = decode(body, &p)
		d = Delivery{Event: event, Ping: true}
	case "push":
		var p hubPush
		if err = decode(body, &p); err == nil {
			d, err = p.delivery(event)
		}
	case "pull_request":
		var p hubPullRequest
		if err = decode(body, &p); err == nil {
			d = p.delivery(event)
		}
	case "package", "registry_package":
		d, err = parseGitHubPackage(event, body)
	default:
		d = Delivery{Event: event, Ignored: fmt.Sprintf("GitHub event %q is not handled", event)}
	}
	d.ID = id
	return d, err
}

type ghPackage struct {
	Name           string `json:"name"`
	Namespace      string `json:"namespace"`
	PackageType    string `json:"package_type"`
	PackageVersion struct {
		Version           string `json:"version"`
		PackageURL        string `json:"package_url"`
		ContainerMetadata *struct {
			Tag struct {
				Name   string `json:"name"`
				Digest string `json:"digest"`
			} `json:"tag"`
		} `json:"container_metadata"`
	} `json:"package_version"`
	Registry *struct {
		URL string `json:"url"`
	} `json:"registry"`
}

func parseGitHubPackage(event string, body []byte) (Delivery, error) {
	var p struct {
		Action          string     `json:"action"`
		Package         *ghPackage `json:"package"`
		RegistryPackage *ghPackage `json:"registry_package"`
	}
	if err := decode(body, &p); err != nil {
		return Delivery{}, err
	}
	d := Delivery{Event: event}
	pkg := p.Package
	if pkg == nil {
		pkg = p.RegistryPackage
	}
	if pkg == nil {
		return d, fmt.Errorf("%w: %s event without a package", ErrBadPayload, event)
	}
	if p.Action != "published" {
		d.Ignored = fmt.Sprintf("package action %q is not handled", p.Action)
		return d, nil
	}
	if t := strings.ToLower(pkg.PackageType); t != "container" && t != "docker" {
		d.Ignored = fmt.Sprintf("package type %q is not an image", pkg.PackageType)
		return d, nil
	}
	repo := pkg.PackageVersion.PackageURL
	if repo == "" {
		host := "ghcr.io"
		if pkg.Registry != nil && pkg.Registry.URL != "" {
			if u, err := url.Parse(pkg.Registry.URL); err == nil && u.Host != "" {
				host = u.Host
			}
		}
		repo = host + "/" + pkg.Namespace + "/" + pkg.Name
	}
	var tag, digest string
	if m := pkg.PackageVersion.ContainerMetadata; m != nil {
		tag, digest = m.Tag.Name, m.Tag.Digest
	}
	if digest == "" && strings.HasPrefix(pkg.PackageVersion.Version, "sha256:") {
		digest = pkg.PackageVersion.Version
	}
	d.Artifacts = []Artifact{imageArtifact(strings.ToLower(repo), tag, digest)}
	return d, nil
}

func parseGitea(h http.Header, body []byte) (Delivery, error) {
	event := h.Get("X-Gitea-Event")
	if event == "" {
		event = h.Get("X-Gogs-Event")
	}
	id := h.Get("X-Gitea-Delivery")
	if id == "" {
		id = h.Get("X-Gogs-Delivery")
	}
	var (
		d   Delivery
		err error
	)
	switch event {
	case "push":
		var p hubPush
		if err = decode(body, &p); err == nil {
			d, err = p.delivery(event)
		}
	case "pull_request":
		var p hubPullRequest
		if err = decode(body, &p); err == nil {
			d = p.delivery(event)
		}
	default:
		d = Delivery{Event: event, Ignored: fmt.Sprintf("Gitea event %q is not handled", event)}
	}
	d.ID = id
	return d, err
}

func parseGitLab(h http.Header, body []byte) (Delivery, error) {
	event := h.Get("X-Gitlab-Event")
	id := h.Get("X-Gitlab-Event-UUID")
	if id == "" {
		id = h.Get("X-Gitlab-Webhook-UUID")
	}
	type project struct {
		GitHTTPURL string `json:"git_http_url"`
		GitSSHURL  string `json:"git_ssh_url"`
		WebURL     string `json:"web_url"`
	}
	var p struct {
		ObjectKind       string        `json:"object_kind"`
		Ref              string        `json:"ref"`
		After            string        `json:"after"`
		CheckoutSHA      string        `json:"checkout_sha"`
		Project          project       `json:"project"`
		Commits          []commitPaths `json:"commits"`
		ObjectAttributes struct {
			IID            int64  `json:"iid"`
			Action         string `json:"action"`
			State          string `json:"state"`
			TargetBranch   string `json:"target_branch"`
			MergeCommitSHA string `json:"merge_commit_sha"`
		} `json:"object_attributes"`
	}
	d := Delivery{Event: event, ID: id}
	switch event {
	case "Push Hook", "Tag Push Hook", "Merge Request Hook":
	default:
		d.Ignored = fmt.Sprintf("GitLab event %q is not handled", event)
		return d, nil
	}
	if err := decode(body, &p); err != nil {
		return d, err
	}
	urls := []string{p.Project.GitHTTPURL, p.Project.GitSSHURL, p.Project.WebURL}
	if len(compact(urls)) == 0 {
		return d, fmt.Errorf("%w: %s without project", ErrBadPayload, event)
	}
	if event == "Merge Request Hook" {
		a := p.ObjectAttributes
		merged := a.Action == "merge" || a.State == "merged"
		if !merged && a.Action != "close" && a.State != "closed" {
			d.Ignored = "only merged or closed merge requests count"
			return d, nil
		}
		d.PullRequest = &PullRequest{RepoURL: compact(urls)[0], Number: a.IID, Merged: merged, MergeCommit: a.MergeCommitSHA, Branch: a.TargetBranch}
		if merged {
			d.Artifacts = []Artifact{gitArtifact(urls, "refs/heads/"+a.TargetBranch, a.MergeCommitSHA, nil)}
		}
		return d, nil
	}
	commit := p.CheckoutSHA
	if commit == "" {
		commit = p.After
	}
	if strings.Trim(commit, "0") == "" {
		d.Ignored = "a deleted ref"
		return d, nil
	}
	d.Artifacts = []Artifact{gitArtifact(urls, p.Ref, commit, allPaths(p.Commits))}
	return d, nil
}

func parseBitbucket(h http.Header, body []byte) (Delivery, error) {
	event := h.Get("X-Event-Key")
	id := h.Get("X-Request-UUID")
	d := Delivery{Event: event, ID: id}
	type repository struct {
		FullName string `json:"full_name"`
		Links    struct {
			HTML struct {
				Href string `json:"href"`
			} `json:"html"`
		} `json:"links"`
	}
	urlsOf := func(r repository) []string {
		urls := []string{r.Links.HTML.Href}
		if r.FullName != "" {
			urls = append(urls, "https://bitbucket.org/"+r.FullName, "git@bitbucket.org:"+r.FullName+".git")
		}
		return compact(urls)
	}
	switch event {
	case "repo:push":
		var p struct {
			Push struct {
				Changes []struct {
					New *struct {
						Type   string `json:"type"`
						Name   string `json:"name"`
						Target struct {
							Hash string `json:"hash"`
						} `json:"target"`
					} `json:"new"`
				} `json:"changes"`
			} `json:"push"`
			Repository repository `json:"repository"`
		}
		if err := decode(body, &p); err != nil {
			return d, err
		}
		urls := urlsOf(p.Repository)
		if len(urls) == 0 {
			return d, fmt.Errorf("%w: push without repository", ErrBadPayload)
		}
		for _, c := range p.Push.Changes {
			if c.New == nil {
				continue // a deleted branch or tag
			}
			ref := "refs/heads/" + c.New.Name
			if c.New.Type == "tag" {
				ref = "refs/tags/" + c.New.Name
			}
			d.Artifacts = append(d.Artifacts, gitArtifact(urls, ref, c.New.Target.Hash, nil))
		}
		if len(d.Artifacts) == 0 {
			d.Ignored = "only deleted refs"
		}
		return d, nil
	case "pullrequest:fulfilled", "pullrequest:rejected":
		var p struct {
			PullRequest struct {
				ID          int64 `json:"id"`
				Destination struct {
					Branch struct {
						Name string `json:"name"`
					} `json:"branch"`
				} `json:"destination"`
				MergeCommit *struct {
					Hash string `json:"hash"`
				} `json:"merge_commit"`
			} `json:"pullrequest"`
			Repository repository `json:"repository"`
		}
		if err := decode(body, &p); err != nil {
			return d, err
		}
		urls := urlsOf(p.Repository)
		if len(urls) == 0 {
			return d, fmt.Errorf("%w: pull request without repository", ErrBadPayload)
		}
		commit := ""
		if p.PullRequest.MergeCommit != nil {
			commit = p.PullRequest.MergeCommit.Hash
		}
		merged := event == "pullrequest:fulfilled"
		branch := p.PullRequest.Destination.Branch.Name
		d.PullRequest = &PullRequest{RepoURL: urls[0], Number: p.PullRequest.ID, Merged: merged, MergeCommit: commit, Branch: branch}
		if merged {
			d.Artifacts = []Artifact{gitArtifact(urls, "refs/heads/"+branch, commit, nil)}
		}
		return d, nil
	}
	d.Ignored = fmt.Sprintf("Bitbucket event %q is not handled", event)
	return d, nil
}

func parseQuay(body []byte) (Delivery, error) {
	var p struct {
		Repository  string   `json:"repository"`
		DockerURL   string   `json:"docker_url"`
		UpdatedTags []string `json:"updated_tags"`
	}
	if err := decode(body, &p); err != nil {
		return Delivery{}, err
	}
	d := Delivery{Event: "repo_push"}
	repo := p.DockerURL
	if repo == "" && p.Repository != "" {
		repo = "quay.io/" + p.Repository
	}
	if repo == "" {
		return d, fmt.Errorf("%w: no docker_url", ErrBadPayload)
	}
	if len(p.UpdatedTags) == 0 {
		d.Artifacts = []Artifact{imageArtifact(repo, "", "")}
	}
	for _, tag := range p.UpdatedTags {
		d.Artifacts = append(d.Artifacts, imageArtifact(repo, tag, ""))
	}
	return d, nil
}

func parseDockerHub(body []byte) (Delivery, error) {
	var p struct {
		PushData *struct {
			Tag string `json:"tag"`
		} `json:"push_data"`
		Repository struct {
			RepoName string `json:"repo_name"`
		} `json:"repository"`
	}
	if err := decode(body, &p); err != nil {
		return Delivery{}, err
	}
	d := Delivery{Event: "push"}
	if p.PushData == nil || p.Repository.RepoName == "" {
		return d, fmt.Errorf("%w: no push_data or repository", ErrBadPayload)
	}
	d.Artifacts = []Artifact{imageArtifact(p.Repository.RepoName, p.PushData.Tag, "")}
	return d, nil
}

func parseHarbor(body []byte) (Delivery, error) {
	var p struct {
		Type      string `json:"type"`
		EventData struct {
			Resources []struct {
				Digest      string `json:"digest"`
				Tag         string `json:"tag"`
				ResourceURL string `json:"resource_url"`
			} `json:"resources"`
		} `json:"event_data"`
	}
	if err := decode(body, &p); err != nil {
		return Delivery{}, err
	}
	d := Delivery{Event: p.Type}
	if p.Type != "PUSH_ARTIFACT" {
		d.Ignored = fmt.Sprintf("Harbor event %q is not handled", p.Type)
		return d, nil
	}
	for _, r := range p.EventData.Resources {
		if r.ResourceURL != "" {
			d.Artifacts = append(d.Artifacts, imageArtifact(r.ResourceURL, r.Tag, r.Digest))
		}
	}
	return d, nil
}

func parseArtifactory(body []byte, virtualRepo string) (Delivery, error) {
	var p struct {
		Domain    string `json:"domain"`
		EventType string `json:"event_type"`
		JPDOrigin string `json:"jpd_origin"`
		Data      struct {
			RepoKey   string `json:"repo_key"`
			ImageName string `json:"image_name"`
			Tag       string `json:"tag"`
			SHA256    string `json:"sha256"`
		} `json:"data"`
	}
	if err := decode(body, &p); err != nil {
		return Delivery{}, err
	}
	d := Delivery{Event: p.Domain + "/" + p.EventType}
	if p.EventType != "pushed" || p.Domain == "artifact" {
		d.Ignored = fmt.Sprintf("Artifactory event %q is not handled", d.Event)
		return d, nil
	}
	u, err := url.Parse(p.JPDOrigin)
	if err != nil || u.Host == "" || p.Data.ImageName == "" || p.Data.RepoKey == "" {
		return d, fmt.Errorf("%w: need jpd_origin, data.repo_key and data.image_name", ErrBadPayload)
	}
	repoKey := p.Data.RepoKey
	if virtualRepo != "" {
		repoKey = virtualRepo
	}
	digest := ""
	if p.Data.SHA256 != "" {
		digest = "sha256:" + p.Data.SHA256
	}
	d.Artifacts = []Artifact{imageArtifact(u.Host+"/"+repoKey+"/"+p.Data.ImageName, p.Data.Tag, digest)}
	return d, nil
}

func parseRegistry(body []byte) (Delivery, error) {
	var p struct {
		Events []struct {
			ID     string `json:"id"`
			Action string `json:"action"`
			Target struct {
				MediaType  string `json:"mediaType"`
				Digest     string `json:"digest"`
				Repository string `json:"repository"`
				URL        string `json:"url"`
				Tag        string `json:"tag"`
			} `json:"target"`
			Request struct {
				Host string `json:"host"`
			} `json:"request"`
		} `json:"events"`
	}
	if err := decode(body, &p); err != nil {
		return Delivery{}, err
	}
	if p.Events == nil {
		return Delivery{}, fmt.Errorf("%w: no events", ErrBadPayload)
	}
	d := Delivery{Event: "push"}
	var ids []string
	for _, ev := range p.Events {
		ids = append(ids, ev.ID)
		if ev.Action != "push" || ev.Target.Tag == "" || ev.Target.Repository == "" {
			continue
		}
		host := ev.Request.Host
		if u, err := url.Parse(ev.Target.URL); err == nil && u.Host != "" {
			host = u.Host
		}
		if host == "" {
			continue
		}
		d.Artifacts = append(d.Artifacts, imageArtifact(host+"/"+ev.Target.Repository, ev.Target.Tag, ev.Target.Digest))
	}
	if len(d.Artifacts) == 0 {
		d.Ignored = "no tagged push among the events"
	}
	if len(compact(ids)) > 0 {
		d.ID = strings.Join(ids, ",")
	}
	return d, nil
}

// parseAzure reads Azure Container Registry and Azure DevOps deliveries,
// told apart by their User-Agent as Kargo does (AzureContainerRegistry/…
// and VSServices/…). ACR: "push" (the registry's login server and the
// repository; references by digest only are ignored) and "ping"; payload
// as in Microsoft's "Azure Container Registry webhook reference". Azure
// DevOps: "git.push" (refUpdates) and "git.pullrequest.merged"; payload as
// in "Webhooks with Azure DevOps" (resource details to send: All).
func parseAzure(h http.Header, body []byte) (Delivery, error) {
	agent := h.Get("User-Agent")
	switch {
	case strings.HasPrefix(agent, "AzureContainerRegistry"):
		var ev struct {
			ID     string `json:"id"`
			Action string `json:"action"`
			Target struct {
				MediaType  string `json:"mediaType"`
				Repository string `json:"repository"`
				Tag        string `json:"tag"`
				Digest     string `json:"digest"`
			} `json:"target"`
			Request struct {
				Host string `json:"host"`
			} `json:"request"`
		}
		if err := decode(body, &ev); err != nil {
			return Delivery{}, err
		}
		d := Delivery{ID: ev.ID, Event: ev.Action}
		switch ev.Action {
		case "ping":
			d.Ping = true
		case "push":
			if ev.Request.Host == "" || ev.Target.Repository == "" {
				return Delivery{}, fmt.Errorf("%w: an ACR push names no request.host or target.repository", ErrBadPayload)
			}
			d.Artifacts = []Artifact{imageArtifact(ev.Request.Host+"/"+ev.Target.Repository, ev.Target.Tag, ev.Target.Digest)}
		default:
			d.Ignored = fmt.Sprintf("ACR event %q is not acted on", ev.Action)
		}
		return d, nil
	case strings.HasPrefix(agent, "VSServices"):
		var ev struct {
			ID        string `json:"id"`
			EventType string `json:"eventType"`
			Resource  struct {
				PullRequestID   int64 `json:"pullRequestId"`
				Status          string
				SourceRefName   string                    `json:"sourceRefName"`
				LastMergeCommit struct{ CommitID string } `json:"lastMergeCommit"`
				RefUpdates      []struct {
					Name        string `json:"name"`
					NewObjectID string `json:"newObjectId"`
				} `json:"refUpdates"`
				Repository struct {
					RemoteURL string `json:"remoteUrl"`
					SSHURL    string `json:"sshUrl"`
					WebURL    string `json:"webUrl"`
				} `json:"repository"`
			} `json:"resource"`
		}
		if err := decode(body, &ev); err != nil {
			return Delivery{}, err
		}
		repo := ev.Resource.Repository
		urls := compact([]string{repo.RemoteURL, repo.SSHURL, repo.WebURL})
		if len(urls) == 0 {
			return Delivery{}, fmt.Errorf("%w: an Azure DevOps event names no resource.repository.remoteUrl", ErrBadPayload)
		}
		d := Delivery{ID: ev.ID, Event: ev.EventType}
		switch ev.EventType {
		case "git.push":
			for _, ru := range ev.Resource.RefUpdates {
				d.Artifacts = append(d.Artifacts, gitArtifact(urls, ru.Name, ru.NewObjectID, nil))
			}
		case "git.pullrequest.merged":
			d.PullRequest = &PullRequest{RepoURL: urls[0], Number: ev.Resource.PullRequestID, Merged: true,
				MergeCommit: ev.Resource.LastMergeCommit.CommitID, Branch: strings.TrimPrefix(ev.Resource.SourceRefName, "refs/heads/")}
		default:
			d.Ignored = fmt.Sprintf("Azure DevOps event %q is not acted on", ev.EventType)
		}
		return d, nil
	}
	return Delivery{}, fmt.Errorf("%w: the request comes from neither Azure Container Registry nor Azure DevOps (User-Agent %q)", ErrBadPayload, agent)
}
