package gitmirror

import "testing"

func TestMerge3(t *testing.T) {
	t.Parallel()
	const base = "a\nb\nc\nd\ne\n"
	tests := []struct {
		name         string
		ours, theirs string
		want         string
		conflict     bool
	}{
		{name: "only theirs", ours: base, theirs: "a\nB\nc\nd\ne\n", want: "a\nB\nc\nd\ne\n"},
		{name: "only ours", ours: "a\nb\nc\nd\nE\n", theirs: base, want: "a\nb\nc\nd\nE\n"},
		{name: "different lines", ours: "A\nb\nc\nd\ne\n", theirs: "a\nb\nc\nd\nE\n", want: "A\nb\nc\nd\nE\n"},
		{name: "neighbouring lines", ours: "a\nB\nc\nd\ne\n", theirs: "a\nb\nC\nd\ne\n", want: "a\nB\nC\nd\ne\n"},
		{name: "append beside a change of the last line", ours: "a\nb\nc\nd\ne\nf\n", theirs: "a\nb\nc\nd\nE\n", want: "a\nb\nc\nd\nE\nf\n"},
		{name: "the same change on both sides", ours: "a\nB\nc\nd\ne\n", theirs: "a\nB\nc\nd\ne\n", want: "a\nB\nc\nd\ne\n"},
		{name: "the same change beside another", ours: "a\nB\nc\nd\nE\n", theirs: "a\nB\nc\nd\ne\n", want: "a\nB\nc\nd\nE\n"},
		{name: "deletion and change elsewhere", ours: "a\nc\nd\ne\n", theirs: "a\nb\nc\nD\ne\n", want: "a\nc\nD\ne\n"},
		{name: "insertions at different places", ours: "a\nx\nb\nc\nd\ne\n", theirs: "a\nb\nc\nd\ny\ne\n", want: "a\nx\nb\nc\nd\ny\ne\n"},
		{name: "same line changed differently", ours: "a\nB1\nc\nd\ne\n", theirs: "a\nB2\nc\nd\ne\n", conflict: true},
		{name: "overlapping ranges", ours: "a\nX\nY\nd\ne\n", theirs: "a\nb\nZ\nW\ne\n", conflict: true},
		{name: "insertions at the same place", ours: "a\nb\nx\nc\nd\ne\n", theirs: "a\nb\ny\nc\nd\ne\n", conflict: true},
		{name: "deletion against change", ours: "a\nc\nd\ne\n", theirs: "a\nB\nc\nd\ne\n", conflict: true},
		{name: "insertion inside a replaced range", ours: "a\nb\nx\nc\nd\ne\n", theirs: "a\nB\nC\nd\ne\n", conflict: true},
		{name: "no trailing newline", ours: "a\nb\nc\nd\nE", theirs: "A\nb\nc\nd\ne\n", want: "A\nb\nc\nd\nE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := merge3(base, tt.ours, tt.theirs)
			if ok == tt.conflict {
				t.Fatalf("merge3 clean = %v, want %v (result %q)", ok, !tt.conflict, got)
			}
			if ok && got != tt.want {
				t.Fatalf("merge3 = %q, want %q", got, tt.want)
			}
			// A merge does not depend on which side is which.
			if got2, ok2 := merge3(base, tt.theirs, tt.ours); ok2 != ok || (ok && got2 != got) {
				t.Fatalf("swapped sides: %q %v, want %q %v", got2, ok2, got, ok)
			}
		})
	}
}

func FuzzMerge3(f *testing.F) {
	f.Add("a\nb\nc\n", "a\nB\nc\n", "a\nb\nC\n")
	f.Add("", "x\n", "y\n")
	f.Add("a\n", "", "a\nb\n")
	f.Fuzz(func(t *testing.T, base, ours, theirs string) {
		got, ok := merge3(base, ours, theirs)
		if !ok {
			return
		}
		// Each side's own change survives a merge with an unchanged other.
		if ours == base && got != theirs || theirs == base && got != ours {
			t.Fatalf("merge3(%q, %q, %q) = %q", base, ours, theirs, got)
		}
	})
}
