package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
)

// writeList writes, item by item, the very bytes json.Marshal gives for
// the list plus a newline (writeJSON's answer before), HTML escaping
// included, and clears the entries it was given.
func TestWriteListBytes(t *testing.T) {
	t.Parallel()
	freight := func(name, alias string) model.Object {
		return &model.Freight{
			TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindFreight},
			ObjectMeta: model.ObjectMeta{Name: name, Namespace: "demo", CreationTimestamp: model.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))},
			Alias:      alias,
			Images:     []model.Image{{RepoURL: "example.com/app", Tag: "1.0", Annotations: map[string]string{"note": "<b>&</b>"}}},
		}
	}
	var long []model.Object
	for i := range 1000 {
		long = append(long, freight(fmt.Sprintf("f%04d", i), fmt.Sprintf("alias-%d", i)))
	}
	for name, tc := range map[string]struct {
		objs []model.Object
		next string
	}{
		"empty":       {},
		"one":         {objs: []model.Object{freight("a", "x<y")}},
		"two, a page": {objs: []model.Object{freight("a", "one"), freight("b", "two")}, next: "YWJj"},
		// Past listFlushBytes, sent in pieces: the same bytes.
		"long, sent in pieces": {objs: long, next: "YWJj"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			l := list{APIVersion: "v1", Kind: model.KindFreight + "List", Items: make([]any, 0, len(tc.objs)), Metadata: listMeta{Continue: tc.next}}
			for _, o := range tc.objs {
				l.Items = append(l.Items, o)
			}
			want, err := json.Marshal(l)
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			(&server{}).writeList(rec, httptest.NewRequest(http.MethodGet, "/", nil), model.KindFreight, tc.objs, tc.next)
			if got := rec.Body.String(); got != string(want)+"\n" {
				t.Errorf("got\n%s\nwant\n%s", got, want)
			}
			if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" {
				t.Errorf("status %d, content type %q", rec.Code, rec.Header().Get("Content-Type"))
			}
			for i, o := range tc.objs {
				if o != nil {
					t.Errorf("entry %d kept", i)
				}
			}
		})
	}
}

// An item that cannot be encoded answers a clean 500 while nothing was
// sent; once the first piece of a long list was sent, the response is
// aborted (http.ErrAbortHandler), never ended as if the list were whole.
func TestWriteListFailure(t *testing.T) {
	t.Parallel()
	item := func(name string, bad bool) model.Object {
		f := &model.Freight{TypeMeta: model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindFreight}, ObjectMeta: model.ObjectMeta{Name: name, Namespace: "demo"}}
		if bad {
			f.Status.Metadata = map[string]any{"x": math.Inf(1)}
		}
		return f
	}
	write := func(objs []model.Object) (rec *httptest.ResponseRecorder, aborted bool) {
		rec = httptest.NewRecorder()
		defer func() {
			if v := recover(); v != nil {
				if err, _ := v.(error); !errors.Is(err, http.ErrAbortHandler) {
					panic(v)
				}
				aborted = true
			}
		}()
		(&server{}).writeList(rec, httptest.NewRequest(http.MethodGet, "/", nil), model.KindFreight, objs, "")
		return rec, false
	}
	if rec, aborted := write([]model.Object{item("a", false), item("b", true)}); aborted || rec.Code != http.StatusInternalServerError {
		t.Errorf("short list: status %d, aborted %v", rec.Code, aborted)
	}
	var long []model.Object
	for i := range 2000 {
		long = append(long, item(fmt.Sprintf("f%04d", i), false))
	}
	long = append(long, item("bad", true))
	rec, aborted := write(long)
	if !aborted || rec.Body.Len() < listFlushBytes || json.Valid(rec.Body.Bytes()) {
		t.Errorf("long list: aborted %v, %d bytes sent, valid JSON %v", aborted, rec.Body.Len(), json.Valid(rec.Body.Bytes()))
	}
}
