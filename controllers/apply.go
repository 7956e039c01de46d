package controllers

import (
	"encoding/json"
	"maps"
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
	if len(owned) != len(want) {
		return false
	}
	for k := range want {
		if !owned[k] {
			return false
		}
	}
	return true
}

// ownedMetadata returns the label and annotation keys that manager's apply
// owns on s, read from managedFields. A key the spec's template no longer
// lists is still owned until the next apply leaves it out, which is how a
// removed template entry is noticed without remembering the old template.
func ownedMetadata(s *corev1.Secret, manager string) (labels, annotations map[string]bool, applied bool) {
	labels, annotations = map[string]bool{}, map[string]bool{}
	for _, mf := range s.ManagedFields {
		if mf.Manager != manager || mf.Operation != metav1.ManagedFieldsOperationApply || mf.FieldsV1 == nil {
			continue
		}
		applied = true
		var fields struct {
			Metadata struct {
				Labels      map[string]json.RawMessage `json:"f:labels"`
				Annotations map[string]json.RawMessage `json:"f:annotations"`
			} `json:"f:metadata"`
		}
		if err := json.Unmarshal(mf.FieldsV1.GetRawBytes(), &fields); err != nil {
			// Unreadable: say nothing is owned, so the caller applies.
			return map[string]bool{}, map[string]bool{}, false
		}
		addFieldKeys(labels, fields.Metadata.Labels)
		addFieldKeys(annotations, fields.Metadata.Annotations)
	}
	return labels, annotations, applied
}

func addFieldKeys(into map[string]bool, fields map[string]json.RawMessage) {
	for k := range maps.Keys(fields) {
		if name, ok := strings.CutPrefix(k, "f:"); ok {
			into[name] = true
		}
	}
}
