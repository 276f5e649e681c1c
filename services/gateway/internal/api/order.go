package api

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// List orders (?sort=). Every list is newest first unless asked otherwise,
// so that a script's .items[0] is what a person sees on top of the table.
const (
	// sortNewest orders by creation time, newest first, then by name
	// (descending), the order auto-promotion calls "newest".
	sortNewest = "newest"
	// sortOldest is sortNewest reversed.
	sortOldest = "oldest"
	// sortName orders by name (the store's key order).
	sortName = "name"
)

// sortOrders are the values ?sort= takes, for errors and the OpenAPI
// document.
var sortOrders = []string{sortNewest, sortOldest, sortName}

// ordering reads ?sort=, answering 400 itself (ok false).
func ordering(w http.ResponseWriter, r *http.Request) (string, bool) {
	v := r.URL.Query().Get("sort")
	if v == "" {
		return sortNewest, true
	}
	if !slices.Contains(sortOrders, v) {
		invalid(w, "sort", fmt.Sprintf("%q is not one of %s", v, strings.Join(sortOrders, ", ")))
		return "", false
	}
	return v, true
}

func creationOf(o model.Object) time.Time {
	if t := o.GetObjectMeta().CreationTimestamp; t != nil {
		return t.Time
	}
	return time.Time{}
}

// compareNewest orders a before b when a is newer (by creation time, then
// by name), as model.Newer does for freight.
func compareNewest(a, b model.Object) int {
	if c := creationOf(b).Compare(creationOf(a)); c != 0 {
		return c
	}
	return strings.Compare(b.GetObjectMeta().Name, a.GetObjectMeta().Name)
}

// comparer returns the comparison of an order.
func comparer(order string) func(a, b model.Object) int {
	switch order {
	case sortOldest:
		return func(a, b model.Object) int { return compareNewest(b, a) }
	case sortName:
		return func(a, b model.Object) int { return strings.Compare(a.GetObjectMeta().Name, b.GetObjectMeta().Name) }
	}
	return compareNewest
}

// cursor is the position after an object in an order by time. It is
// sent as the continue token "@<unix nanoseconds>/<name>" (base64url),
// which never looks like a store key.
type cursor struct {
	created time.Time
	name    string
}

func cursorOf(o model.Object) string {
	s := "@" + strconv.FormatInt(creationOf(o).UnixNano(), 10) + "/" + o.GetObjectMeta().Name
	return base64.RawURLEncoding.EncodeToString([]byte(s))
}

// parseCursor reads the decoded continue token of an order by time.
func parseCursor(after string) (cursor, bool) {
	rest, ok := strings.CutPrefix(after, "@")
	if !ok {
		return cursor{}, false
	}
	ns, name, ok := strings.Cut(rest, "/")
	if !ok {
		return cursor{}, false
	}
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil {
		return cursor{}, false
	}
	c := cursor{name: name}
	if n != (time.Time{}).UnixNano() {
		c.created = time.Unix(0, n)
	}
	return c, true
}

// markAt returns an object at the cursor's position, to compare with.
func markAt(c cursor) model.Object {
	meta := model.ObjectMeta{Name: c.name}
	if !c.created.IsZero() {
		meta.CreationTimestamp = model.NewTime(c.created)
	}
	return &model.Stage{ObjectMeta: meta}
}

// pageOrdered returns the page of up to limit objects (all when limit is
// 0) of objs that come after the cursor after ("" for the first page) in
// order, and the token of the next page; objs may be reordered. ok is
// false when after is not a cursor. It keeps only the limit+1 first in a
// sorted window, so a page of a long list costs O(n log limit), not a sort.
func pageOrdered(objs []model.Object, order string, limit int, after string) (page []model.Object, next string, ok bool) {
	cmp := comparer(order)
	if after != "" {
		c, ok := parseCursor(after)
		if !ok {
			return nil, "", false
		}
		mark := markAt(c)
		objs = slices.DeleteFunc(objs, func(o model.Object) bool { return cmp(o, mark) <= 0 })
	}
	if limit <= 0 || limit*4 >= len(objs) {
		slices.SortStableFunc(objs, cmp)
	} else {
		objs = firstN(objs, limit+1, cmp)
	}
	if limit > 0 && len(objs) > limit {
		return objs[:limit], cursorOf(objs[limit-1]), true
	}
	return objs, "", true
}

// firstN returns the n first of objs in the order cmp, in that order.
func firstN[T any](objs []T, n int, cmp func(a, b T) int) []T {
	top := make([]T, 0, n+1)
	for _, o := range objs {
		if len(top) == n && cmp(o, top[n-1]) >= 0 {
			continue
		}
		i, _ := slices.BinarySearchFunc(top, o, cmp)
		top = slices.Insert(top, i, o)
		if len(top) > n {
			top = top[:n]
		}
	}
	return top
}

// ordered lists the objects of kind in project that match, in order,
// one page of up to limit after the continue token after (decoded), and
// the token of the next page. It answers 400 for a token of another order
// itself (ok false). With an index the objects are its own, shared with
// other requests: they go to writeList, whose present copies what it
// changes, and must not be modified.
func (s *server) ordered(w http.ResponseWriter, r *http.Request, project, kind, order string, limit int, after string, match func(model.Object) bool) ([]model.Object, string, bool) {
	if order == sortName {
		if strings.HasPrefix(after, "@") {
			invalid(w, "continue", "a token of another sort order")
			return nil, "", false
		}
		objs, next, err := s.collectFrom(r.Context(), true, project, kind, limit, after, match)
		if err != nil {
			s.internal(w, r, err)
			return nil, "", false
		}
		return objs, next, true
	}
	// The whole list is ordered; present copies the items it changes.
	all, _, err := s.collectFrom(r.Context(), true, project, kind, 0, "", match)
	if err != nil {
		s.internal(w, r, err)
		return nil, "", false
	}
	page, next, ok := pageOrdered(all, order, limit, after)
	if !ok {
		invalid(w, "continue", "a token of another sort order")
		return nil, "", false
	}
	return page, next, true
}

// pageOf returns the page of objs (in key order) that match, in order,
// after the continue token after (decoded), and the token of the next
// page: the paging of ordered, for a list already in memory. ok is false
// for a token of another order.
func pageOf(objs []model.Object, project string, match func(model.Object) bool, order string, limit int, after string) ([]model.Object, string, bool) {
	key := func(o model.Object) string {
		return state.ObjectKey(project, o.GetTypeMeta().Kind, o.GetObjectMeta().Name)
	}
	if match != nil {
		objs = slices.DeleteFunc(slices.Clone(objs), func(o model.Object) bool { return !match(o) })
	}
	if order != sortName {
		return pageOrdered(objs, order, limit, after)
	}
	if strings.HasPrefix(after, "@") {
		return nil, "", false
	}
	i := 0
	for i < len(objs) && after != "" && key(objs[i]) <= after {
		i++
	}
	objs = objs[i:]
	if limit > 0 && len(objs) > limit {
		return objs[:limit], base64.RawURLEncoding.EncodeToString([]byte(key(objs[limit-1]))), true
	}
	return objs, "", true
}
