package model

import (
	"fmt"
	"strings"
	"time"

	"github.com/teambition/rrule-go"
)

// maxWindowSteps bounds the boundaries WindowStatus walks looking for the
// next change of a schedule; past it (or a year ahead) the change is
// unknown, as Kargo allows.
const (
	maxWindowSteps   = 2000
	windowLookAhead  = 366 * 24 * time.Hour
	iCalDateTime     = "20060102T150405"
	iCalDateTimeUTC  = "20060102T150405Z"
	iCalDate         = "20060102"
	windowRRulePrefx = "RRULE:"
)

// window is a PromotionWindow parsed: each occurrence lasts dur from a
// start its rule (or dtstart alone) gives.
type window struct {
	name  string
	kind  PromotionWindowKind
	dur   time.Duration
	rule  *rrule.RRule // nil: one occurrence at start
	start time.Time
}

// ParseICalDateTime reads an iCalendar date-time as promotion windows write
// it: "TZID=<zone>:20260101T090000", "20260101T090000Z" (UTC),
// "20260101T090000" (UTC) or a date "20260101" (midnight).
func ParseICalDateTime(s string) (time.Time, error) {
	loc := time.UTC
	if rest, ok := strings.CutPrefix(s, "TZID="); ok {
		zone, value, ok := strings.Cut(rest, ":")
		if !ok {
			return time.Time{}, fmt.Errorf("%q: TZID=<zone> must be followed by ':' and the date-time", s)
		}
		l, err := time.LoadLocation(zone)
		if err != nil {
			return time.Time{}, fmt.Errorf("%q: unknown time zone %q", s, zone)
		}
		loc, s = l, value
	}
	for _, layout := range []string{iCalDateTimeUTC, iCalDateTime, iCalDate} {
		if layout == iCalDateTimeUTC && loc != time.UTC {
			continue
		}
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not an iCalendar date-time such as 20260101T090000, 20260101T090000Z or TZID=Europe/Paris:20260101T090000", s)
}

// parseWindow checks and parses one window; the error names the field.
func parseWindow(w PromotionWindow) (window, error) {
	out := window{name: w.Name, kind: w.Kind}
	switch w.Kind {
	case PromotionWindowAllow, PromotionWindowDeny:
	default:
		return out, fmt.Errorf("kind: must be Allow or Deny, got %q", w.Kind)
	}
	if w.DTStart == "" {
		return out, fmt.Errorf("dtstart: required")
	}
	start, err := ParseICalDateTime(w.DTStart)
	if err != nil {
		return out, fmt.Errorf("dtstart: %w", err)
	}
	if w.DTEnd == "" {
		return out, fmt.Errorf("dtend: required (dtend - dtstart is how long each occurrence lasts)")
	}
	end, err := ParseICalDateTime(w.DTEnd)
	if err != nil {
		return out, fmt.Errorf("dtend: %w", err)
	}
	if !end.After(start) {
		return out, fmt.Errorf("dtend: must be after dtstart")
	}
	out.start, out.dur = start, end.Sub(start)
	if w.RRule != "" {
		opt, err := rrule.StrToROptionInLocation(strings.TrimPrefix(w.RRule, windowRRulePrefx), start.Location())
		if err != nil {
			return out, fmt.Errorf("rrule: %w", err)
		}
		opt.Dtstart = start
		r, err := rrule.NewRRule(*opt)
		if err != nil {
			return out, fmt.Errorf("rrule: %w", err)
		}
		out.rule = r
	}
	return out, nil
}

// activeUntil returns the end of the occurrence active at t (start ≤ t <
// end), if one is.
func (w window) activeUntil(t time.Time) (time.Time, bool) {
	if w.rule == nil {
		if !t.Before(w.start) && t.Before(w.start.Add(w.dur)) {
			return w.start.Add(w.dur), true
		}
		return time.Time{}, false
	}
	// Occurrences last equally long, so the latest one started at or
	// before t is the one that ends last.
	o := w.rule.Before(t, true)
	if o.IsZero() || !t.Before(o.Add(w.dur)) {
		return time.Time{}, false
	}
	return o.Add(w.dur), true
}

// nextBoundary is the first time after t at which the window starts or
// ends an occurrence (zero when there is none).
func (w window) nextBoundary(t time.Time) time.Time {
	var next time.Time
	if end, ok := w.activeUntil(t); ok {
		next = end
	}
	var start time.Time
	if w.rule == nil {
		if w.start.After(t) {
			start = w.start
		}
	} else {
		start = w.rule.After(t, false)
	}
	if !start.IsZero() && (next.IsZero() || start.Before(next)) {
		next = start
	}
	return next
}

// schedule is the windows that gate one Stage.
type schedule []window

// at says whether the schedule lets promotions through at t, and if not
// why.
func (s schedule) at(t time.Time) (open bool, reason string) {
	for _, w := range s {
		if _, active := w.activeUntil(t); active && w.kind == PromotionWindowDeny {
			return false, fmt.Sprintf("deny window %q is in force", w.name)
		}
	}
	var allows []string
	for _, w := range s {
		if w.kind != PromotionWindowAllow {
			continue
		}
		if _, active := w.activeUntil(t); active {
			return true, ""
		}
		allows = append(allows, w.name)
	}
	if len(allows) > 0 {
		return false, fmt.Sprintf("outside every allow window (%s)", strings.Join(allows, ", "))
	}
	return true, ""
}

// closing names what closes the schedule at t, for NextCloseReason.
func (s schedule) closing(t time.Time) string {
	_, reason := s.at(t)
	return reason
}

// WindowsFor returns the promotion windows that gate stage: the
// ProjectConfig's windows whose stageSelector selects it (none selects
// every Stage) and the ClusterConfig's windows whose projectSelector
// selects the project (labels are the Project's, nil for none) and whose
// stageSelector selects the stage. pc and cc may be nil.
func WindowsFor(pc *ProjectConfig, cc *ClusterConfig, projectLabels map[string]string, stage *Stage) []PromotionWindow {
	var out []PromotionWindow
	if pc != nil {
		for _, w := range pc.Spec.PromotionWindows {
			if w.StageSelector == nil || SelectorMatches(w.StageSelector, stage) {
				out = append(out, w)
			}
		}
	}
	if cc != nil {
		project := &Stage{ObjectMeta: ObjectMeta{Name: stage.Namespace, Labels: projectLabels}}
		for _, w := range cc.Spec.PromotionWindows {
			if w.ProjectSelector != nil && !SelectorMatches(w.ProjectSelector, project) {
				continue
			}
			if w.StageSelector == nil || SelectorMatches(w.StageSelector, stage) {
				out = append(out, w)
			}
		}
	}
	return out
}

// WindowStatus evaluates windows at now: whether they forbid promotion
// (Closed, with the Reason), when that next changes (NextOpen while
// closed, NextClose and its reason while open) when that is known within a
// year. It returns nil when no window gates the stage. A window that does
// not parse closes the schedule: windows fail closed.
func WindowStatus(windows []PromotionWindow, now time.Time) *PromotionWindowStatus {
	if len(windows) == 0 {
		return nil
	}
	var s schedule
	for _, w := range windows {
		pw, err := parseWindow(w)
		if err != nil {
			return &PromotionWindowStatus{Closed: true, Reason: fmt.Sprintf("promotion window %q is invalid: %v", w.Name, err)}
		}
		s = append(s, pw)
	}
	open, reason := s.at(now)
	st := &PromotionWindowStatus{Closed: !open, Reason: reason}
	t, horizon := now, now.Add(windowLookAhead)
	for range maxWindowSteps {
		var next time.Time
		for _, w := range s {
			if b := w.nextBoundary(t); !b.IsZero() && (next.IsZero() || b.Before(next)) {
				next = b
			}
		}
		if next.IsZero() || next.After(horizon) {
			break
		}
		t = next
		if o, _ := s.at(t); o != open {
			nt := NewTime(t.UTC())
			if open {
				st.NextClose, st.NextCloseReason = nt, s.closing(t)
			} else {
				st.NextOpen = nt
			}
			break
		}
	}
	return st
}

// ValidateWindows checks promotion windows; each issue's field is relative
// to the list (e.g. "[0].rrule"). cluster says whether the list is a
// ClusterConfig's (projectSelector is allowed only there).
func ValidateWindows(windows []PromotionWindow, cluster bool) []Issue {
	var out []Issue
	names := map[string]bool{}
	for i, w := range windows {
		f := fmt.Sprintf("[%d]", i)
		switch {
		case w.Name == "":
			out = append(out, Issue{Field: f + ".name", Message: "must not be empty"})
		case names[w.Name]:
			out = append(out, Issue{Field: f + ".name", Message: fmt.Sprintf("duplicate window name %q", w.Name)})
		}
		names[w.Name] = true
		if _, err := parseWindow(w); err != nil {
			field, msg, _ := strings.Cut(err.Error(), ": ")
			out = append(out, Issue{Field: f + "." + field, Message: msg})
		}
		if w.ProjectSelector != nil && !cluster {
			out = append(out, Issue{Field: f + ".projectSelector", Message: "only ClusterConfig windows select projects: a ProjectConfig's windows apply to its own project"})
		}
	}
	return out
}
