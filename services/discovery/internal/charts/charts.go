// Package charts discovers the versions of a Helm chart, from a classic
// HTTP repository (its index.yaml) or an OCI repository (its tags).
package charts

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/Masterminds/semver/v3"
	"go.yaml.in/yaml/v3"

	"github.com/caravan-cd/caravan/pkg/creds"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/discovery/internal/images"
)

// maxIndexSize bounds an index.yaml (big public repositories reach tens of
// megabytes).
const maxIndexSize = 256 << 20

// Client discovers chart versions. It is safe for concurrent use.
type Client struct {
	http     *http.Client
	insecure *http.Client
	images   *images.Client
}

// New returns a Client reading HTTP repositories through transport (and
// insecure, for subscriptions with insecureSkipTLSVerify: a transport that
// does not verify certificates) and OCI repositories through imgs.
func New(transport, insecure http.RoundTripper, imgs *images.Client) *Client {
	return &Client{http: &http.Client{Transport: transport}, insecure: &http.Client{Transport: insecure}, images: imgs}
}

// InsecureTransport returns a clone of the default transport that skips
// certificate verification, for subscriptions with insecureSkipTLSVerify.
func InsecureTransport() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // only for subscriptions with insecureSkipTLSVerify
	return t
}

// StatusError is an HTTP repository's unexpected answer.
type StatusError struct {
	URL    string
	Status int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("GET %s: %d %s", e.URL, e.Status, http.StatusText(e.Status))
}

// Discover returns the chart's versions that satisfy semverConstraint,
// highest first, at most discoveryLimit of them.
func (c *Client) Discover(ctx context.Context, sub model.ChartSubscription, cr *creds.Credentials) (model.ChartDiscoveryResult, error) {
	res := model.ChartDiscoveryResult{RepoURL: sub.RepoURL, Name: sub.Name, SemverConstraint: sub.SemverConstraint, Versions: []string{}}
	var constraint *semver.Constraints
	if sub.SemverConstraint != "" {
		var err error
		if constraint, err = semver.NewConstraint(sub.SemverConstraint); err != nil {
			return res, fmt.Errorf("semverConstraint %q: %w", sub.SemverConstraint, err)
		}
	}
	var raw []string
	var err error
	if strings.HasPrefix(sub.RepoURL, "oci://") {
		raw, err = c.images.ListTags(ctx, strings.TrimPrefix(sub.RepoURL, "oci://"), cr, sub.InsecureSkipTLSVerify)
		for i, t := range raw {
			raw[i] = strings.ReplaceAll(t, "_", "+") // OCI tags cannot hold "+"
		}
	} else {
		raw, err = c.index(ctx, sub, cr)
	}
	if err != nil {
		return res, err
	}
	type version struct {
		raw string
		v   *semver.Version
	}
	var vs []version
	for _, r := range raw {
		v, err := semver.NewVersion(r)
		if err != nil || constraint != nil && !constraint.Check(v) {
			continue
		}
		vs = append(vs, version{r, v})
	}
	slices.SortFunc(vs, func(a, b version) int { return b.v.Compare(a.v) })
	for _, v := range vs[:min(len(vs), images.Limit(sub.DiscoveryLimit))] {
		res.Versions = append(res.Versions, v.raw)
	}
	return res, nil
}

// index reads the versions of sub.Name from the repository's index.yaml.
func (c *Client) index(ctx context.Context, sub model.ChartSubscription, cr *creds.Credentials) ([]string, error) {
	if sub.Name == "" {
		return nil, errors.New("an HTTP chart repository needs the chart's name")
	}
	url := strings.TrimSuffix(sub.RepoURL, "/") + "/index.yaml"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if cr != nil {
		req.SetBasicAuth(cr.Username, cr.Password)
	}
	client := c.http
	if sub.InsecureSkipTLSVerify {
		client = c.insecure
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, &StatusError{URL: url, Status: resp.StatusCode}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIndexSize))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", url, err)
	}
	var idx struct {
		Entries map[string][]struct {
			Version string `yaml:"version"`
		} `yaml:"entries"`
	}
	if err := yaml.Unmarshal(body, &idx); err != nil {
		return nil, fmt.Errorf("parse %s: %w", url, err)
	}
	entries, ok := idx.Entries[sub.Name]
	if !ok {
		return nil, fmt.Errorf("chart %q not in %s", sub.Name, url)
	}
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.Version)
	}
	return out, nil
}

// Explain turns a chart repository error into a readable message.
func Explain(err error) string {
	var se *StatusError
	if errors.As(err, &se) {
		switch se.Status {
		case http.StatusUnauthorized, http.StatusForbidden:
			return "chart repository refused access: add or fix a Secret labelled kargo.akuity.io/cred-type=helm (" + err.Error() + ")"
		case http.StatusNotFound:
			return "chart repository not found: check repoURL (" + err.Error() + ")"
		}
		return err.Error()
	}
	return images.Explain(err)
}
