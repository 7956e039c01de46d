package controllers

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
)

func secretAt(uid, rv string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{UID: types.UID(uid), ResourceVersion: rv}}
}

func metaAt(uid, rv string) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{UID: types.UID(uid), ResourceVersion: rv}}
}

// What the cache shows decides whether the memory of a Secret may stand in
// for a read.
func TestObjMemoTrusted(t *testing.T) {
	read := (*objMemo)(nil).remember(secretAt("u", "10"), false)
	written := read.remember(secretAt("u", "12"), false)
	created := (*objMemo)(nil).remember(secretAt("c", "20"), true)
	for _, tc := range []struct {
		name   string
		memo   *objMemo
		cached *metav1.PartialObjectMetadata
		want   bool
	}{
		{"nothing remembered", nil, metaAt("u", "10"), false},
		{"cache at our latest write", written, metaAt("u", "12"), true},
		{"cache behind our write, at our read", written, metaAt("u", "10"), true},
		{"someone else wrote", written, metaAt("u", "13"), false},
		{"deleted and re-created", written, metaAt("x", "12"), false},
		{"read, then gone from the cache", written, nil, false},
		{"created, not seen yet", created, nil, true},
	} {
		if got := tc.memo.trusted(tc.cached); got != tc.want {
			t.Errorf("%s: trusted = %v, want %v", tc.name, got, tc.want)
		}
	}
	// Once the cache has shown our create, its absence means deletion.
	if !created.trusted(metaAt("c", "20")) || created.trusted(nil) {
		t.Error("a created Secret the cache has shown and no longer shows must be read again")
	}
}

func TestAppendVersionKeepsTheNewest(t *testing.T) {
	var v []string
	for _, rv := range []string{"1", "2", "2", "3", "4", "5", ""} {
		v = appendVersion(v, rv)
	}
	if want := []string{"2", "3", "4", "5"}; len(v) != len(want) || v[0] != "2" || v[3] != "5" {
		t.Errorf("versions = %v, want %v", v, want)
	}
}

// A cache that has not caught up with our own patch is replaced by what the
// patch returned; a version nobody here produced is taken as it is.
func TestKeyMemoLatest(t *testing.T) {
	at := func(rv string, finalizers ...string) *authv1alpha1.MeterrAPIKey {
		return &authv1alpha1.MeterrAPIKey{ObjectMeta: metav1.ObjectMeta{UID: "k", ResourceVersion: rv, Finalizers: finalizers}}
	}
	var k keyMemo
	k.rememberKey(at("2", "f"), "1")
	if got := k.latest(at("1")); got.ResourceVersion != "2" || len(got.Finalizers) != 1 {
		t.Errorf("cache behind our patch: got version %s", got.ResourceVersion)
	}
	if got := k.latest(at("7")); got.ResourceVersion != "7" {
		t.Errorf("someone else's version: got %s, want 7", got.ResourceVersion)
	}
	if got := k.latest(at("2", "f")); got.ResourceVersion != "2" || k.mak != nil {
		t.Error("a cache that caught up is used, and the copy dropped")
	}
	other := &authv1alpha1.MeterrAPIKey{ObjectMeta: metav1.ObjectMeta{UID: "other", ResourceVersion: "1"}}
	k.rememberKey(at("3"), "2")
	if got := k.latest(other); got.UID != "other" {
		t.Error("another object of the same name is never replaced")
	}
}

// A tenant may hang anything on its workload Secret: the memory keeps only
// what the operator applied, never the data.
func TestRememberWorkloadKeepsOnlyOurs(t *testing.T) {
	ours := appliedEntry(map[string]string{"app.kubernetes.io/managed-by": "x"}, map[string]string{"auth.meterr.ai/key-id": "y"})
	theirs := metav1.ManagedFieldsEntry{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationUpdate,
		FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(`{"f:metadata":{"f:annotations":{"f:big":{}}}}`)}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "w", Namespace: "t", UID: "u", ResourceVersion: "5",
			Labels:        map[string]string{"app.kubernetes.io/managed-by": "x", "team": "a"},
			Annotations:   map[string]string{"auth.meterr.ai/key-id": "y", "big": string(make([]byte, 1<<16))},
			ManagedFields: []metav1.ManagedFieldsEntry{ours, theirs}},
		Data: map[string][]byte{"api-key": []byte("secret")},
	}
	var k keyMemo
	k.rememberWorkload(s, workload{exists: true, owned: true, intact: true, key: "plaintext"}, false)
	got := k.workload.secret()
	switch {
	case got.Data != nil || k.wl.key != "":
		t.Error("the memory holds a key")
	case len(got.Labels) != 1 || len(got.Annotations) != 1 || got.Annotations["big"] != "":
		t.Errorf("kept labels %v and %d annotations, want only the operator's", got.Labels, len(got.Annotations))
	case len(got.ManagedFields) != 1 || got.ManagedFields[0].Manager != FieldManager:
		t.Errorf("managed fields %v, want only the operator's", got.ManagedFields)
	case got.UID != "u" || got.ResourceVersion != "5":
		t.Error("the preconditions are lost")
	}
}
