package controllers

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// hasAll reports whether have holds every entry of want (and maybe more).
func hasAll(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// sameKeys reports whether the set owned equals want's keys.
func sameKeys(owned map[string]bool, want map[string]string) bool {
	return len(owned) == len(want) && subsetOf(owned, want)
}

// ownedMetadata returns the label and annotation keys that manager owns on
// s, read from managedFields: its apply, and the create that made the
// Secret (an Update entry; see foldCreateOwnership). A key the spec's
// template no longer lists is still owned until the next apply leaves it
// out, which is how a removed template entry is noticed without remembering
// the old template.
func ownedMetadata(s *corev1.Secret, manager string) (labels, annotations map[string]bool, applied bool) {
	owned, found, readable := ownedBy(s, manager, metav1.ManagedFieldsOperationApply, metav1.ManagedFieldsOperationUpdate)
	if !readable {
		// Unreadable: say nothing is owned, so the caller applies.
		return map[string]bool{}, map[string]bool{}, false
	}
	return owned.labels, owned.annotations, found
}

// ownedKeys are label and annotation keys a managed-fields entry owns.
type ownedKeys struct{ labels, annotations map[string]bool }

// ownedBy reads the label and annotation keys owned by manager's entries of
// the given operations: found says whether there is such an entry, readable
// whether every one of them could be read.
func ownedBy(s *corev1.Secret, manager string, ops ...metav1.ManagedFieldsOperationType) (owned ownedKeys, found, readable bool) {
	owned = ownedKeys{labels: map[string]bool{}, annotations: map[string]bool{}}
	for _, mf := range s.ManagedFields {
		if mf.Manager != manager || mf.FieldsV1 == nil || !slices.Contains(ops, mf.Operation) {
			continue
		}
		found = true
		if !readOwned(mf, owned) {
			return owned, true, false
		}
	}
	return owned, found, true
}

// readOwned adds the label and annotation keys mf owns; false when its
// fields cannot be read.
func readOwned(mf metav1.ManagedFieldsEntry, into ownedKeys) bool {
	var fields struct {
		Metadata struct {
			Labels      map[string]json.RawMessage `json:"f:labels"`
			Annotations map[string]json.RawMessage `json:"f:annotations"`
		} `json:"f:metadata"`
	}
	if err := json.Unmarshal(mf.FieldsV1.GetRawBytes(), &fields); err != nil {
		return false
	}
	addFieldKeys(into.labels, fields.Metadata.Labels)
	addFieldKeys(into.annotations, fields.Metadata.Annotations)
	return true
}

func addFieldKeys(into map[string]bool, fields map[string]json.RawMessage) {
	for k := range maps.Keys(fields) {
		if name, ok := strings.CutPrefix(k, "f:"); ok {
			into[name] = true
		}
	}
}

// appliedEntry is the managed-fields entry an apply of these labels and
// annotations leaves for FieldManager, as far as ownedMetadata reads it: the
// reconciler keeps it with a Secret it remembers writing, since an apply's
// response does not carry managed fields.
func appliedEntry(labels, annotations map[string]string) metav1.ManagedFieldsEntry {
	set := func(m map[string]string) map[string]struct{} {
		out := make(map[string]struct{}, len(m))
		for k := range m {
			out["f:"+k] = struct{}{}
		}
		return out
	}
	raw, _ := json.Marshal(map[string]any{"f:metadata": map[string]any{"f:labels": set(labels), "f:annotations": set(annotations)}})
	return metav1.ManagedFieldsEntry{Manager: FieldManager, Operation: metav1.ManagedFieldsOperationApply,
		APIVersion: "v1", FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(string(raw))}
}

// subsetOf reports whether every key of owned is in want.
func subsetOf(owned map[string]bool, want map[string]string) bool {
	for k := range owned {
		if _, ok := want[k]; !ok {
			return false
		}
	}
	return true
}
