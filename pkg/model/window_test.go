package model

import (
	"strings"
	"testing"
	"time"
)

func at(t *testing.T, zone, s string) time.Time {
	t.Helper()
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatal(err)
	}
	v, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestWindowStatus(t *testing.T) {
	t.Parallel()
	// Business hours in New York on weekdays; a Friday freeze.
	business := PromotionWindow{Name: "business-hours", Kind: PromotionWindowAllow,
		DTStart: "TZID=America/New_York:20260105T090000", DTEnd: "TZID=America/New_York:20260105T170000",
		RRule: "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"}
	friday := PromotionWindow{Name: "friday-freeze", Kind: PromotionWindowDeny,
		DTStart: "20260109T000000Z", DTEnd: "20260110T000000Z", RRule: "RRULE:FREQ=WEEKLY;BYDAY=FR"}
	oneShot := PromotionWindow{Name: "launch", Kind: PromotionWindowDeny, DTStart: "20260301T120000Z", DTEnd: "20260301T130000Z"}
	ny := "America/New_York"
	tests := []struct {
		name      string
		windows   []PromotionWindow
		now       time.Time
		closed    bool
		reason    string
		nextOpen  time.Time
		nextClose time.Time
	}{
		{name: "no windows", now: at(t, ny, "2026-01-05 10:00")},
		{name: "inside allow", windows: []PromotionWindow{business}, now: at(t, ny, "2026-01-05 10:00"),
			nextClose: at(t, ny, "2026-01-05 17:00")},
		{name: "allow opens at its start, inclusive", windows: []PromotionWindow{business}, now: at(t, ny, "2026-01-06 09:00"),
			nextClose: at(t, ny, "2026-01-06 17:00")},
		{name: "allow ends at its end, exclusive", windows: []PromotionWindow{business}, now: at(t, ny, "2026-01-05 17:00"),
			closed: true, reason: "outside every allow window (business-hours)", nextOpen: at(t, ny, "2026-01-06 09:00")},
		{name: "weekend waits for monday", windows: []PromotionWindow{business}, now: at(t, ny, "2026-01-10 12:00"),
			closed: true, reason: "outside every allow window", nextOpen: at(t, ny, "2026-01-12 09:00")},
		{name: "deny wins over allow", windows: []PromotionWindow{business, friday}, now: at(t, ny, "2026-01-09 10:00"),
			closed: true, reason: `deny window "friday-freeze" is in force`, nextOpen: at(t, ny, "2026-01-12 09:00")},
		{name: "open until the freeze", windows: []PromotionWindow{friday}, now: at(t, "UTC", "2026-01-08 12:00"),
			nextClose: at(t, "UTC", "2026-01-09 00:00")},
		// 2026-03-08 is the US spring-forward: 09:00 stays 09:00 local,
		// so an hour earlier in UTC than the week before.
		{name: "DST: opening follows local time", windows: []PromotionWindow{business}, now: at(t, ny, "2026-03-07 12:00"),
			closed: true, nextOpen: at(t, ny, "2026-03-09 09:00")},
		{name: "one-shot deny passed", windows: []PromotionWindow{oneShot}, now: at(t, "UTC", "2026-03-02 00:00")},
		{name: "one-shot deny in force", windows: []PromotionWindow{oneShot}, now: at(t, "UTC", "2026-03-01 12:30"),
			closed: true, reason: "launch", nextOpen: at(t, "UTC", "2026-03-01 13:00")},
		{name: "invalid window fails closed", windows: []PromotionWindow{{Name: "bad", Kind: PromotionWindowAllow, DTStart: "tomorrow", DTEnd: "20260101T000000Z"}},
			now: at(t, "UTC", "2026-03-01 12:30"), closed: true, reason: `promotion window "bad" is invalid`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := WindowStatus(tc.windows, tc.now)
			if len(tc.windows) == 0 {
				if st != nil {
					t.Fatalf("status %+v, want none", st)
				}
				return
			}
			if st.Closed != tc.closed || !strings.Contains(st.Reason, tc.reason) {
				t.Fatalf("closed %v reason %q, want %v %q", st.Closed, st.Reason, tc.closed, tc.reason)
			}
			checkTime(t, "nextOpen", st.NextOpen, tc.nextOpen)
			checkTime(t, "nextClose", st.NextClose, tc.nextClose)
			if st.NextClose != nil && st.NextCloseReason == "" {
				t.Error("nextClose without a reason")
			}
		})
	}
}

func checkTime(t *testing.T, name string, got *Time, want time.Time) {
	t.Helper()
	switch {
	case want.IsZero() && got != nil:
		t.Errorf("%s %v, want none", name, got.Time)
	case !want.IsZero() && (got == nil || !got.Equal(want)):
		t.Errorf("%s %v, want %v", name, got, want.UTC())
	}
}

func TestValidateWindows(t *testing.T) {
	t.Parallel()
	good := PromotionWindow{Name: "w", Kind: PromotionWindowAllow, DTStart: "20260101T090000Z", DTEnd: "20260101T170000Z", RRule: "FREQ=DAILY"}
	tests := []struct {
		name    string
		mod     func(*PromotionWindow)
		cluster bool
		field   string
	}{
		{name: "valid", mod: func(*PromotionWindow) {}},
		{name: "kind", mod: func(w *PromotionWindow) { w.Kind = "Maybe" }, field: "[0].kind"},
		{name: "dtstart", mod: func(w *PromotionWindow) { w.DTStart = "TZID=Mars/Olympus:20260101T090000" }, field: "[0].dtstart"},
		{name: "dtend missing", mod: func(w *PromotionWindow) { w.DTEnd = "" }, field: "[0].dtend"},
		{name: "dtend before", mod: func(w *PromotionWindow) { w.DTEnd = "20251231T000000Z" }, field: "[0].dtend"},
		{name: "rrule", mod: func(w *PromotionWindow) { w.RRule = "FREQ=SOMETIMES" }, field: "[0].rrule"},
		{name: "project selector on a project", mod: func(w *PromotionWindow) { w.ProjectSelector = &PromotionPolicySelector{Name: "x"} }, field: "[0].projectSelector"},
		{name: "project selector on the cluster", mod: func(w *PromotionWindow) { w.ProjectSelector = &PromotionPolicySelector{Name: "x"} }, cluster: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := good
			tc.mod(&w)
			issues := ValidateWindows([]PromotionWindow{w}, tc.cluster)
			if tc.field == "" {
				if len(issues) > 0 {
					t.Fatalf("issues %v", issues)
				}
				return
			}
			if len(issues) != 1 || issues[0].Field != tc.field {
				t.Fatalf("issues %v, want one on %s", issues, tc.field)
			}
		})
	}
}

func TestWindowsFor(t *testing.T) {
	t.Parallel()
	prod := &Stage{ObjectMeta: ObjectMeta{Name: "prod-eu", Namespace: "shop", Labels: map[string]string{"tier": "prod"}}}
	dev := &Stage{ObjectMeta: ObjectMeta{Name: "dev", Namespace: "shop"}}
	pc := &ProjectConfig{Spec: ProjectConfigSpec{PromotionWindows: []PromotionWindow{
		{Name: "all"}, {Name: "prod", StageSelector: &PromotionPolicySelector{MatchLabels: map[string]string{"tier": "prod"}}},
	}}}
	cc := &ClusterConfig{Spec: ClusterConfigSpec{PromotionWindows: []PromotionWindow{
		{Name: "global"}, {Name: "other-project", ProjectSelector: &PromotionPolicySelector{Name: "glob:bank-*"}},
		{Name: "shop-prod", ProjectSelector: &PromotionPolicySelector{MatchLabels: map[string]string{"env": "prod"}}, StageSelector: &PromotionPolicySelector{Name: "regex:^prod-"}},
	}}}
	names := func(ws []PromotionWindow) string {
		var out []string
		for _, w := range ws {
			out = append(out, w.Name)
		}
		return strings.Join(out, ",")
	}
	if got := names(WindowsFor(pc, cc, map[string]string{"env": "prod"}, prod)); got != "all,prod,global,shop-prod" {
		t.Errorf("prod: %s", got)
	}
	if got := names(WindowsFor(pc, cc, nil, dev)); got != "all,global" {
		t.Errorf("dev: %s", got)
	}
}
