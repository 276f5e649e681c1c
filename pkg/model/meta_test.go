package model

import (
	"encoding/json"
	"testing"
	"time"
)

func TestTimeJSON(t *testing.T) {
	t.Parallel()
	base := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		in   Time
		want string
	}{
		{"zero is null", Time{}, `null`},
		{"whole second as Kubernetes writes it", Time{base}, `"2025-01-02T03:04:05Z"`},
		{"millisecond kept", Time{base.Add(time.Millisecond)}, `"2025-01-02T03:04:05.001Z"`},
		{"nanosecond kept", Time{base.Add(123456789)}, `"2025-01-02T03:04:05.123456789Z"`},
		{"trailing zeros dropped", Time{base.Add(500 * time.Millisecond)}, `"2025-01-02T03:04:05.5Z"`},
		{"written in UTC", Time{base.Add(time.Millisecond).In(time.FixedZone("CET", 3600))}, `"2025-01-02T03:04:05.001Z"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, err := json.Marshal(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Fatalf("marshal = %s, want %s", b, tt.want)
			}
			var back Time
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatalf("unmarshal %s: %v", b, err)
			}
			if !back.Equal(tt.in.Time) {
				t.Fatalf("round trip = %v, want %v", back.Time, tt.in.Time)
			}
		})
	}
}

// TestNewerAfterRoundTrip: Freight created within one second keep their
// order after a round trip through JSON (the store), whatever their names.
func TestNewerAfterRoundTrip(t *testing.T) {
	t.Parallel()
	second := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name           string
		older, newer   time.Time
		olderN, newerN string
	}{
		{"1ms apart, newer name sorts first", second.Add(100 * time.Millisecond), second.Add(101 * time.Millisecond), "ffff", "0000"},
		{"1ms apart, newer name sorts last", second.Add(100 * time.Millisecond), second.Add(101 * time.Millisecond), "0000", "ffff"},
		{"whole second and 1ms after", second, second.Add(time.Millisecond), "ffff", "0000"},
		{"1ns apart", second.Add(999999998), second.Add(999999999), "ffff", "0000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			older := roundTrip(t, &Freight{ObjectMeta: ObjectMeta{Name: tt.olderN, CreationTimestamp: NewTime(tt.older)}})
			newer := roundTrip(t, &Freight{ObjectMeta: ObjectMeta{Name: tt.newerN, CreationTimestamp: NewTime(tt.newer)}})
			if !Newer(newer, older) || Newer(older, newer) {
				t.Fatalf("after round trip: Newer(%s@%v, %s@%v) = %v, want the later one newer",
					newer.Name, newer.CreationTimestamp.Time, older.Name, older.CreationTimestamp.Time, Newer(newer, older))
			}
		})
	}
}

func roundTrip(t *testing.T, f *Freight) *Freight {
	t.Helper()
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	var out Freight
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("unmarshal %s: %v", b, err)
	}
	return &out
}
