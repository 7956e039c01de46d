package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
)

func TestWarningWindow(t *testing.T) {
	for _, tc := range []struct {
		flag, overlap, want time.Duration
	}{
		{0, 168 * time.Hour, 168 * time.Hour / 10}, // the default overlap, 7 days: 16.8h
		{0, 10 * time.Minute, time.Minute},
		{0, 720 * time.Hour, 24 * time.Hour},
		{time.Hour, 10 * time.Minute, time.Hour},
	} {
		if got := WarningWindow(tc.flag, tc.overlap); got != tc.want {
			t.Errorf("WarningWindow(%v, %v) = %v, want %v", tc.flag, tc.overlap, got, tc.want)
		}
	}
}

func TestApplyLastUsed(t *testing.T) {
	at := func(s int64) *metav1.Time { m := metav1.NewTime(time.Unix(s, 0)); return &m }
	st := authv1alpha1.MeterrAPIKeyStatus{
		CurrentKey:   &authv1alpha1.CurrentKeyStatus{ID: "cur", LastUsedAt: at(100)},
		PreviousKeys: []authv1alpha1.PreviousKeyStatus{{ID: "p1"}, {ID: "p2", LastUsedAt: at(50)}},
	}
	if applyLastUsed(&st, map[string]int64{"cur": 90, "p2": 50, "gone": 999}) {
		t.Error("nothing later, yet moved")
	}
	if !applyLastUsed(&st, map[string]int64{"cur": 101, "p1": 7}) {
		t.Error("later uses did not move")
	}
	if st.CurrentKey.LastUsedAt.Unix() != 101 || st.PreviousKeys[0].LastUsedAt.Unix() != 7 || st.PreviousKeys[1].LastUsedAt.Unix() != 50 {
		t.Errorf("status %+v %+v", st.CurrentKey, st.PreviousKeys)
	}
}
