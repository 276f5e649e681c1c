package gitmirror

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
)

// errUpToDate: the remote ref already holds the commit.
var errUpToDate = errors.New("already up to date")

// sendPack updates ref on the remote from old (as the remote advertises
// it) to commit, sending the objects this work tree created.
//
// go-git's own push computes what to send by listing every object the
// remote's refs reach — the whole history, seconds on a long one. A work
// tree knows better: what it created lives in its in-memory store and
// everything else came from the remote, so that is all it sends. The
// server applies the update only if ref still holds the advertised value,
// which makes a concurrent push a clean, retryable rejection.
func (r *Repo) sendPack(ctx context.Context, ref plumbing.ReferenceName, commit plumbing.Hash, accept func(old plumbing.Hash) error) error {
	ep, err := transport.NewEndpoint(r.URL)
	if err != nil {
		return err
	}
	cl, err := client.NewClient(ep)
	if err != nil {
		return err
	}
	sess, err := cl.NewReceivePackSession(ep, r.auth.method())
	if err != nil {
		return err
	}
	defer func() { _ = sess.Close() }()
	ar, err := sess.AdvertisedReferencesContext(ctx)
	if err != nil && !errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return err
	}
	old := plumbing.ZeroHash
	if ar != nil {
		refs, err := ar.AllReferences()
		if err != nil {
			return err
		}
		if cur, err := refs.Reference(ref); err == nil {
			old = cur.Hash()
		}
	}
	if old == commit {
		return errUpToDate
	}
	if err := accept(old); err != nil {
		return err
	}
	mem := r.repo.Storer.(*overlay).Storage
	hashes := make([]plumbing.Hash, 0, len(mem.Objects))
	for h := range mem.Objects {
		hashes = append(hashes, h)
	}
	req := packp.NewReferenceUpdateRequest()
	if ar != nil {
		req = packp.NewReferenceUpdateRequestFromCapabilities(ar.Capabilities)
	}
	req.Commands = []*packp.Command{{Name: ref, Old: old, New: commit}}
	pr, pw := io.Pipe()
	go func() {
		_, err := packfile.NewEncoder(pw, r.repo.Storer, false).Encode(hashes, 10)
		pw.CloseWithError(err)
	}()
	req.Packfile = pr
	rs, err := sess.ReceivePack(ctx, req)
	_ = pr.Close()
	if err != nil {
		return err
	}
	if rs != nil {
		if err := rs.Error(); err != nil {
			return fmt.Errorf("remote refused the update of %s: %w", ref, err)
		}
	}
	return nil
}
