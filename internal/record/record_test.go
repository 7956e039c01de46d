package record

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meterr/meterr-operator/internal/apikey"
)

func TestRoundTrip(t *testing.T) {
	key, _ := apikey.Generate("production")
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	exp := metav1.NewTime(now.Add(time.Hour))
	in := &Record{
		Owner:  Owner{Namespace: "ns", Name: "n", UID: "u"},
		Policy: Policy{Permissions: []string{"read"}, Environment: "production", RequestsPerHour: 1000, ExpiresAt: &exp},
		Keys:   []Version{NewVersion(key, now)},
	}
	data, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), key) {
		t.Fatal("record holds the plaintext key")
	}
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Labels: Labels()}, Data: map[string][]byte{DataKey: data}}
	out, err := Decode(s)
	if err != nil {
		t.Fatal(err)
	}
	if out.Keys[0].Hash != apikey.HashOf(key).String() || out.Owner != in.Owner || !out.Policy.ExpiresAt.Equal(&exp) {
		t.Fatalf("round trip changed the record: %+v", out)
	}
}

func TestDecodeVersions(t *testing.T) {
	mk := func(data string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Labels: Labels()}, Data: map[string][]byte{DataKey: []byte(data)}}
	}
	// A newer controller may add fields: an older reader ignores them.
	if _, err := Decode(mk(`{"formatVersion":1,"futureField":{"x":1},"keys":[]}`)); err != nil {
		t.Fatalf("unknown fields must be ignored: %v", err)
	}
	for _, bad := range []string{`{"formatVersion":2}`, `{"formatVersion":0}`, `not json`} {
		if _, err := Decode(mk(bad)); err == nil {
			t.Fatalf("Decode accepted %q", bad)
		}
	}
	if _, err := Decode(&corev1.Secret{}); err == nil {
		t.Fatal("Decode accepted an unlabelled secret")
	}
}

func TestName(t *testing.T) {
	long := strings.Repeat("a", 253)
	n := Name(long, long, "uid")
	if len(n) > 63 || n != Name(long, long, "uid") || n == Name(long, long, "uid2") {
		t.Fatalf("bad record name %q", n)
	}
}
