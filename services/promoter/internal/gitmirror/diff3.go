package gitmirror

import (
	"bytes"

	"github.com/go-git/go-git/v5/utils/diff"
	"github.com/sergi/go-diff/diffmatchpatch"
)

// hunk replaces the base lines [start, end) with lines.
type hunk struct {
	start, end int
	lines      []string
}

// splitLines splits s after every newline; a last line without one is
// kept as it is.
func splitLines(s string) []string {
	var out []string
	for len(s) > 0 {
		i := bytes.IndexByte([]byte(s), '\n')
		if i < 0 {
			out = append(out, s)
			break
		}
		out = append(out, s[:i+1])
		s = s[i+1:]
	}
	return out
}

// hunks lists the changes from base to other, in base order, from a
// line diff (Myers, through go-git's wrapper of go-diff).
func hunks(base, other string) []hunk {
	var out []hunk
	line := 0
	var cur *hunk
	flush := func() {
		if cur != nil {
			out = append(out, *cur)
			cur = nil
		}
	}
	for _, d := range diff.Do(base, other) {
		lines := splitLines(d.Text)
		switch d.Type {
		case diffmatchpatch.DiffEqual:
			flush()
			line += len(lines)
		case diffmatchpatch.DiffDelete:
			if cur == nil {
				cur = &hunk{start: line, end: line}
			}
			line += len(lines)
			cur.end = line
		case diffmatchpatch.DiffInsert:
			if cur == nil {
				cur = &hunk{start: line, end: line}
			}
			cur.lines = append(cur.lines, lines...)
		}
	}
	flush()
	return out
}

// merge3 merges the changes base→ours and base→theirs, line by line. It
// reports false (a conflict) when a change of one side overlaps a change
// of the other that differs from it: both replace some of the same base
// lines, both insert at the same place, or one inserts inside lines the
// other replaces. Changes to neighbouring lines merge.
func merge3(base, ours, theirs string) (string, bool) {
	if ours == theirs {
		return ours, true
	}
	if base == ours {
		return theirs, true
	}
	if base == theirs {
		return ours, true
	}
	baseLines := splitLines(base)
	a, b := hunks(base, ours), hunks(base, theirs)
	var out []string
	pos := 0 // next base line to copy
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		// Take the next change; gather every change of either side that
		// overlaps the region so far.
		var start, end int
		var ia, ib []hunk
		switch {
		case j >= len(b) || (i < len(a) && a[i].start <= b[j].start):
			start, end = a[i].start, a[i].end
			ia = append(ia, a[i])
			i++
		default:
			start, end = b[j].start, b[j].end
			ib = append(ib, b[j])
			j++
		}
	gather:
		for {
			switch {
			case i < len(a) && overlaps(a[i], start, end):
				ia = append(ia, a[i])
				end = max(end, a[i].end)
				i++
			case j < len(b) && overlaps(b[j], start, end):
				ib = append(ib, b[j])
				end = max(end, b[j].end)
				j++
			default:
				break gather
			}
		}
		out = append(out, baseLines[pos:start]...)
		pos = end
		switch {
		case len(ib) == 0:
			out = append(out, apply(baseLines, start, end, ia)...)
		case len(ia) == 0:
			out = append(out, apply(baseLines, start, end, ib)...)
		default:
			x, y := apply(baseLines, start, end, ia), apply(baseLines, start, end, ib)
			if !equalLines(x, y) {
				return "", false
			}
			out = append(out, x...)
		}
	}
	out = append(out, baseLines[pos:]...)
	var buf bytes.Buffer
	for _, l := range out {
		buf.WriteString(l)
	}
	return buf.String(), true
}

// overlaps reports whether h shares base lines with the region
// [start, end), or inserts where the region does: an insertion at a
// region's edge belongs to it only when the region is an insertion at the
// same place.
func overlaps(h hunk, start, end int) bool {
	switch {
	case h.start == h.end && start == end:
		return h.start == start
	case h.start == h.end:
		return h.start > start && h.start < end
	case start == end:
		return start > h.start && start < h.end
	}
	return h.start < end && start < h.end
}

// apply returns the base lines [start, end) with one side's hunks (all
// within the range, in order) applied.
func apply(base []string, start, end int, hs []hunk) []string {
	var out []string
	pos := start
	for _, h := range hs {
		out = append(out, base[pos:h.start]...)
		out = append(out, h.lines...)
		pos = h.end
	}
	return append(out, base[pos:end]...)
}

func equalLines(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
