package engine

import (
	"net/url"
	"strings"
	"sync"

	"github.com/caravan-cd/caravan/pkg/model"
)

// Wake cuts short the poll wait of the running promotions of project whose
// current step waits for a pull request of repoURL (git-wait-for-pr,
// git-merge-pr with wait): they run the step again at once instead of after
// PollInterval. A wake that arrives while the step runs makes the next wait
// end at once. Waking twice, or when nothing waits, is harmless; a step
// woken for nothing only looks at its pull request once more.
func (e *Engine) Wake(project, repoURL string) {
	key := repoKey(repoURL)
	if key == "" {
		return
	}
	e.wakers.wake(project, key)
}

// wakers are the steps that Wake may wake.
type wakers struct {
	mu sync.Mutex
	m  map[*waker]struct{}
}

// waker is one step waiting for a pull request.
type waker struct {
	project string
	repo    string        // repoKey of the step's repoURL; guarded by wakers.mu
	c       chan struct{} // one buffered signal
}

func (ws *wakers) add(project string) *waker {
	w := &waker{project: project, c: make(chan struct{}, 1)}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.m == nil {
		ws.m = map[*waker]struct{}{}
	}
	ws.m[w] = struct{}{}
	return w
}

func (ws *wakers) remove(w *waker) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	delete(ws.m, w)
}

// watch sets the repository w waits for (a step's repoURL is evaluated on
// every attempt). A nil w is a step that is never woken.
func (ws *wakers) watch(w *waker, repoURL any) {
	if w == nil {
		return
	}
	s, _ := repoURL.(string)
	key := repoKey(s)
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w.repo = key
}

func (ws *wakers) wake(project, key string) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for w := range ws.m {
		if w.project != project || w.repo != key {
			continue
		}
		select {
		case w.c <- struct{}{}:
		default: // already signalled
		}
	}
}

// signal is what a poll wait of w also ends on (nil: only its timer).
func (w *waker) signal() <-chan struct{} {
	if w == nil {
		return nil
	}
	return w.c
}

// repoKey is what two URLs of one repository have in common, whichever
// protocol a webhook or a step names it by: lower-case host and path,
// without scheme, user, port, trailing "/" or ".git". "" when repoURL names
// no host and path.
func repoKey(repoURL string) string {
	u, err := url.Parse(model.NormalizeGitURL(repoURL))
	if err != nil {
		return ""
	}
	path := strings.Trim(u.Path, "/")
	if u.Hostname() == "" || path == "" {
		return ""
	}
	return u.Hostname() + "/" + path
}
