package partition

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Every project is worked once, never more than workers at once, and the
// errors name their projects.
func TestProjects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		projects int
		workers  int
		failing  []int
		wantMax  int // the most projects worked at once, at most
	}{
		{"none", 0, 2, nil, 0},
		{"one at a time", 5, 1, nil, 1},
		{"two at a time", 9, 2, []int{3, 7}, 2},
		{"default bound", 20, 0, []int{0}, Workers},
		{"more workers than projects", 3, 8, nil, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var projects []string
			for i := range tt.projects {
				projects = append(projects, fmt.Sprintf("p%02d", i))
			}
			var mu sync.Mutex
			var worked []string
			active, most := 0, 0
			err := Projects(t.Context(), projects, tt.workers, func(_ context.Context, p string) error {
				mu.Lock()
				worked = append(worked, p)
				active++
				most = max(most, active)
				mu.Unlock()
				time.Sleep(time.Millisecond) // lets the others start
				mu.Lock()
				active--
				mu.Unlock()
				for _, i := range tt.failing {
					if p == projects[i] {
						return errors.New("broken")
					}
				}
				return nil
			})
			slices.Sort(worked)
			if !slices.Equal(worked, projects) {
				t.Errorf("worked %v, want each of %v once", worked, projects)
			}
			if most > tt.wantMax {
				t.Errorf("%d projects worked at once, want at most %d", most, tt.wantMax)
			}
			for _, i := range tt.failing {
				if err == nil || !strings.Contains(err.Error(), "project "+projects[i]+": broken") {
					t.Errorf("error %v does not name project %s", err, projects[i])
				}
			}
			if len(tt.failing) == 0 && err != nil {
				t.Errorf("error %v, want none", err)
			}
		})
	}
}

// A project whose work blocks does not hold up the others': they are all
// worked while it waits.
func TestProjectsBlockedProject(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	others := make(chan string, 10)
	done := make(chan error, 1)
	go func() {
		done <- Projects(t.Context(), []string{"big", "a", "b", "c"}, 2, func(_ context.Context, p string) error {
			if p == "big" {
				<-release
				return nil
			}
			others <- p
			return nil
		})
	}()
	var got []string
	for len(got) < 3 {
		select {
		case p := <-others:
			got = append(got, p)
		case <-time.After(30 * time.Second):
			close(release)
			t.Fatalf("only %v worked while big blocked", got)
		}
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// When ctx ends, projects not started are skipped and the error says so.
func TestProjectsCanceled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	var mu sync.Mutex
	var worked []string
	err := Projects(ctx, []string{"a", "b", "c"}, 1, func(_ context.Context, p string) error {
		mu.Lock()
		defer mu.Unlock()
		worked = append(worked, p)
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
	if !slices.Equal(worked, []string{"a"}) {
		t.Errorf("worked %v after ctx ended, want only a", worked)
	}
}
