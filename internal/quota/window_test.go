package quota

import (
	"testing"
	"time"
)

// Windows are aligned to multiples of their length since the epoch, in
// UTC, before the epoch too.
func TestWindowIndex(t *testing.T) {
	for _, tc := range []struct {
		w         Window
		now, end  time.Time
		name      string
		wantIndex int64
	}{
		{Hourly, time.Unix(0, 0), time.Unix(3600, 0), "hourly", 0},
		{Hourly, time.Unix(3599, 999), time.Unix(3600, 0), "hourly", 0},
		{Hourly, time.Unix(-1, 0), time.Unix(0, 0), "hourly", -1},
		{Hourly, time.Unix(-3600, 0), time.Unix(0, 0), "hourly", -1},
		{Hourly, time.Unix(-3601, 0), time.Unix(-3600, 0), "hourly", -2},
		{Daily, time.Date(2025, 1, 15, 11, 30, 0, 0, time.UTC), time.Date(2025, 1, 16, 0, 0, 0, 0, time.UTC), "daily", 20103},
		{Daily, time.Date(2025, 1, 15, 23, 30, 0, 0, time.FixedZone("x", -5*3600)), time.Date(2025, 1, 17, 0, 0, 0, 0, time.UTC), "daily", 20104},
		{WindowOf(15 * time.Minute), time.Unix(901, 0), time.Unix(1800, 0), "900s", 1},
	} {
		n, end := tc.w.Index(tc.now)
		if n != tc.wantIndex || !end.Equal(tc.end) || end.Location() != time.UTC || tc.w.Name() != tc.name {
			t.Errorf("%s.Index(%v) = %d, %v; want %d, %v", tc.w.Name(), tc.now, n, end, tc.wantIndex, tc.end)
		}
	}
	if PerHour(1000) != (Limit{Count: 1000, Window: Hourly}) || !PerHour(0).Unlimited() || PerHour(1).Unlimited() {
		t.Error("PerHour")
	}
}

// An identity's name is read only when asked for.
func TestID(t *testing.T) {
	reads := 0
	id := NewID(7, "text", func(s string) string { reads++; return s + "!" })
	if id.Key != 7 || reads != 0 {
		t.Fatal("NewID read the name")
	}
	if id.Name() != "text!" || reads != 1 {
		t.Fatal("Name")
	}
	if n := Named("uid"); n.Key != Key("uid") || n.Name() != "uid" {
		t.Fatal("Named")
	}
}
