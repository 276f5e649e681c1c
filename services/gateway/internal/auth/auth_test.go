package auth

import (
	"context"
	"errors"
	"net/http"
	"testing"
)

func TestStaticToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, configured, given string
		ok                      bool
	}{
		{"match", "tok", "tok", true},
		{"mismatch", "tok", "tok2", false},
		{"prefix", "tok", "to", false},
		{"empty given", "tok", "", false},
		{"empty configured accepts nothing", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := NewStaticToken(tt.configured).Authenticate(context.Background(), tt.given)
			if tt.ok != (err == nil) {
				t.Fatalf("err %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrUnauthenticated) {
				t.Errorf("err %v is not ErrUnauthenticated", err)
			}
			if tt.ok && (p.Name != AdminName || !p.Admin) {
				t.Errorf("principal %+v", p)
			}
		})
	}
}

func TestBearerToken(t *testing.T) {
	t.Parallel()
	tests := []struct{ header, want string }{
		{"Bearer abc", "abc"},
		{"bearer abc", "abc"},
		{"Basic abc", ""},
		{"Bearer", ""},
		{"", ""},
	}
	for _, tt := range tests {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		if tt.header != "" {
			r.Header.Set("Authorization", tt.header)
		}
		if got := BearerToken(r); got != tt.want {
			t.Errorf("%q: %q, want %q", tt.header, got, tt.want)
		}
	}
}
